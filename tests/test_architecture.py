"""Static checks of the package's architecture (docs/design.md §4): each rule the code states about
itself is kept here, by parsing the source with ``ast`` — nothing is imported, so the whole file
runs in a fraction of a second.

- the import graph of ``filtershift`` (module-level and function-local imports) has no cycles;
- the pure modules import no storage, framework, path or client module, and no edge module;
- zarr is imported only under ``filtershift/store/``;
- no function or method is longer than 90 lines;
- the TH(n) constants and the float32-eps floor of D are each written in exactly one module.
"""

from __future__ import annotations

import ast

import pytest
import math
from functools import lru_cache
from pathlib import Path

PACKAGE = "filtershift"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_FUNCTION_LINES = 90

# Modules that compute: numpy / dask.array / pandas in, values out (docs/design.md §4).
PURE_MODULES = (
    "filtershift.analysis.card",
    "filtershift.analysis.counting",
    "filtershift.analysis.divergence",
    "filtershift.analysis.groups",
    "filtershift.analysis.histograms",
    "filtershift.analysis.layerstats",
    "filtershift.analysis.nearest",
    "filtershift.analysis.pca",
    "filtershift.analysis.plan",
    "filtershift.analysis.settings",
    "filtershift.analysis.summary",
    "filtershift.analysis.types",
    "filtershift.analysis.where",
    "filtershift.extraction.chunkplan",
    "filtershift.extraction.depth",
    "filtershift.extraction.kernels",
    "filtershift.cnnfilterdb.mapping",
    # figures: every module but save (writes files, drives a browser), report (writes the page),
    # catalog (opens the results folder and the store), and
    "filtershift.figures._style",
    "filtershift.figures.heatmaps",
    "filtershift.figures.pca",
    "filtershift.figures.phenotype",
    "filtershift.figures.points",
    "filtershift.figures.ridge",
    "filtershift.figures.scale",
    # - filtershift.figures (the package __init__): it re-exports catalog, an edge;
    # - filtershift.figures.synthetic: it writes a database and runs an analysis on it (real I/O).
)
FORBIDDEN_IN_PURE = (
    "zarr", "torch", "distributed", "dask.distributed", "pathlib", "os", "shutil", "tempfile",
    "h5py", "onnx", "safetensors",
    "filtershift.store", "filtershift.runtime", "filtershift.analysis.results", "filtershift.readers",
)
STORE_PACKAGE = "filtershift.store"

TH_CONSTANTS = (1.2618047, 0.88767525, 2.30436435, 0.31050834)  # TH(n) = L / (1 + exp(-k (log2 n - x0))) + b
FLOAT32_EPS = 1.1920929e-07


# ----------------------------------------------------------------------------------------------
# The package as parsed source


def _module_name(path: Path) -> str:
    parts = (PACKAGE,) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package: name -> (file, syntax tree)."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        out[_module_name(path)] = (path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return out


def _is_package(name: str) -> bool:
    return modules()[name][0].name == "__init__.py"


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    """The absolute module of a ``from ... import`` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if _is_package(importer) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def imported_names(name: str) -> tuple[str, ...]:
    """Every dotted name module ``name`` imports, anywhere in it (function-local imports too).
    ``from x import y`` gives ``x`` and ``x.y`` (``y`` may be a module)."""
    found: list[str] = []
    for node in ast.walk(modules()[name][1]):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, name)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return tuple(found)


def _internal_target(dotted: str) -> str | None:
    """The package module a dotted name refers to: the longest prefix that is a module."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules():
            return candidate
    return None


@lru_cache(maxsize=None)
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the package modules it imports (``from x import y``: ``x.y`` when that is a
    module, else ``x``)."""
    graph = {}
    for name in modules():
        targets = set()
        for node in ast.walk(modules()[name][1]):
            if isinstance(node, ast.Import):
                targets.update(_internal_target(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules() else _internal_target(base))
        graph[name] = frozenset(t for t in targets if t is not None and t != name)
    return graph


def find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def _imports(names: tuple[str, ...], forbidden: str) -> bool:
    return any(n == forbidden or n.startswith(forbidden + ".") for n in names)


def _docstring_nodes(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _code_constants(tree: ast.Module) -> list[ast.Constant]:
    """Constant nodes of the code (docstrings excluded; comments never reach the tree)."""
    skip = _docstring_nodes(tree)
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skip]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _writes_th_constant(tree: ast.Module) -> bool:
    return any(
        _is_number(c.value) and any(math.isclose(abs(c.value), k, rel_tol=1e-4) for k in TH_CONSTANTS)
        for c in _code_constants(tree)
    )


def _is_float32(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute):
        return node.attr == "float32"
    if isinstance(node, ast.Name):
        return node.id == "float32"
    return isinstance(node, ast.Constant) and node.value in ("float32", "f4", "<f4")


def _writes_float32_eps(tree: ast.Module) -> bool:
    """``finfo(float32).eps`` in any spelling, or the number 1.19209e-07 itself."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "eps" and isinstance(node.value, ast.Call):
            func = node.value.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "finfo" and node.value.args and _is_float32(node.value.args[0]):
                return True
    return any(_is_number(c.value) and math.isclose(c.value, FLOAT32_EPS, rel_tol=1e-4) for c in _code_constants(tree))


# ----------------------------------------------------------------------------------------------
# The rules


def test_the_checks_see_the_whole_package():
    names = set(modules())
    assert {"filtershift", "filtershift.cli", "filtershift.store.database", "filtershift.analysis.divergence"} <= names
    missing = [m for m in PURE_MODULES if m not in names]
    assert not missing, f"pure modules listed here but not in the package (renamed?): {missing}"


def test_find_cycle_reports_a_cycle():
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None


def test_from_import_resolves_to_the_submodule():
    graph = import_graph()
    # `from filtershift.analysis import results as res`: an edge to the module, not the package
    assert "filtershift.analysis.results" in graph["filtershift.analysis.compute"]
    assert "filtershift.analysis" not in graph["filtershift.analysis.compute"]


def test_constant_detectors_read_code_not_docstrings():
    assert _writes_float32_eps(ast.parse("import numpy as np\nEPS = np.finfo(np.float32).eps"))
    assert _writes_float32_eps(ast.parse("EPS = 1.19209e-07"))
    assert not _writes_float32_eps(ast.parse('"""The floor is 1.1920929e-07 (np.finfo(np.float32).eps)."""\n# 1.19209e-07'))
    assert _writes_th_constant(ast.parse("def th(n):\n    return 1.2618047 / n - 0.31050834"))
    assert not _writes_th_constant(ast.parse('def th(n):\n    """TH(n) = 1.2618047 / ..."""\n    return n'))


def test_import_graph_is_acyclic():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_pure_modules_import_no_storage_framework_or_edge():
    offences = []
    for name in PURE_MODULES:
        names = imported_names(name)
        bad = [f for f in FORBIDDEN_IN_PURE if _imports(names, f)]
        if bad:
            offences.append(f"{name} imports {', '.join(bad)}")
    assert not offences, "pure modules that reach outside the core:\n  " + "\n  ".join(offences)


def test_zarr_is_imported_only_by_the_store():
    offenders = sorted(
        name for name in modules()
        if _imports(imported_names(name), "zarr") and not (name == STORE_PACKAGE or name.startswith(STORE_PACKAGE + "."))
    )
    assert not offenders, f"modules outside {STORE_PACKAGE} that import zarr: {offenders}"


def test_the_store_imports_no_layer_above_it():
    """The store serves extraction and analysis; it never reaches up to them (nor to figures, the
    pipeline or the command line), even in a function-local import."""
    above = ("filtershift.analysis", "filtershift.extraction", "filtershift.figures", "filtershift.pipeline",
             "filtershift.commands", "filtershift.cli", "filtershift.zoo", "filtershift.bench")
    offences = sorted(
        f"{name} imports {', '.join(a for a in above if _imports(imported_names(name), a))}"
        for name in modules()
        if (name == STORE_PACKAGE or name.startswith(STORE_PACKAGE + ".")) and any(_imports(imported_names(name), a) for a in above)
    )
    assert not offences, "store modules that import a layer above the store:\n  " + "\n  ".join(offences)


def test_no_function_is_longer_than_90_lines():
    too_long = []
    for name, (_, tree) in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines:\n  " + "\n  ".join(too_long)


def test_th_constants_are_written_in_one_module():
    holders = sorted(name for name, (_, tree) in modules().items() if _writes_th_constant(tree))
    assert len(holders) == 1, f"the TH(n) constants {TH_CONSTANTS} are written in {holders}; keep them in one module"


def test_float32_eps_floor_is_written_in_one_module():
    holders = sorted(name for name, (_, tree) in modules().items() if _writes_float32_eps(tree))
    assert len(holders) == 1, f"the float32-eps floor of D is written in {holders}; keep it in one module"
