"""Small shared helpers: seeding, atomic file writes, logging."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import subprocess
import tempfile
import time

import numpy as np


def set_seed(seed: int):
    """Seeds Python, NumPy and TensorFlow together (Sionna's config habit)."""
    import tensorflow as tf
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    import keras
    keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras layers built inside compute in the dtype policy ``name`` (e.g. "mixed_bfloat16")."""
    import keras
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(old)


def machine_info() -> dict:
    """What a run's numbers were measured on: usable CPU cores, the CPU model, the platform
    and the TensorFlow version (reports and study pages print it, not a constant)."""
    import platform
    import tensorflow as tf
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu_cores": cores, "cpu_model": model, "gpus": len(tf.config.list_physical_devices("GPU")),
            "platform": platform.platform(terse=True), "python": platform.python_version(),
            "tensorflow": tf.__version__}


def code_version(repo: str | None = None) -> str:
    """``git describe --always`` of ``repo`` (default: the checkout tfloc is imported from),
    with "-dirty" when a tracked file outside ``docs/`` and ``README.md`` (what studies
    write) differs from it; "unknown" outside a checkout."""
    repo = repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, text=True, capture_output=True,
                              check=True).stdout.strip()
    try:
        version = git("describe", "--always")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      ":(exclude)docs", ":(exclude)README.md")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return version + ("-dirty" if changed else "")


def normal_file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def replace_durably(tmp: str, path: str):
    """Moves the finished file ``tmp`` to ``path`` so that a kill or a power cut leaves
    either the old file or the whole new one: its data is flushed to disk (fsync) before
    the rename, the rename itself after it, and it gets the mode of a normally opened file."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, normal_file_mode())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):      # the directory entry too (not on every file system)
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str, text: str):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        replace_durably(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, obj):
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(final_path: str):
    """Yields a temporary directory beside ``final_path``, renamed into place on success.

    On any error the temporary directory is removed, so nothing half-written is
    left behind under the final name.
    """
    parent = os.path.dirname(os.path.abspath(final_path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(final_path) + "-")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; caches and exports are shared
    try:
        yield tmp
        if os.path.isdir(final_path) and not os.path.islink(final_path) and exchange_paths(tmp, final_path):
            shutil.rmtree(tmp)    # now the old version: readers never saw the entry missing
        else:
            if os.path.exists(final_path):
                shutil.rmtree(final_path)
            os.replace(tmp, final_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def exchange_paths(a: str, b: str) -> bool:
    """Swaps the directory entries ``a`` and ``b`` in one atomic step (Linux renameat2 with
    RENAME_EXCHANGE), so a reader of either path always finds one of the two versions.
    False where the system or file system cannot (the caller then replaces in two steps)."""
    import ctypes
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), b)


class FileLock:
    """An advisory lock (``fcntl.flock``) held on the file ``path`` by one process at a time,
    with the holder's PID, host and start time written in it for others' messages. The kernel
    drops a dead process's lock, so a stale file is simply taken over. The file stays."""

    def __init__(self, path: str):
        self.path, self._fh = path, None

    def acquire(self, blocking: bool = False) -> bool:
        import fcntl
        import socket
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it ("PID 123 on host since ...")."""
        try:
            with open(self.path) as fh:
                return fh.read().strip() or "another process"
        except OSError:
            return "another process"

    def release(self):
        if self._fh is not None:
            import fcntl
            self._fh.seek(0)
            self._fh.truncate()
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self):
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc):
        self.release()


#: stderr lines TensorFlow's CUDA plugins print while it is imported on a machine without
#: a GPU (before absl logging starts, so TF_CPP_MIN_LOG_LEVEL does not reach them)
TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog()", "Unable to register cuDNN factory",
                   "Unable to register cuBLAS factory", "Unable to register cuFFT factory",
                   "computation placer already registered")


@contextlib.contextmanager
def filtered_stderr(noise=TF_IMPORT_NOISE):
    """Holds what is written to file descriptor 2 (C++ included) and passes on every line
    that contains none of ``noise``."""
    import sys
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in line for n in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietImport:
    """Meta-path finder that runs the first ``import tensorflow`` under :func:`filtered_stderr`."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        import importlib.util
        import sys
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader

        class Loader:
            def create_module(self, spec_):
                return loader.create_module(spec_)

            def exec_module(self, module):
                with filtered_stderr():
                    loader.exec_module(module)

            def __getattr__(self, attr):   # resource readers and the rest: the real loader's
                return getattr(loader, attr)
        spec.loader = Loader()
        return spec


def quiet_tensorflow():
    """Silences TF's start-up chatter on CPU-only machines: its C++ logging below errors,
    and the CUDA plugin registration lines of its first import. Run it before TF is
    imported (the import itself stays lazy)."""
    import sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())
