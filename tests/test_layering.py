"""The direction of imports: the library never imports the harness, layers import downwards, no cycles.

Every ``import`` in ``src/memopt`` counts, including those inside functions (a cycle broken by a lazy
import is still a cycle). The layers, bottom first, are :data:`LAYERS`; a module may import modules of its
own layer or below. The harness imports library modules directly, never the ``memopt`` facade.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: library packages, bottom layer first; the facade ``memopt`` sits above them and the harness on top
LAYERS: list[set[str]] = [
    {"memopt.validation"},
    # the Triton kernels sit with the state formats, which (de)quantize CUDA tensors with them
    {"memopt.state", "memopt.manifolds", "memopt.kernels.triton"},
    {"memopt.estimators"},
    {"memopt.kernels"},
    {"memopt.optim"},
    {"memopt.accelerated", "memopt.curvature", "memopt.wrappers", "memopt.riemannian"},
    {"memopt.registry"},
    {"memopt.offload"},
    {"memopt.convex", "memopt.decentralized", "memopt.privacy"},
    {"memopt"},
    {"memopt.harness"},
]


def module_names(src: Path) -> dict[str, Path]:
    """Every module under ``src/memopt`` by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted((src / "memopt").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The memopt modules that ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from memopt.state import storage`` imports the module memopt.state.storage
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [name if name in known else node.module for name in names]
        else:
            continue
        found.update(name for name in names if name == "memopt" or name.startswith("memopt."))
    return found


def layer_of(module: str) -> int:
    """The index in :data:`LAYERS` of the longest package prefix of ``module``."""
    best, index = -1, None
    for i, layer in enumerate(LAYERS):
        for package in layer:
            if (module == package or module.startswith(package + ".")) and len(package) > best:
                best, index = len(package), i
    if index is None:
        raise AssertionError(f"{module} belongs to no layer; add its package to LAYERS in tests/test_layering.py")
    return index


def violations(src: Path) -> list[str]:
    """Every upward import, facade import and import cycle under ``src/memopt``, as readable lines."""
    modules = module_names(src)
    graph = {name: imports_of(path, set(modules)) for name, path in modules.items()}
    problems = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target == "memopt" and module != "memopt":
                problems.append(f"{module} imports the memopt facade; import the defining module instead")
            elif target != "memopt" and layer_of(target) > layer_of(module):
                problems.append(f"{module} imports {target} from a higher layer")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append([*sorted(component), min(component)])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_library_never_imports_the_harness_and_there_are_no_cycles():
    assert violations(SRC) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "memopt" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"__init__.py": "", "state/__init__.py": "", "state/storage.py": "from memopt.harness.train import loop\n",
             "harness/__init__.py": "", "harness/train/__init__.py": "", "harness/train/loop.py": ""},
            "memopt.state.storage imports memopt.harness.train.loop from a higher layer",
        ),
        (
            {"__init__.py": "", "state/__init__.py": "", "estimators/__init__.py": "",
             "state/storage.py": "def f():\n    from memopt.estimators import momentum\n",
             "estimators/momentum.py": ""},
            "memopt.state.storage imports memopt.estimators.momentum from a higher layer",
        ),
        (
            {"__init__.py": "", "harness/__init__.py": "", "harness/cli.py": "import memopt\n"},
            "memopt.harness.cli imports the memopt facade; import the defining module instead",
        ),
        (
            {"__init__.py": "", "harness/__init__.py": "", "harness/a.py": "from memopt.harness import b\n",
             "harness/b.py": "def f():\n    import memopt.harness.a\n"},
            "import cycle: memopt.harness.a -> memopt.harness.b -> memopt.harness.a",
        ),
    ],
    ids=["upward", "upward-lazy", "facade", "cycle"],
)
def test_the_check_fails_on_an_upward_import_a_facade_import_and_a_cycle(tmp_path, files, expected):
    assert expected in violations(_tree(tmp_path, files))


def test_the_check_passes_a_downward_import(tmp_path):
    tree = _tree(tmp_path, {"__init__.py": "", "state/__init__.py": "", "state/storage.py": "",
                            "optim/__init__.py": "", "optim/engine.py": "from memopt.state import storage\n"})
    assert violations(tree) == []
