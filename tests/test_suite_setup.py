"""The suite's own machinery: tests that share a costly fixture run on one xdist worker."""
import os
import re
import shutil
import subprocess
import sys

from conftest import TESTS

COSTLY = '''
import pytest

@pytest.fixture(scope="module")
def costly():
    return object()

def test_a(costly):
    pass

def test_b(costly):
    pass

def test_c(costly):
    pass

def test_free():
    pass
'''


def test_tests_sharing_a_module_fixture_run_on_one_worker(tmp_path):
    """``-n 2 --dist loadgroup``: tests/conftest.py groups the tests of a module-scoped fixture,
    so pytest-xdist builds it once (the end-to-end runs train minutes per build). Broke once:
    pytest 9.2 ignores the group pytest-xdist 3.8 writes into a node id, and the two
    end-to-end runs trained on both workers."""
    shutil.copy(os.path.join(TESTS, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_costly.py").write_text(COSTLY)
    r = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider", "-o", "addopts=", str(tmp_path)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    workers = {name: w for w, name in re.findall(r"\[(gw\d)\].*PASSED \S+::(test_\w+)", r.stdout)}
    assert set(workers) == {"test_a", "test_b", "test_c", "test_free"}, r.stdout[-3000:]
    assert workers["test_a"] == workers["test_b"] == workers["test_c"], r.stdout[-3000:]
