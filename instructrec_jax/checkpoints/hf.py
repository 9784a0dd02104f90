"""Hugging Face Flan-T5 checkpoints (config.json + safetensors) to and from our parameter tree.

Reading: `model.safetensors`, or the shards listed by `model.safetensors.index.json`. HF stores 2-D
weights as [out, in] (ours are [in, out]) and the relative position tables as [buckets, heads]
(ours [heads, buckets]) in block 0 of each stack.

Output projection: Flan-T5 (`tie_word_embeddings: false`) has its own `lm_head.weight` and no
logit scaling. A tied checkpoint (no `lm_head.weight`) whose config scales the decoder output
by d_model**-0.5 (T5 1.0 style) loads as `logits_via_embedding=True`; an unscaled one loads
with `logits_dense` set to the embedding. Only the gated-GELU feed-forward (T5.1.1 / Flan) is
supported.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util
from safetensors import safe_open
from safetensors.numpy import save_file

from instructrec_jax.atomic import atomic_directory
from instructrec_jax.checkpoints import CheckpointFormatError
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.t5 import param_shapes

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"
# Present in some HF checkpoints, never needed: tied copies of `shared.weight`, and a cross-attention
# position table that T5 never uses.
_IGNORED = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
            "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}


def tensor_map(config: T5Config) -> list[tuple[str, str, bool]]:
    """(HF tensor name, our 'a/b/kernel' path, transposed?) for every stack parameter.

    The output projection is handled separately (it depends on tying and scaling).
    """
    rows: list[tuple[str, str, bool]] = [("shared.weight", "token_embedder/embedding", False)]
    attention = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))
    mlp = ("wi_0", "wi_1", "wo")
    for stack, layers in (("encoder", config.num_encoder_layers),
                          ("decoder", config.num_decoder_layers)):
        rows.append((f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                     f"{stack}/relpos_bias/rel_embedding", True))
        for i in range(layers):
            hf, ours = f"{stack}.block.{i}.layer", f"{stack}/layers_{i}"
            if stack == "encoder":
                parts = [(0, "SelfAttention", "attention", "pre_attention_layer_norm")]
                mlp_index, mlp_norm = 1, "pre_mlp_layer_norm"
            else:
                parts = [(0, "SelfAttention", "self_attention", "pre_self_attention_layer_norm"),
                         (1, "EncDecAttention", "encoder_decoder_attention",
                          "pre_cross_attention_layer_norm")]
                mlp_index, mlp_norm = 2, "pre_mlp_layer_norm"
            for index, hf_name, our_name, norm in parts:
                for hf_proj, our_proj in attention:
                    rows.append((f"{hf}.{index}.{hf_name}.{hf_proj}.weight",
                                 f"{ours}/{our_name}/{our_proj}/kernel", True))
                rows.append((f"{hf}.{index}.layer_norm.weight", f"{ours}/{norm}/scale", False))
            for name in mlp:
                rows.append((f"{hf}.{mlp_index}.DenseReluDense.{name}.weight",
                             f"{ours}/mlp/{name}/kernel", True))
            rows.append((f"{hf}.{mlp_index}.layer_norm.weight", f"{ours}/{mlp_norm}/scale", False))
        norm_name = "encoder_norm" if stack == "encoder" else "decoder_norm"
        rows.append((f"{stack}.final_layer_norm.weight", f"{stack}/{norm_name}/scale", False))
    return rows


def _scales_decoder_output(hf_config: Mapping[str, Any]) -> bool:
    """Whether HF multiplies the decoder output by d_model**-0.5 before the output projection."""
    if "scale_decoder_outputs" in hf_config:  # written by transformers >= 5
        return bool(hf_config["scale_decoder_outputs"])
    return bool(hf_config.get("tie_word_embeddings", True))


def config_from_hf(hf_config: Mapping[str, Any], *, source: str = CONFIG_FILE,
                   logits_via_embedding: bool = False, **overrides) -> T5Config:
    """Our T5Config for an HF T5 config dict (gated-GELU only)."""
    model_type = hf_config.get("model_type", "t5")
    if model_type != "t5":
        raise CheckpointFormatError(source, f"model_type is {model_type!r}, expected 't5'")
    projection = hf_config.get("feed_forward_proj", "relu")
    if projection != "gated-gelu":
        raise CheckpointFormatError(
            source, f"feed_forward_proj is {projection!r}; only 'gated-gelu' (T5.1.1 / Flan-T5) "
                    "checkpoints are supported")
    try:
        fields = dict(
            vocab_size=int(hf_config["vocab_size"]), d_model=int(hf_config["d_model"]),
            d_ff=int(hf_config["d_ff"]), num_heads=int(hf_config["num_heads"]),
            d_kv=int(hf_config["d_kv"]), num_encoder_layers=int(hf_config["num_layers"]),
            num_decoder_layers=int(hf_config.get("num_decoder_layers") or hf_config["num_layers"]),
            relative_attention_num_buckets=int(hf_config.get("relative_attention_num_buckets", 32)),
            relative_attention_max_distance=int(hf_config.get("relative_attention_max_distance",
                                                              128)),
            dropout_rate=float(hf_config.get("dropout_rate", 0.1)),
            layer_norm_epsilon=float(hf_config.get("layer_norm_epsilon", 1e-6)),
            logits_via_embedding=logits_via_embedding)
    except KeyError as error:
        raise CheckpointFormatError(source, f"missing key {error.args[0]!r}") from None
    fields.update(overrides)
    return T5Config(**fields)


def hf_config_dict(config: T5Config) -> dict[str, Any]:
    """An HF `T5Config` dict (config.json) describing `config`."""
    if config.pointer_generator:
        raise ValueError("a model with T5Config.pointer_generator has no Hugging Face T5 form "
                         "(transformers' T5 has no copy head)")
    tied = config.logits_via_embedding
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "model_type": "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_ff": config.d_ff,
        "d_kv": config.d_kv,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout_rate,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu",
        "dense_act_fn": "gelu_new",
        "is_gated_act": True,
        "is_encoder_decoder": True,
        "tie_word_embeddings": tied,
        "scale_decoder_outputs": tied,
        "use_cache": True,
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "dtype": "float32",
    }


def _read_safetensors_file(path: Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CheckpointFormatError(path, "safetensors file not found")
    out = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                if names is None or name in names:
                    out[name] = handle.get_tensor(name)
    except Exception as error:  # safetensors raises its own SafetensorError for corrupt files
        raise CheckpointFormatError(path, f"not a readable safetensors file ({error})") from error
    return out


def read_safetensors(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of an HF checkpoint directory, single-file or sharded (by its index json)."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise CheckpointFormatError(index_path, f"expected JSON with a 'weight_map' object "
                                                    f"({error})") from error
        if not isinstance(weight_map, dict):
            raise CheckpointFormatError(index_path, "'weight_map' must map tensor names to files")
        tensors: dict[str, np.ndarray] = {}
        by_file: dict[str, set[str]] = {}
        for name, filename in weight_map.items():
            if Path(filename).name != filename:
                raise CheckpointFormatError(index_path, f"shard name {filename!r} for {name!r} must "
                                                        "be a file name inside the directory")
            by_file.setdefault(filename, set()).add(name)
        for filename, names in sorted(by_file.items()):
            found = _read_safetensors_file(directory / filename, names)
            missing = sorted(names - set(found))
            if missing:
                raise CheckpointFormatError(directory / filename,
                                            f"index lists tensors this shard lacks: {missing[:5]}")
            tensors.update(found)
        return tensors
    if (directory / SINGLE_FILE).is_file():
        return _read_safetensors_file(directory / SINGLE_FILE)
    raise CheckpointFormatError(directory, f"neither {SINGLE_FILE} nor {INDEX_FILE} found")


def load_hf_checkpoint(path: str | os.PathLike, **config_overrides) -> tuple[T5Config, dict]:
    """(config, params) from an HF Flan-T5 directory; params are float32 numpy arrays in our tree.

    `config_overrides` replace T5Config fields (e.g. dtype='float32', dropout_rate=0.0).
    """
    directory = Path(path)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointFormatError(directory, f"{CONFIG_FILE} not found")
    try:
        hf_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckpointFormatError(config_path, f"invalid JSON ({error})") from error
    config_from_hf(hf_config, source=str(config_path))  # reject unsupported models before reading
    tensors = read_safetensors(directory)
    has_head = "lm_head.weight" in tensors
    scaled = _scales_decoder_output(hf_config)
    config = config_from_hf(hf_config, source=str(config_path),
                            logits_via_embedding=scaled and not has_head, **config_overrides)
    if config.pointer_generator:
        raise CheckpointFormatError(directory, "a Hugging Face T5 checkpoint has no pointer-generator "
                                               "weights; load it without pointer_generator=True "
                                               "(the trainer adds a fresh head with "
                                               "CheckpointConfig.initial_checkpoint_strict = False)")
    expected = param_shapes(config)
    dtype = config.parameter_dtype

    flat: dict[str, np.ndarray] = {}
    rows = tensor_map(config)
    missing = [hf for hf, _, _ in rows if hf not in tensors]
    if missing:
        raise CheckpointFormatError(directory, f"{len(missing)} tensors missing, e.g. {missing[:5]} "
                                               "(does config.json match the weights?)")
    for hf, ours, transpose in rows:
        array = tensors[hf]
        array = array.T if transpose else array
        flat[ours] = np.ascontiguousarray(array.astype(dtype))
    if not config.logits_via_embedding:
        head = tensors["lm_head.weight"] if has_head else tensors["shared.weight"]
        kernel = head.astype(np.float32).T
        if scaled:  # fold HF's d_model**-0.5 output scaling into the untied kernel
            kernel = kernel * np.float32(config.d_model ** -0.5)
        flat["decoder/logits_dense/kernel"] = np.ascontiguousarray(kernel.astype(dtype))
    for copy in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if copy in tensors and not np.array_equal(tensors[copy], tensors["shared.weight"]):
            raise CheckpointFormatError(directory, f"{copy} differs from shared.weight; this model "
                                                   "has one embedding shared by both stacks")
    used = {hf for hf, _, _ in rows} | {"lm_head.weight"}
    unexpected = sorted(set(tensors) - used - _IGNORED)
    if unexpected:
        raise CheckpointFormatError(directory, f"{len(unexpected)} unexpected tensors, e.g. "
                                               f"{unexpected[:5]} (not a T5.1.1 / Flan-T5 model?)")
    for key, shape in expected.items():
        if flat[key].shape != shape:
            raise CheckpointFormatError(directory, f"{key}: shape {flat[key].shape}, config.json "
                                                   f"implies {shape}")
    return config, traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _flat_numpy(params: Any) -> dict[str, np.ndarray]:
    import flax.linen as nn
    import jax

    params = nn.meta.unbox(params)
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(entry.key) for entry in path): np.asarray(jax.device_get(leaf))
            for path, leaf in leaves}


def save_hf_checkpoint(config: T5Config, params: Any, path: str | os.PathLike, *,
                       max_shard_bytes: int | None = None, overwrite: bool = False) -> Path:
    """Write `params` as an HF Flan-T5 directory that `T5ForConditionalGeneration.from_pretrained`
    loads: config.json plus model.safetensors, or shards + index json when `max_shard_bytes` is
    given. Float32 tensors; the directory appears atomically."""
    hf_config = hf_config_dict(config)  # refuses a config transformers cannot express
    flat = _flat_numpy(params)
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(flat))
    wrong = sorted(k for k in set(expected) & set(flat) if flat[k].shape != expected[k])
    if missing or wrong:
        raise ValueError(f"save_hf_checkpoint: params do not match the config: missing "
                         f"{missing[:5]}, wrong shapes {wrong[:5]}")
    tensors: dict[str, np.ndarray] = {}
    for hf, ours, transpose in tensor_map(config):
        array = flat[ours].astype(np.float32)
        tensors[hf] = np.ascontiguousarray(array.T if transpose else array)
    if not config.logits_via_embedding:
        tensors["lm_head.weight"] = np.ascontiguousarray(
            flat["decoder/logits_dense/kernel"].astype(np.float32).T)

    with atomic_directory(path, overwrite=overwrite) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n",
                                       encoding="utf-8")
        metadata = {"format": "pt"}
        if max_shard_bytes is None:
            save_file(tensors, str(tmp / SINGLE_FILE), metadata=metadata)
        else:
            shards: list[dict[str, np.ndarray]] = [{}]
            size = 0
            for name, array in tensors.items():
                if shards[-1] and size + array.nbytes > max_shard_bytes:
                    shards.append({})
                    size = 0
                shards[-1][name] = array
                size += array.nbytes
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(tmp / filename), metadata=metadata)
                weight_map.update({name: filename for name in shard})
            index = {"metadata": {"total_size": int(sum(a.nbytes for a in tensors.values()))},
                     "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return Path(path)
