"""Atomic outputs: a file or a directory appears complete under its final name, or not at all.

Everything the project writes for later stages (prepared datasets, reports, JSONL shards) goes
through these helpers, so that a crash or a bad input never leaves a half-written result behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def _temporary_sibling(final: Path, *, directory: bool) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{final.name}.tmp-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, dir=final.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yields an empty temporary directory next to `final`; renames it to `final` on success.

    On any exception the temporary directory is removed and `final` is left untouched. With
    `overwrite`, an existing `final` is replaced only once the new one is complete.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists (pass overwrite=True to replace it)")
    tmp = _temporary_sibling(final, directory=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = _temporary_sibling(final, directory=True)
        os.rmdir(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "w", **open_kwargs) -> Iterator:
    """Opens a temporary file next to `final` for writing; on success it replaces `final`."""
    final = Path(final)
    tmp = _temporary_sibling(final, directory=False)
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(final: str | os.PathLike, text: str) -> None:
    """Writes `text` to `final` atomically (UTF-8)."""
    with atomic_file(final, "w") as handle:
        handle.write(text)
