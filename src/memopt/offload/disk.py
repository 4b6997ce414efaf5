"""The disk tier: each parameter's optimizer state in a file, a bounded window of it in memory.

A parameter's state (its entries in the checkpoint layout, :func:`memopt.state.formats.flatten_state`, and
with 16-bit parameters the float32 master copy) is one file under a private folder made inside ``path``.
Its tensors are laid out back to back, each at an offset aligned to 64 bytes, and are read straight into
tensors of their own and written from them (one read or positioned write per tensor, no copy). Both run on
worker threads (file I/O releases the GIL), so that

* **prefetch** (double buffering) reads the next parameter's state, in backward order, while the current
  one steps, and
* **write-back** of the parameter just stepped overlaps the next step.

The window is bounded: at most one prefetch and one write-back are in flight, so that at any time the
state of at most three parameters is in memory (the one stepping, the next one, the last one being
written). Before training, :meth:`DiskStore.reserve` checks the free space (``shutil.disk_usage``) and
allocates every file at its full size (``os.posix_fallocate`` where the platform has it), so that a disk
too small fails at once with the path and the bytes needed. An I/O error later (a full disk, a failing
device) is raised as :class:`OffloadError`: the state on disk is then incomplete, the optimizer refuses
any further step, and a run resumes from its last checkpoint (which lives elsewhere and is untouched).

Hand-written: torch and numpy offer memory maps (``torch.from_file``, ``np.memmap``), but a map's resident
pages are the kernel's choice, not a bound this module can keep; explicit reads and writes are.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

_ALIGN = 64


class OffloadError(RuntimeError):
    """Reading or writing offloaded optimizer state failed; the run cannot continue from this state."""


class OffloadCapacityError(OffloadError, ValueError):
    """The disk has too little free space for the optimizer state (raised before training starts)."""


@dataclass(frozen=True)
class _Slot:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def layout_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes a file holding ``tensors`` (any device, meta included) takes: each tensor aligned to 64 bytes."""
    return sum(_aligned(t.numel() * t.element_size()) for t in tensors.values())


def _as_bytes(tensor: torch.Tensor) -> memoryview:
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


class DiskStore:
    """Tensors by key (a parameter's index), in one file per key under a private folder inside ``path``.

    Args:
        path: an existing folder (on the disk that is to hold the state).
        describe: ``describe(key)`` names a key in messages (the parameter's name).
    """

    def __init__(self, path: str | os.PathLike, describe=str) -> None:
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"offload path={str(path)!r} is not an existing folder; create it or pass another path.")
        self.folder = Path(tempfile.mkdtemp(prefix="memopt-offload-", dir=root))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._describe = describe
        self._layouts: dict[int, list[_Slot]] = {}
        self._reading: dict[int, Future] = {}
        self._writing: dict[int, Future] = {}
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="memopt-offload-read")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="memopt-offload-write")
        self._lock = threading.Lock()
        self.failure: OffloadError | None = None
        #: the most bytes of state this store held in memory at once (tensors read, tensors being written)
        self.peak_resident = 0
        self._resident = 0

    # -------------------------------------------------------------------------------------- capacity
    def file(self, key: int) -> Path:
        """The file of ``key``."""
        return self.folder / f"{key:06d}.state"

    def reserve(self, sizes: dict[int, int]) -> None:
        """Check that the disk has room for files of ``sizes`` (key -> bytes) and allocate them.

        Raises:
            OffloadCapacityError: not enough free space (the message gives the path, the bytes needed and free).
            OffloadError: the allocation failed.
        """
        needed = sum(sizes.values())
        free = shutil.disk_usage(self.folder).free
        if needed > free:
            raise OffloadCapacityError(
                f"offload to disk: the optimizer state needs {needed} bytes ({needed / 2**30:.2f} GiB) under "
                f"{self.folder.parent}, but only {free} bytes ({free / 2**30:.2f} GiB) are free there. Free space "
                "or pass a path= on a larger disk."
            )
        for key, size in sizes.items():
            try:
                fd = os.open(self.file(key), os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if size and hasattr(os, "posix_fallocate"):
                        os.posix_fallocate(fd, 0, size)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise self._fail("allocating", key, size, exc) from exc

    # --------------------------------------------------------------------------------------- writing
    def put(self, key: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``tensors`` as ``key``'s state on the writer thread (the previous write is waited for first,
        so that at most one is in flight); they stay referenced until written."""
        self.check()
        for pending in list(self._writing):
            self._wait_write(pending)
        slots, offset = [], 0
        for name, tensor in tensors.items():
            nbytes = tensor.numel() * tensor.element_size()
            slots.append(_Slot(name, tensor.dtype, tuple(tensor.shape), offset, nbytes))
            offset += _aligned(nbytes)
        self._layouts[key] = slots
        self._count(offset)
        self._writing[key] = self._writer.submit(self._write, key, dict(tensors), slots, offset)

    def _write(self, key: int, tensors: dict[str, torch.Tensor], slots: list[_Slot], size: int) -> None:
        fd = os.open(self.file(key), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            for slot in slots:
                data = _as_bytes(tensors[slot.name])
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, data[done:], slot.offset + done)
        finally:
            os.close(fd)

    def _wait_write(self, key: int) -> None:
        future = self._writing.pop(key)
        slots = self._layouts[key]
        size = slots[-1].offset + _aligned(slots[-1].nbytes) if slots else 0
        try:
            future.result()
        except OSError as exc:
            raise self._fail("writing", key, size, exc) from exc
        finally:
            self._count(-size)

    # --------------------------------------------------------------------------------------- reading
    def has(self, key: int) -> bool:
        """Whether ``key`` has state on disk."""
        return key in self._layouts

    def prefetch(self, key: int) -> None:
        """Start reading ``key``'s state (after its pending write, if any); a no-op if it has none or is being
        read already. At most one prefetch is in flight: a new one is not started while another is."""
        if self.failure is not None or key not in self._layouts or key in self._reading or self._reading:
            return
        if key in self._writing:
            self._wait_write(key)
        slots = self._layouts[key]
        size = slots[-1].offset + _aligned(slots[-1].nbytes) if slots else 0
        self._count(size)
        self._reading[key] = self._reader.submit(self._read, key)

    def _read(self, key: int) -> dict[str, torch.Tensor]:
        tensors = {}
        with open(self.file(key), "rb", buffering=0) as file:
            for slot in self._layouts[key]:
                tensor = torch.empty(slot.shape, dtype=slot.dtype)
                view = _as_bytes(tensor)  # the tensor's own memory
                file.seek(slot.offset)
                done = 0
                while done < slot.nbytes:
                    got = file.readinto(view[done:])
                    if not got:
                        raise OSError(f"{self.file(key)} ends inside {slot.name!r} ({done} of {slot.nbytes} bytes)")
                    done += got
                tensors[slot.name] = tensor
        return tensors

    def take(self, key: int) -> dict[str, torch.Tensor]:
        """``key``'s state, read (or its prefetch waited for); it counts as resident until :meth:`release`."""
        self.check()
        if key not in self._reading:
            self.prefetch(key) if not self._reading else self._read_now(key)
        future = self._reading.pop(key)
        try:
            return future.result()
        except OSError as exc:
            raise self._fail("reading", key, 0, exc) from exc

    def _read_now(self, key: int) -> None:
        """Read ``key`` although another prefetch is in flight (out of the predicted order)."""
        if key in self._writing:
            self._wait_write(key)
        slots = self._layouts[key]
        size = slots[-1].offset + _aligned(slots[-1].nbytes) if slots else 0
        self._count(size)
        future: Future = Future()
        try:
            future.set_result(self._read(key))
        except OSError as exc:
            future.set_exception(exc)
        self._reading[key] = future

    def release(self, key: int) -> None:
        """``key``'s buffer from :meth:`take` is no longer held (after its state was handed to :meth:`put`)."""
        slots = self._layouts[key]
        self._count(-(slots[-1].offset + _aligned(slots[-1].nbytes) if slots else 0))

    # ----------------------------------------------------------------------------------------- misc
    def drain(self) -> None:
        """Wait for every write and read in flight; raise the first failure."""
        for key in list(self._writing):
            self._wait_write(key)
        for key in list(self._reading):
            future = self._reading.pop(key)
            slots = self._layouts[key]
            self._count(-(slots[-1].offset + _aligned(slots[-1].nbytes) if slots else 0))
            try:
                future.result()
            except OSError as exc:
                raise self._fail("reading", key, 0, exc) from exc
        self.check()

    def check(self) -> None:
        """Raise the failure that stopped this store, if any."""
        if self.failure is not None:
            raise self.failure

    def bytes_on_disk(self) -> int:
        """Bytes of the files (as allocated)."""
        return sum(f.stat().st_size for f in self.folder.glob("*.state"))

    def close(self) -> None:
        """Stop the workers and delete the folder."""
        self._reader.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        self._finalizer()

    def _count(self, delta: int) -> None:
        with self._lock:
            self._resident += delta
            self.peak_resident = max(self.peak_resident, self._resident)

    def _fail(self, action: str, key: int, size: int, exc: OSError) -> OffloadError:
        amount = f" ({size} bytes)" if size else ""
        self.failure = OffloadError(
            f"offload to disk failed {action} the optimizer state of {self._describe(key)}{amount} at "
            f"{self.file(key)}: {exc}. The state on disk is now incomplete and this optimizer will not step "
            "again; free space or fix the disk, then resume from the last checkpoint (which is untouched)."
        )
        return self.failure
