"""T5X's gin command-line flags: `--gin_file`, `--gin_bindings`, `--gin_search_paths`, `--gin.X=V`.

`--gin.MODEL_DIR=\"/tmp/run\"` is shorthand for `--gin_bindings='MODEL_DIR = "/tmp/run"'`, as in
T5X. Files are parsed first, in the order given, then bindings (so bindings win). The checkout
root is always on the search path, so `--gin_file=gin/models/flan_t5_tiny.gin` and
`include 'gin/models/…'` resolve from any working directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import gin

# The folder holding `gin/` and `instructrec_jax/` in a checkout (or an editable install).
CHECKOUT_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class GinFlags:
    """The gin part of a command line: files, bindings (shorthand already rewritten), search paths."""

    files: tuple[str, ...]
    bindings: tuple[str, ...]
    search_paths: tuple[str, ...]


def rewrite_gin_args(argv: Sequence[str]) -> list[str]:
    """Turns each `--gin.NAME=VALUE` into `--gin_bindings=NAME = VALUE`; other args unchanged."""
    rewritten = []
    for arg in argv:
        if arg.startswith("--gin."):
            name, sep, value = arg[len("--gin."):].partition("=")
            if not sep or not name:
                raise ValueError(f"{arg!r}: expected --gin.NAME=VALUE, e.g. --gin.TRAIN_STEPS=1000")
            rewritten.append(f"--gin_bindings={name} = {value}")
        else:
            rewritten.append(arg)
    return rewritten


def add_gin_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds --gin_file, --gin_bindings and --gin_search_paths (each repeatable) to a parser."""
    group = parser.add_argument_group("gin configuration")
    group.add_argument("--gin_file", action="append", default=[],
                       help="gin file to parse (repeatable; later files override earlier ones)")
    group.add_argument("--gin_bindings", action="append", default=[],
                       help="one gin binding, e.g. 'TRAIN_STEPS = 1000' (repeatable); "
                            "--gin.NAME=VALUE is shorthand")
    group.add_argument("--gin_search_paths", action="append", default=[],
                       help="folders searched for gin files and includes (comma-separated or repeated)")
    return parser


def gin_flags_from_args(args: argparse.Namespace) -> GinFlags:
    """The GinFlags of parsed arguments, with the default search paths appended."""
    paths: list[str] = []
    for entry in args.gin_search_paths:
        paths.extend(part for part in entry.split(",") if part)
    for default in (os.getcwd(), str(CHECKOUT_ROOT)):
        if default not in paths:
            paths.append(default)
    return GinFlags(tuple(args.gin_file), tuple(args.gin_bindings), tuple(paths))


def parse_gin_flags(argv: Sequence[str]) -> tuple[GinFlags, list[str]]:
    """Splits a command line into its GinFlags and the remaining arguments."""
    parser = add_gin_arguments(argparse.ArgumentParser(add_help=False))
    args, rest = parser.parse_known_args(rewrite_gin_args(argv))
    return gin_flags_from_args(args), rest


def configure_gin(flags: GinFlags, *, finalize: bool = True) -> None:
    """Parses the files and bindings into gin's global configuration (search paths first).

    A file is looked up as given, then under each search path; a missing file or a bad binding
    raises with the file or binding named.
    """
    for path in flags.search_paths:
        gin.add_config_file_search_path(path)
    files = [resolve_gin_file(name, flags.search_paths) for name in flags.files]
    try:
        gin.parse_config_files_and_bindings(files, flags.bindings, finalize_config=finalize)
    except (ValueError, NameError, TypeError, ImportError, SyntaxError) as error:
        message = f"gin configuration error: {error}"
        binding = _failing_binding(error, flags.bindings)
        if binding is not None:
            message += f"\n  in the binding: {binding}"
            if "'" not in binding and '"' not in binding and "/" in binding:
                message += ("\n  (a string value needs quotes inside the binding, e.g. "
                            "--gin.MODEL_DIR=\"'/tmp/run'\")")
        raise GinConfigError(message) from error


def _failing_binding(error: Exception, bindings: Sequence[str]) -> str | None:
    """The binding a gin syntax error points at, or None when the error is in a file.

    gin parses the bindings as one text joined by newlines and reports only a line number there.
    """
    if not isinstance(error, SyntaxError) or error.filename or not error.lineno:
        return None
    line = 1
    for binding in bindings:
        line += binding.count("\n") + 1
        if error.lineno < line:
            return binding
    return None


class GinConfigError(ValueError):
    """A gin file or binding that cannot be parsed; the message names it."""


def resolve_gin_file(name: str, search_paths: Sequence[str]) -> str:
    """The path of a gin file given as typed: absolute, relative to cwd, or under a search path."""
    if os.path.isabs(name) or os.path.exists(name):
        if not os.path.exists(name):
            raise GinConfigError(f"gin file not found: {name}")
        return name
    for root in search_paths:
        candidate = os.path.join(root, name)
        if os.path.exists(candidate):
            return candidate
    raise GinConfigError(
        f"gin file not found: {name} (searched the working directory and: {', '.join(search_paths)})"
    )
