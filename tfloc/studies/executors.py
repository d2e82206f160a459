"""Where a study's runs run: one after another on this machine, or fanned out over Ray
(``python -m tfloc.studies.<name> --executor ray [--address ADDR] [--workers N]
[--cpus-per-run C]``).

Every pending run (a finished one is never repeated) becomes a Ray task that holds C cores
and runs ``train.py`` as its own process with TF's and oneDNN's thread pools capped at C, so
runs sharing a machine do not fight over its cores. The driver stores each run's summary and
regenerates the page as the run ends, whichever worker ran it. Without ``--address`` a local
Ray cluster starts with N x C cores (N: ``--workers``, default this machine's cores / C); with
it, the study joins that cluster (``ray start --head`` on one machine, ``ray start
--address=HEAD:6379`` on the others), whose nodes must see the repository, the cache and the
runs at the same paths (shared storage). docs/scale.md has the commands and the wall times.
"""
from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

from tfloc.sim.ray_build import check_address, import_ray


@dataclass
class StudyRun:
    """A pending run of a study: its title for the console, experiment, directory, the
    ``train.py`` command and every override it runs with."""
    title: str
    experiment: object          # the study's Experiment
    run: str
    cmd: list
    sets: list


def run_logged(cmd: list, log_path: str, cwd: str | None = None, threads: int | None = None) -> int:
    """Runs ``cmd`` with its output appended to ``log_path`` (a resumed run keeps its earlier
    processes' output); ``threads`` caps TF's and oneDNN's thread pools (a run sharing a
    machine with others). Returns the exit code."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "TF_NUM_INTRAOP_THREADS": str(threads),
                    "TF_NUM_INTEROP_THREADS": str(threads)})
    with open(log_path, "a") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd).returncode


def _run_task(cmd: list, log_path: str, cwd: str, threads: int) -> tuple:
    """On a worker: runs one study run; returns (exit code, seconds, the worker's host)."""
    import socket
    t = time.time()
    code = run_logged(cmd, log_path, cwd=cwd, threads=threads)
    return code, time.time() - t, socket.gethostname()


def run_on_ray(jobs, finished, cwd: str, address: str | None = None, workers: int | None = None,
               cpus_per_run: int | None = None) -> None:
    """Runs ``jobs`` (:class:`StudyRun`) as Ray tasks and calls
    ``finished(job, exit_code, seconds)`` on the driver as each one ends (it raises on a
    failed run, which stops the study; runs still going are cancelled)."""
    if not jobs:
        return
    check_address(address)
    ray = import_ray()
    cores = os.cpu_count() or 1
    cpus = cpus_per_run or (2 if address else max(1, cores // (workers or cores)))
    started = not ray.is_initialized()
    if started:
        kwargs = dict(address=address, log_to_driver=False, include_dashboard=False,
                      configure_logging=False)
        if not address:
            kwargs.update(num_cpus=(workers or max(1, cores // cpus)) * cpus,
                          object_store_memory=100 * 2**20)
        ray.init(**kwargs)
    try:
        task = ray.remote(num_cpus=cpus, max_retries=0)(_run_task)
        refs = {}
        for job in jobs:
            refs[task.remote(job.cmd, os.path.abspath(job.run + ".log"), cwd, cpus)] = job
            print(f"{job.title} submitted to Ray ({cpus} cores)", flush=True)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            for ref in done:
                job = refs.pop(ref)
                code, seconds, host = ray.get(ref)
                print(f"{job.title} ended on {host}", flush=True)
                try:
                    finished(job, code, seconds)
                except Exception:
                    for other in refs:
                        ray.cancel(other, force=True)
                    raise
    finally:
        if started:
            ray.shutdown()
