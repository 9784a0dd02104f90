"""Line-by-line reading of data files, shared by every reader.

Gzip or plain is decided by the file's first bytes, not its name (people gunzip files and keep the
name, or the other way round). Each line is decoded on its own so that a decoding error names the
exact line; a truncated gzip stream names the file and the last complete line. What to do with a
bad record is the caller's `on_error` policy, applied through `RecordErrors`, so that skipping is
always counted by reason and never silent.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator

from instructrec_jax.data.types import DataFormatError, SkipCounts

GZIP_MAGIC = b"\x1f\x8b"
ON_ERROR_CHOICES = ("raise", "skip")


class RecordErrors:
    """The on_error policy for bad records: raise a `DataFormatError`, or count by reason."""

    def __init__(self, on_error: str, skipped: SkipCounts):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.raise_errors = on_error == "raise"
        self.skipped = skipped

    def bad(self, path: str | os.PathLike, line: int | None, reason: str, detail: str) -> None:
        """Reports one bad record: raises, or counts it under `reason` (the detail is dropped)."""
        if self.raise_errors:
            raise DataFormatError(path, line, f"{reason}: {detail}")
        self.skipped.add(reason)

    def documented_skip(self, path: str | os.PathLike, line: int, reason: str, message: str, *,
                        strict: bool) -> None:
        """A skip the reader documents: counted under `reason`, or raised in strict mode."""
        if strict:
            raise DataFormatError(path, line, f"{message} (strict mode)")
        self.skipped.add(reason)


def is_gzip(path: str | os.PathLike) -> bool:
    """True when the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_binary(path: Path):
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _decode(raw: bytes, path: Path, number: int, encoding: str, fallback: str | None,
            errors: RecordErrors) -> str | None:
    if encoding.replace("-", "").lower() == "utf8" and b"\x00" in raw:
        # A NUL byte is valid UTF-8 but never appears in these text formats; it means UTF-16/32 or
        # a binary file, and reporting it here beats a confusing parse error further on.
        errors.bad(path, number, "wrong encoding",
                   "NUL byte in the line; expected UTF-8 text (is the file UTF-16 or binary?)")
        return None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        if fallback is not None:
            return raw.decode(fallback, errors="replace")
        errors.bad(path, number, "wrong encoding",
                   f"byte {raw[err.start:err.start + 1]!r} at column {err.start + 1} is not valid "
                   f"{encoding}; expected {encoding} text (is the file UTF-16 or binary?)")
        return None


def read_lines(path: str | os.PathLike, errors: RecordErrors, *, encoding: str = "utf-8",
               fallback_encoding: str | None = None) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, text without the line ending) for each non-blank line.

    Blank lines are not records and are passed over. A line that is not valid `encoding` is
    decoded with `fallback_encoding` when one is given (MovieLens ships latin-1, but re-saved
    copies are often UTF-8), otherwise it goes to `errors`.
    A gzip stream that ends early or is corrupt raises `DataFormatError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    number = 0
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                text = _decode(raw, path, number, encoding, fallback_encoding, errors)
                if text is None:
                    continue
                text = text.rstrip("\r\n")
                if text.strip():
                    yield number, text
    except EOFError as err:
        raise DataFormatError(
            path, None,
            f"truncated gzip stream (EOFError: {err}) after line {number}; the file was cut short, "
            "download or copy it again") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataFormatError(
            path, None,
            f"corrupt gzip stream ({type(err).__name__}: {err}) after line {number}; "
            "download or copy the file again") from None


def no_records_error(path: str | os.PathLike, skipped_before: int,
                     skipped_after: int) -> DataFormatError:
    """The error for a file that gave no usable record, saying whether records were skipped."""
    skipped = skipped_after - skipped_before
    why = f" ({skipped} records skipped as bad input)" if skipped else " (the file is empty)"
    return DataFormatError(path, None, f"no records{why}; expected at least one record")
