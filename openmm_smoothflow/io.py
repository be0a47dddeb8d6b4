"""Files: atomic writes (every checkpoint, export and data file goes through here) and packaged data."""
from __future__ import annotations

import contextlib
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Iterator

from .units import PathLike


def packaged(name: str) -> Path:
    """Path of a file shipped in ``openmm_smoothflow/data`` (PDB, exported models, frames)."""
    return Path(str(resources.files("openmm_smoothflow") / "data" / name))


@contextlib.contextmanager
def atomic_write(path: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic: readers see
    either the old file or the complete new one, never a partial write. On error the temporary file is
    removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
