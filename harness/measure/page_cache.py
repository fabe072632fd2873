"""A cold page cache, like a freshly started pod's: before a worker starts, the files it will read or
map are evicted from the page cache, so the worker's cgroup is charged for reading them as a new
container's would be (the kernel charges a page-cache page to the cgroup that first brings it in).

Evicted with `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)` on every regular file of: the model
(directory or file), the Python environment's library folder (`sys.prefix/lib`: site-packages and its
shared libraries), the interpreter's standard library and `libpython`, the interpreter itself, the
harness's own package, and the audio. No privileges are needed for a file that can be opened; one that
cannot is skipped. Pages that some process has mapped, or that are dirty, stay (the kernel does not drop
them); everything else goes. Scenario key `page_cache: warm` skips this (the cache as previous runs left it).
"""

from __future__ import annotations

import os
import sys
import sysconfig
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import harness

MIB = 1 << 20


@dataclass(frozen=True)
class Eviction:
    files: int
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, float]:
        return {"files": self.files, "mb": round(self.bytes / MIB, 1), "seconds": round(self.seconds, 3)}


def environment_roots() -> list[Path]:
    """The Python environment a worker maps and reads: site-packages and its shared libraries, the
    standard library, libpython, the interpreter, the harness's own package."""
    roots = [Path(sys.prefix) / "lib", Path(sysconfig.get_paths()["stdlib"]), Path(harness.__file__).resolve().parent,
             Path(sys.executable).resolve()]
    base_lib = Path(sys.base_prefix) / "lib"
    try:
        roots += [base_lib / name for name in sorted(os.listdir(base_lib)) if name.startswith("libpython")]
    except OSError:
        pass
    return roots


@cache
def _environment_files() -> tuple[str, ...]:
    """Every file of the environment, listed once per process (the listing costs more than evicting)."""
    return tuple(_listing(environment_roots()))


def _listing(roots: Iterable[Path]) -> Iterator[str]:
    # The base interpreter's site-packages is not on a virtual environment's path: not read, not evicted.
    skip = {Path(sysconfig.get_paths()["stdlib"]) / "site-packages"} if sys.prefix != sys.base_prefix else set()
    seen: set[str] = set()
    for root in dict.fromkeys(Path(os.path.abspath(r)) for r in roots):
        for path in _files(root, skip):
            if path not in seen:
                seen.add(path)
                yield path


def _files(root: Path, skip: set[Path]) -> Iterator[str]:
    """Every file under `root` (or `root` itself), not following symbolic links to folders."""
    if root in skip:
        return
    if not root.is_dir():
        yield str(root)
        return
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        if Path(folder) in skip:
            continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path
            except OSError:
                continue


def evict_for_worker(model_path: str | os.PathLike[str] | None, audio: Iterable[str] = ()) -> Eviction:
    """Evict what a worker will read or map: the Python environment, the model, the audio."""
    started = time.perf_counter()
    job_roots = [Path(model_path)] if model_path is not None else []
    files, size = _evict_files([*_environment_files(), *_listing([*job_roots, *(Path(a) for a in audio)])])
    return Eviction(files, size, time.perf_counter() - started)


def evict(roots: Iterable[Path]) -> Eviction:
    """Drop the clean, unmapped page-cache pages of every file under `roots` (each file once)."""
    started = time.perf_counter()
    files, size = _evict_files(_listing(roots))
    return Eviction(files, size, time.perf_counter() - started)


def _evict_files(paths: Iterable[str]) -> tuple[int, int]:
    files = size = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            continue
        try:
            length = os.fstat(fd).st_size
            if length:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                files += 1
                size += length
        except OSError:
            pass
        finally:
            os.close(fd)
    return files, size


def cached_fraction(path: Path) -> float | None:
    """The share of a file's pages in the page cache (mmap + mincore, which reads nothing), or None."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if not size:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    vec = (ctypes.c_ubyte * pages)()
    with open(path, "rb") as f:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            if libc.mincore(address, size, vec) != 0:
                return None
        finally:
            libc.munmap(address, size)
    return sum(v & 1 for v in vec) / pages
