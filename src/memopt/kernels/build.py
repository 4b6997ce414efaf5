"""Compile memopt's C kernels on first use and load them with ``ctypes``.

The kernels are plain C with OpenMP (no Python or torch headers), so a build takes about a second with
the system's C compiler. The shared library is cached under ``$MEMOPT_CACHE_DIR`` (default
``~/.cache/memopt/kernels``), keyed by a hash of the source, the flags, the compiler and the machine, and
written atomically so that concurrent processes never load a half-written file.

Where no compiler is found or the build fails, :func:`load` returns None after one warning that says
why, and memopt uses its torch implementation of the same update (slower, same results up to rounding).
``MEMOPT_KERNELS=0`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from memopt.validation import warn_at_caller

FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fopenmp", "-shared", "-fPIC")


def cache_dir() -> Path:
    """Where compiled kernels are kept."""
    root = os.environ.get("MEMOPT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "memopt"
    )
    return Path(root) / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _compiler_version(compiler: str) -> str:
    try:
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _local_includes(source: Path) -> list[Path]:
    """The headers beside ``source`` that it includes (``#include "name.h"``), so that editing one rebuilds it."""
    names = re.findall(rb'^\s*#\s*include\s*"([^"]+)"', source.read_bytes(), flags=re.MULTILINE)
    return [source.with_name(name.decode()) for name in names]


def _build(source: Path, compiler: str) -> Path:
    text = b"\0".join([source.read_bytes(), *(header.read_bytes() for header in _local_includes(source))])
    key = hashlib.sha256(
        b"\0".join([text, " ".join(FLAGS).encode(), _compiler_version(compiler).encode(), platform.machine().encode()])
    ).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(handle)
    try:
        result = subprocess.run(
            [compiler, *FLAGS, str(source), "-o", partial, "-lm"], capture_output=True, text=True, timeout=300
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed on {source.name}:\n{result.stderr.strip()}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library ``name`` (a ``.c`` file beside this module), or None if unavailable."""
    if os.environ.get("MEMOPT_KERNELS", "1") == "0":
        return None
    source = Path(__file__).with_name(f"{name}.c")
    compiler = _compiler()
    if compiler is None:
        warn_at_caller(
            f"memopt: no C compiler found (set CC, or install gcc) to build the fused kernel {name}; using the "
            "slower torch implementation of the same update.",
            RuntimeWarning,
        )
        return None
    try:
        return ctypes.CDLL(str(_build(source, compiler)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warn_at_caller(
            f"memopt: could not build the fused kernel {name} ({error}); using the slower torch implementation.",
            RuntimeWarning,
        )
        return None


#: a C function's ctypes signature: its result type (None: void) and its argument types
Signature = tuple[object, list]


@functools.cache
def _bound(name: str, signatures: tuple[tuple[str, object, tuple], ...]) -> ctypes.CDLL | None:
    library = load(name)
    if library is not None:
        for symbol, restype, argtypes in signatures:
            function = getattr(library, symbol)
            function.restype = restype
            function.argtypes = list(argtypes)
    return library


def bind(name: str, signatures: dict[str, Signature]) -> ctypes.CDLL | None:
    """:func:`load` ``name`` and declare the ctypes signatures of its functions (``symbol -> (restype,
    argtypes)``); None if the kernel is unavailable. Cached: every call with the same arguments returns the
    same library."""
    frozen = tuple((symbol, restype, tuple(argtypes)) for symbol, (restype, argtypes) in signatures.items())
    return _bound(name, frozen)
