"""The floors import only downward (sim -> data -> layers/models -> losses/metrics/physics ->
methods, evaluation, export -> run), with no import circle among tfloc's modules, imports
written inside functions counted."""
import ast
import os
import subprocess
import sys


from conftest import REPO

PACKAGE = os.path.join(REPO, "tfloc")
#: each floor's height: a module may import its own floor and the floors below it, nothing
#: at its height or above (methods, evaluation and export are siblings that never import
#: each other, except methods -> export: a recipe names its serving modules)
FLOORS = {"tfloc": 0, "tfloc.utils": 0, "tfloc.config": 0.5, "tfloc.registry": 0.5,
          "tfloc.rest_body": 0.5,   # REST request decoding, NumPy only (its own process imports it alone)
          "tfloc.sim": 1, "tfloc.data": 2, "tfloc.layers": 3, "tfloc.models": 4,
          "tfloc.losses": 5, "tfloc.metrics": 5, "tfloc.physics": 5, "tfloc.export": 5,
          "tfloc.methods": 6, "tfloc.evaluation": 6,
          "tfloc.run": 7, "tfloc.serve": 8, "tfloc.studies": 8}
#: entry points: run as ``python -m``, imported by nobody, so they may sit above their folder
ENTRY_POINTS = ("tfloc.sim.__main__",)


def floor_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def module_graph(root=PACKAGE) -> dict:
    """{module: set of tfloc modules it imports}, from the AST: imports inside functions count."""
    top = os.path.dirname(root)
    mods = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, top)[:-3].replace(os.sep, ".")
                mods[name.removesuffix(".__init__")] = path

    def resolve(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges = {}
    for m, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:   # relative: from the package the module is in
                    parts = m.split(".") if path.endswith("__init__.py") else m.split(".")[:-1]
                    parts = parts[:len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for n in names:
                r = resolve(n) if n.split(".")[0] == "tfloc" else None
                if r and r != m:
                    targets.add(r)
        edges[m] = targets
    return edges


def import_circles(edges: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_among_tfloc_modules():
    assert import_circles(module_graph()) == []


def test_the_circle_finder_finds_a_circle(tmp_path):
    pkg = tmp_path / "tfloc"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from tfloc.a.y import g\n")   # inside a function
    (pkg / "a" / "y.py").write_text("from tfloc.a import x\n")
    assert import_circles(module_graph(str(pkg))) == [["tfloc.a.x", "tfloc.a.y"]]


def upward_imports(edges: dict) -> list:
    """``module -> target`` edges that go to a floor at the module's height or above (or to a
    module of no known floor)."""
    bad = []
    for m, targets in edges.items():
        if m in ENTRY_POINTS:
            continue
        here = floor_of(m)
        for t in targets:
            there = floor_of(t)
            if there not in FLOORS or here not in FLOORS:
                bad.append(f"{m} -> {t} (unknown floor)")
            elif there != here and FLOORS[there] >= FLOORS[here]:
                bad.append(f"{m} -> {t}")
    return sorted(bad)


def test_every_floor_imports_only_downward():
    assert upward_imports(module_graph()) == []


def test_the_floor_check_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "tfloc"
    for sub in ("data", "run"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "env.py").write_text("def f():\n    from tfloc.run.experiment import g\n")
    (pkg / "run" / "experiment.py").write_text("import tfloc.data.env\n")
    (pkg / "experiment.py").write_text("")
    (pkg / "data" / "old.py").write_text("import tfloc.experiment\n")
    assert upward_imports(module_graph(str(pkg))) == [
        "tfloc.data.env -> tfloc.run.experiment", "tfloc.data.old -> tfloc.experiment (unknown floor)"]


def test_importing_the_lower_floors_loads_nothing_above_them():
    """What Python actually loads: importing the lower floors (and their every module) in a
    fresh process leaves tfloc.methods, tfloc.run and tfloc.evaluation unloaded."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import tfloc.sim, tfloc.data, tfloc.physics, tfloc.models, tfloc.layers, tfloc.losses\n"
        "for pkg in (tfloc.sim, tfloc.data, tfloc.physics, tfloc.models, tfloc.layers, tfloc.losses):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        if m.name != '__main__':\n"
        "            importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[:2] in "
        "(['tfloc', 'methods'], ['tfloc', 'run'], ['tfloc', 'evaluation'])))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"
    code = "import sys, tfloc.methods\nprint(sorted(n for n in sys.modules if n.startswith('tfloc.run')))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_the_dataset_tool_entry_point_quiets_tensorflow_first(tmp_path):
    """``python -m tfloc.sim`` sits above its folder (it runs the tool of tfloc.run), yet a user
    error is still one line: TensorFlow is imported only after the CLI has quieted it."""
    r = subprocess.run([sys.executable, "-m", "tfloc.sim", "inspect", str(tmp_path / "nope")],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such cache entry"]
