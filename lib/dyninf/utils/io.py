"""Writes that never leave a half-written file behind (a temporary file, then a rename), a full
disk reported in one line naming the file, and a lock per folder so that two processes never
write the same run or cache at once."""
from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from dyninf.utils.paths import course_root, shown_path

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)
LOCK_NAME = ".lock"


class DiskFullError(OSError):
    """The disk (or the quota) filled up while a file was written; the file is as it was before."""


def disk_full_error(path: str | os.PathLike, error: OSError) -> DiskFullError:
    path = Path(path)
    try:
        left = shutil.disk_usage(path.parent).free
        free = f"{left / 2**20:.0f} MiB free now" if left >= 2**20 else f"{left / 2**10:.0f} KiB free now"
    except OSError:
        free = "free space unknown"
    inside = path.resolve().is_relative_to(course_root())
    return DiskFullError(error.errno, f"no space left on the device to write {shown_path(path) if inside else path} "
                                      f"({free}); the file is as it was before (or absent, if it was new). Free "
                                      f"some space, then run again")


@contextmanager
def reporting_full_disk(path: str | os.PathLike):
    """A full disk while ``path`` is written, from any library's write, as a ``DiskFullError``."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as error:
        if error.errno in FULL_DISK:
            raise disk_full_error(path, error) from error
        raise


def temporary_prefix(path: Path) -> str:
    return f".{path.name}."


@contextmanager
def _atomic_file(path: str | os.PathLike, mode: str):
    path = Path(path)
    with reporting_full_disk(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path), suffix=".tmp")
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
    # serialised in memory first: torch.save's own writer turns a failed write into "enforce
    # fail at inline_container.cc" without the file or the reason; a plain write says ENOSPC
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with _atomic_file(path, "wb") as file:
        file.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with _atomic_file(path, "w") as file:
        file.write(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove what interrupted atomic writes left in ``folder`` (a kill between the write and the
    rename). Only under ``folder_lock(folder)``: then no other process is writing there."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


@contextmanager
def folder_lock(folder: str | os.PathLike, doing: str, report=print):
    """Hold ``folder``'s lock (``folder/.lock``) while ``doing`` (e.g. "training this run"): a
    second process waits for the first, saying so, then finds its work done. The operating system
    releases the lock of a killed process. Temporaries an interrupted write left are removed. In a
    folder this process may not write (a read-only copy of the runs, as graded notebooks see them)
    nothing can be written anyway, so nothing is locked."""
    folder = Path(folder)
    with reporting_full_disk(folder / LOCK_NAME):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(folder / LOCK_NAME)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                report(f"[dyninf] another process is {doing} in {shown_path(folder)}; waiting for it to finish",
                       flush=True)
                lock.acquire()
        except OSError as error:
            if error.errno not in READ_ONLY:
                raise
            lock = None
    try:
        if lock is not None:
            remove_stale_temporaries(folder)
        yield
    finally:
        if lock is not None:
            lock.release()


def tidy_folder(folder: str | os.PathLike) -> None:
    """Remove interrupted writes' temporaries from ``folder`` if no other process holds its lock
    now (and the folder is writable); otherwise leave them for a later start."""
    folder = Path(folder)
    try:
        lock = FileLock(folder / LOCK_NAME)
        lock.acquire(timeout=0)
    except (OSError, Timeout):
        return
    try:
        remove_stale_temporaries(folder)
    finally:
        lock.release()
