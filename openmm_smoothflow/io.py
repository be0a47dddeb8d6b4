"""Files: atomic writes (every checkpoint, export and data file goes through here), run-directory
locks, and packaged data."""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Iterator, List

from .units import PathLike

_TMP_MARK = ".tmp-"  # temporary names: .NAME.tmp-PID-RANDOM.SUFFIX (the PID tells a stale one)


def packaged(name: str) -> Path:
    """Path of a file shipped in ``openmm_smoothflow/data`` (PDB, exported models, frames)."""
    return Path(str(resources.files("openmm_smoothflow") / "data" / name))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(directory: PathLike) -> List[Path]:
    """Remove temporary files of :func:`atomic_write` in ``directory`` left by processes that no longer
    run (a killed write); returns the paths removed."""
    removed = []
    pattern = re.compile(r"^\..+" + re.escape(_TMP_MARK) + r"(\d+)-")
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        match = pattern.match(entry.name)
        if match and entry.is_file() and not _pid_alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system / OS allows it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it onto ``path``.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic: readers see
    either the old file or the complete new one, never a partial write; the data reach the disk before
    the rename (fsync of the file, then of the directory). On error (or Ctrl-C) the temporary file is
    removed and ``path`` is untouched; temporaries of killed processes are removed by the next write
    into the same directory (:func:`remove_stale_temporaries`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_TMP_MARK}{os.getpid()}-", suffix=suffix or path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_path, path)
        _fsync_directory(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


class RunDirectoryBusy(FileExistsError):
    """Another live process holds the run directory's lock."""


@contextlib.contextmanager
def run_lock(directory: PathLike, name: str = ".lock") -> Iterator[Path]:
    """Hold ``directory/.lock`` (PID and host) while the block runs; a second holder is refused
    (:class:`RunDirectoryBusy`). A lock left by a dead process on this host is taken over."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / name
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = lock.read_text().split()
                pid, host = int(text[0]), (text[1] if len(text) > 1 else "")
            except (OSError, ValueError, IndexError):  # empty: being written now, or a writer that died
                with contextlib.suppress(OSError):
                    if time.time() - lock.stat().st_mtime < 10:
                        raise RunDirectoryBusy(f"{directory} is being locked by another process ({lock})") from None
                pid, host = -1, socket.gethostname()
            if host == socket.gethostname() and not _pid_alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its process is gone
                continue
            raise RunDirectoryBusy(f"{directory} is in use by process {pid} on {host or '?'} (lock file {lock}; "
                                   "remove it if that process is gone)") from None
        with os.fdopen(fd, "w") as fh:
            fh.write(me)
        break
    else:
        raise RunDirectoryBusy(f"could not take the lock {lock}")
    try:
        yield lock
    finally:
        with contextlib.suppress(FileNotFoundError):
            if lock.read_text() == me:
                lock.unlink()


def save_torch(path: PathLike, obj) -> None:
    """``torch.save`` of ``obj`` (plain dicts of tensors, numbers, strings) to ``path``, atomically."""
    import torch

    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: PathLike):
    """What :func:`save_torch` wrote, loaded on the CPU with ``weights_only=True``; a clear error for a
    missing or unreadable file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable checkpoint: {exc}") from exc
