"""Every module of ``src/memopt`` imports on its own, first, in a fresh set of memopt modules.

``tests/test_layering.py`` reads the import statements; this catches what it cannot see: a cycle closed by
a package ``__init__`` that imports its submodules, which fails only when a particular module is imported
first (``from a import b`` on a partially initialised module).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_names() -> list[str]:
    names = []
    for path in sorted((SRC / "memopt").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return [n for n in names if not n.endswith("__main__")]


def test_every_module_imports_first():
    saved = {name: module for name, module in sys.modules.items() if name == "memopt" or name.startswith("memopt.")}
    failures = []
    try:
        for name in module_names():
            for loaded in [m for m in sys.modules if m == "memopt" or m.startswith("memopt.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except ImportError as exc:
                failures.append(f"{name}: {exc}")
    finally:
        for loaded in [m for m in sys.modules if m == "memopt" or m.startswith("memopt.")]:
            del sys.modules[loaded]
        sys.modules.update(saved)
    assert not failures, "\n".join(failures)
