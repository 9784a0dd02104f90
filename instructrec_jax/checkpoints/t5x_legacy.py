"""Reading T5X's legacy checkpoint format (msgpack `checkpoint` file + TensorStore zarr arrays).

Layout of a `checkpoint_<step>/` directory as T5X writes it:
- `checkpoint`: flax msgpack of `{'version': 3, 'optimizer': {'target': <params>, 'state':
  {'step': N, 'param_states': ...}}}`. Small or unpartitioned arrays are stored inline (flax's
  msgpack ndarray extension); every other array is replaced by a TensorStore spec dict
  (`{'driver': 'zarr', 'dtype': ..., 'kvstore': {'driver': 'file' | 'gcs', 'path': <relative>},
  'metadata': {...}}`, or with a top-level 'path' in old specs).
- one zarr folder per such array, named after its path in that tree with '.' separators, e.g.
  `target.encoder.layers_0.attention.query.kernel`, relative to the checkpoint directory (GCS specs
  carry a dummy bucket; the folder is still relative to the checkpoint).
- format version < 3 stored bfloat16 arrays as uint16.

Only the `target` (the parameters) and the step are read; T5X's parameter names are ours. Array
paths must stay inside the checkpoint directory; nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import Any

import ml_dtypes
import numpy as np
from flax import serialization, traverse_util

from instructrec_jax.checkpoints import CheckpointFormatError
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.t5 import param_shapes

MSGPACK_FILE = "checkpoint"


@dataclasses.dataclass(frozen=True)
class T5XCheckpoint:
    """The parameters of a T5X checkpoint in our tree, its step and the config its shapes imply."""

    params: dict
    step: int
    config: T5Config
    version: int


def _is_tensorstore_spec(node: Any) -> bool:
    return isinstance(node, dict) and "driver" in node and ("kvstore" in node or "path" in node)


def _relative_array_path(spec: dict, checkpoint_dir: Path, key: str) -> Path:
    kvstore = spec.get("kvstore")
    relative = kvstore.get("path") if isinstance(kvstore, dict) else None
    relative = relative if relative is not None else spec.get("path")
    if not isinstance(relative, str) or not relative:
        raise CheckpointFormatError(checkpoint_dir / MSGPACK_FILE,
                                    f"{key}: TensorStore spec without a path")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise CheckpointFormatError(checkpoint_dir / MSGPACK_FILE,
                                    f"{key}: array path {relative!r} leaves the checkpoint directory")
    return checkpoint_dir.joinpath(*pure.parts)


def _read_zarr(path: Path, key: str, checkpoint_dir: Path) -> np.ndarray:
    import tensorstore as ts

    if not (path / ".zarray").is_file():
        raise CheckpointFormatError(path, f"zarr array for {key} not found (no .zarray)")
    spec = {"driver": "zarr", "kvstore": {"driver": "file", "path": str(path)}}
    try:
        store = ts.open(spec, read=True, open=True).result()
        return np.asarray(store.read().result())
    except ValueError as error:
        raise CheckpointFormatError(path, f"cannot read zarr array for {key}: {error}") from error


def _checkpoint_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_file() and path.name == MSGPACK_FILE:
        return path.parent
    if (path / MSGPACK_FILE).is_file():
        return path
    raise CheckpointFormatError(path, f"no T5X msgpack `{MSGPACK_FILE}` file here")


def read_t5x_state(path: str | os.PathLike) -> dict:
    """The msgpack state dict of a T5X checkpoint, TensorStore references left as spec dicts."""
    directory = _checkpoint_dir(path)
    data = (directory / MSGPACK_FILE).read_bytes()
    try:
        state = serialization.msgpack_restore(data)
    except Exception as error:  # msgpack raises several unrelated types for corrupt input
        raise CheckpointFormatError(directory / MSGPACK_FILE,
                                    f"not a flax msgpack file ({type(error).__name__}: {error})"
                                    ) from error
    if not isinstance(state, dict):
        raise CheckpointFormatError(directory / MSGPACK_FILE, "expected a msgpack map at the top")
    return state


def load_t5x_checkpoint(path: str | os.PathLike, **config_overrides) -> T5XCheckpoint:
    """Read the parameters (float32, our tree) and step of a T5X legacy checkpoint directory."""
    directory = _checkpoint_dir(path)
    state = read_t5x_state(directory)
    version = int(state.get("version", 0))
    optimizer = state.get("optimizer", state)
    target = optimizer.get("target") if isinstance(optimizer, dict) else None
    if not isinstance(target, dict):
        raise CheckpointFormatError(directory / MSGPACK_FILE,
                                    "no 'optimizer/target' parameter tree found")
    if set(target) == {"params"}:  # some exporters nest the collection
        target = target["params"]
    step_value = optimizer.get("state", {}).get("step", 0) if isinstance(optimizer, dict) else 0
    step = int(np.asarray(step_value))

    flat = traverse_util.flatten_dict(target, is_leaf=lambda _, node: _is_tensorstore_spec(node))
    params: dict[str, np.ndarray] = {}
    for key_tuple, node in flat.items():
        key = "/".join(key_tuple)
        if _is_tensorstore_spec(node):
            array = _read_zarr(_relative_array_path(node, directory, key), key, directory)
        elif isinstance(node, np.ndarray) or np.isscalar(node):
            array = np.asarray(node)
        else:
            raise CheckpointFormatError(directory / MSGPACK_FILE,
                                        f"{key}: neither an array nor a TensorStore spec")
        if version < 3 and array.dtype == np.uint16:  # bfloat16 written as its bits
            array = array.view(ml_dtypes.bfloat16)
        params[key] = array
    config = infer_config(params, source=str(directory), **config_overrides)
    expected = param_shapes(config)
    unexpected = sorted(set(params) - set(expected))
    missing = sorted(set(expected) - set(params))
    if unexpected or missing:
        raise CheckpointFormatError(directory, f"parameters do not form a T5.1.1 model: unexpected "
                                               f"{unexpected[:5]}, missing {missing[:5]}")
    for key, shape in expected.items():
        if params[key].shape != shape:
            raise CheckpointFormatError(directory, f"{key}: shape {params[key].shape}, expected "
                                                   f"{shape} for the inferred config")
    dtype = config.parameter_dtype
    tree = traverse_util.unflatten_dict(
        {tuple(k.split("/")): np.ascontiguousarray(v.astype(dtype)) for k, v in params.items()})
    return T5XCheckpoint(params=tree, step=step, config=config, version=version)


def infer_config(flat_params: dict[str, np.ndarray], *, source: str = "params",
                 **overrides) -> T5Config:
    """The T5Config implied by parameter shapes ('a/b/kernel' keys); relative_attention_max_distance
    cannot be seen in the shapes and stays 128 unless overridden."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in flat_params:
            raise CheckpointFormatError(source, f"parameter {key} not found")
        return tuple(flat_params[key].shape)

    vocab, d_model = shape("token_embedder/embedding")
    heads, buckets = shape("encoder/relpos_bias/rel_embedding")
    joined = shape("encoder/layers_0/attention/query/kernel")[1]
    if joined % heads:
        raise CheckpointFormatError(source, f"query width {joined} is not a multiple of {heads} heads")
    d_ff = shape("encoder/layers_0/mlp/wi_0/kernel")[1]

    def count(stack: str) -> int:
        return len({k.split("/")[1] for k in flat_params
                    if k.startswith(f"{stack}/layers_")})

    fields = dict(vocab_size=vocab, d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=joined // heads,
                  num_encoder_layers=count("encoder"), num_decoder_layers=count("decoder"),
                  relative_attention_num_buckets=buckets,
                  logits_via_embedding="decoder/logits_dense/kernel" not in flat_params)
    fields.update(overrides)
    return T5Config(**fields)
