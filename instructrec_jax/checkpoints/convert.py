"""`instructrec convert-checkpoint`: move Flan-T5 weights between HF, T5X and our Orbax params layout.

    instructrec convert-checkpoint --from hf|t5x|ours --to hf|ours SRC DST

"ours" is a directory holding
    params/          an Orbax `StandardCheckpointer` checkpoint of the parameter pytree
                     (unboxed arrays, T5X names: token_embedder/embedding, encoder/layers_0/...)
    t5_config.json   the `T5Config` fields, so the weights can be exported without a gin file
Restore it with `ocp.StandardCheckpointer().restore(DST / "params", abstract_params)` (read straight
into any sharding) or `load_params(DST)`. DST is written atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from instructrec_jax.atomic import atomic_directory
from instructrec_jax.checkpoints import CheckpointFormatError
from instructrec_jax.model.config import T5Config

PARAMS_DIR = "params"
CONFIG_FILE = "t5_config.json"
SOURCES = ("hf", "t5x", "ours")
TARGETS = ("hf", "ours")


def save_params(params: Any, directory: str | os.PathLike, config: T5Config | None = None, *,
                overwrite: bool = False) -> Path:
    """Write params (boxed or not) and, if given, the config in our layout, atomically."""
    import flax.linen as nn
    import jax
    import orbax.checkpoint as ocp

    params = jax.tree_util.tree_map(np.asarray, jax.device_get(nn.meta.unbox(params)))
    with atomic_directory(directory, overwrite=overwrite) as tmp:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp.resolve() / PARAMS_DIR, params)
        checkpointer.wait_until_finished()
        checkpointer.close()
        if config is not None:
            (tmp / CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n",
                                           encoding="utf-8")
    return Path(directory)


def load_params(directory: str | os.PathLike, abstract_params: Any = None
                ) -> tuple[T5Config | None, Any]:
    """(config or None, params) from our layout; `directory` may also be a bare Orbax params dir."""
    import orbax.checkpoint as ocp

    directory = Path(directory).resolve()
    params_dir = directory / PARAMS_DIR if (directory / PARAMS_DIR).is_dir() else directory
    if not params_dir.is_dir():
        raise CheckpointFormatError(directory, f"no Orbax `{PARAMS_DIR}` directory")
    checkpointer = ocp.StandardCheckpointer()
    try:
        params = checkpointer.restore(params_dir, abstract_params)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointFormatError(params_dir, f"not an Orbax params checkpoint ({error})") from error
    finally:
        checkpointer.close()
    config = None
    config_path = directory / CONFIG_FILE
    if config_path.is_file():
        try:
            config = T5Config(**json.loads(config_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError, ValueError) as error:
            raise CheckpointFormatError(config_path, f"not a T5Config JSON ({error})") from error
    return config, params


def _read(source: str, path: Path) -> tuple[T5Config, Any]:
    if source == "hf":
        from instructrec_jax.checkpoints import hf

        return hf.load_hf_checkpoint(path)
    if source == "t5x":
        from instructrec_jax.checkpoints import t5x_legacy

        loaded = t5x_legacy.load_t5x_checkpoint(path)
        return loaded.config, loaded.params
    config, params = load_params(path)
    if config is None:
        import jax
        from flax import traverse_util

        from instructrec_jax.checkpoints.t5x_legacy import infer_config

        flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
        config = infer_config(flat, source=str(path))
    return config, params


def convert(source: str, target: str, src: str | os.PathLike, dst: str | os.PathLike, *,
            overwrite: bool = False, max_shard_bytes: int | None = None) -> tuple[T5Config, Path]:
    """Read SRC in `source` format and write DST in `target` format; returns (config, DST)."""
    if source not in SOURCES or target not in TARGETS:
        raise ValueError(f"convert: --from must be one of {SOURCES} and --to one of {TARGETS}")
    config, params = _read(source, Path(src))
    if target == "hf":
        from instructrec_jax.checkpoints import hf

        out = hf.save_hf_checkpoint(config, params, dst, max_shard_bytes=max_shard_bytes,
                                    overwrite=overwrite)
    else:
        out = save_params(params, dst, config, overwrite=overwrite)
    return config, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="instructrec convert-checkpoint",
        description="Convert Flan-T5 weights between Hugging Face safetensors, T5X legacy "
                    "checkpoints and this project's Orbax params layout.")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES)
    parser.add_argument("--to", dest="target", required=True, choices=TARGETS)
    parser.add_argument("src", help="source checkpoint directory")
    parser.add_argument("dst", help="destination directory (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--max_shard_bytes", type=int, default=None,
                        help="--to hf: write shards of at most this size plus an index json")
    args = parser.parse_args(argv)
    try:
        config, out = convert(args.source, args.target, args.src, args.dst,
                              overwrite=args.overwrite, max_shard_bytes=args.max_shard_bytes)
    except (CheckpointFormatError, FileExistsError, FileNotFoundError) as error:
        print(f"instructrec convert-checkpoint: {error}", file=sys.stderr)
        return 1
    from instructrec_jax.model.config import num_params

    print(f"wrote {args.target} checkpoint {out} ({num_params(config):,} parameters; {config})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
