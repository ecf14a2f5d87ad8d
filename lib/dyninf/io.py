"""Writes that never leave a half-written file behind: a temporary file, then a rename."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def _atomic_file(path: str | os.PathLike, mode: str):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are ordinary course files
        with os.fdopen(handle, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    with _atomic_file(path, "wb") as file:
        torch.save(obj, file)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with _atomic_file(path, "w") as file:
        file.write(text)
