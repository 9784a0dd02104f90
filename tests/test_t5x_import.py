"""Importing T5X's legacy checkpoint format: a msgpack `checkpoint` file whose partitioned arrays are
replaced by TensorStore specs pointing at zarr folders named after the parameter path."""

import jax
import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization, traverse_util

from instructrec_jax.checkpoints import CheckpointFormatError
from instructrec_jax.checkpoints.t5x_legacy import load_t5x_checkpoint
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.t5 import param_shapes

CONFIG = T5Config(vocab_size=48, d_model=16, d_ff=24, num_heads=2, d_kv=4, num_encoder_layers=2,
                  num_decoder_layers=1, relative_attention_num_buckets=8, dtype="float32")
STEP = 1_138_000


def _random_params():
    rng = np.random.default_rng(0)
    return {key: rng.normal(size=shape).astype(np.float32)
            for key, shape in param_shapes(CONFIG).items()}


def _spec(name, array, driver="file"):
    """A TensorStore spec as T5X writes it into the msgpack (relative path, dummy GCS bucket)."""
    kvstore = {"driver": driver, "path": name}
    if driver == "gcs":
        kvstore["bucket"] = "t5x-dummy-bucket"
    return {"driver": "zarr", "dtype": np.dtype(array.dtype).name, "kvstore": kvstore,
            "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                         "chunks": np.array(array.shape)}}


def _write_zarr(directory, name, array):
    store = ts.open({"driver": "zarr", "kvstore": {"driver": "file", "path": str(directory / name)},
                     "metadata": {"compressor": {"id": "gzip"}, "shape": list(array.shape),
                                  "chunks": list(array.shape),
                                  "dtype": "<f4" if array.dtype == np.float32 else "<u2"}},
                    create=True).result()
    store.write(array).result()


def write_t5x_checkpoint(directory, flat_params, *, version=3, inline=(), gcs=(), step=STEP):
    """T5X's layout: zarr folders `target.<path with dots>` plus a msgpack `checkpoint` file."""
    directory.mkdir(parents=True)
    target = {}
    for key, array in flat_params.items():
        name = "target." + key.replace("/", ".")
        if key in inline:
            target[tuple(key.split("/"))] = array
            continue
        _write_zarr(directory, name, array)
        target[tuple(key.split("/"))] = _spec(name, array, "gcs" if key in gcs else "file")
    state = {"version": version,
             "optimizer": {"target": traverse_util.unflatten_dict(target),
                           "state": {"step": np.int64(step), "param_states": {}}}}
    (directory / "checkpoint").write_bytes(serialization.to_bytes(state))
    return directory


def test_t5x_checkpoint_loads_every_parameter_exactly(tmp_path):
    flat = _random_params()
    inline = ("encoder/encoder_norm/scale", "decoder/layers_0/pre_mlp_layer_norm/scale")
    gcs = ("decoder/logits_dense/kernel",)
    directory = write_t5x_checkpoint(tmp_path / "checkpoint_1138000", flat, inline=inline, gcs=gcs)
    assert (directory / "target.encoder.layers_0.attention.query.kernel" / ".zarray").is_file()
    loaded = load_t5x_checkpoint(directory)
    assert loaded.step == STEP and loaded.version == 3
    assert loaded.config == CONFIG.replace(dtype="bfloat16")  # inferred from the shapes
    got = traverse_util.flatten_dict(loaded.params, sep="/")
    assert set(got) == set(flat)
    for key, array in flat.items():
        np.testing.assert_array_equal(got[key], array, err_msg=key)
        assert got[key].dtype == np.float32


def test_the_msgpack_file_path_is_accepted_too(tmp_path):
    directory = write_t5x_checkpoint(tmp_path / "ckpt", _random_params())
    loaded = load_t5x_checkpoint(directory / "checkpoint", dtype="float32")
    assert loaded.config == CONFIG


def test_version_2_bfloat16_arrays_stored_as_uint16_are_restored(tmp_path):
    flat = _random_params()
    bf16 = flat["encoder/layers_1/mlp/wo/kernel"].astype(ml_dtypes.bfloat16)
    flat["encoder/layers_1/mlp/wo/kernel"] = bf16.view(np.uint16)
    directory = write_t5x_checkpoint(tmp_path / "v2", flat, version=2)
    loaded = load_t5x_checkpoint(directory)
    np.testing.assert_array_equal(loaded.params["encoder"]["layers_1"]["mlp"]["wo"]["kernel"],
                                  bf16.astype(np.float32))


def test_loaded_params_run_in_the_model(tmp_path):
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel, example_batch

    directory = write_t5x_checkpoint(tmp_path / "ckpt", _random_params())
    loaded = load_t5x_checkpoint(directory, dtype="float32")
    model = EncoderDecoderModel(loaded.config)
    scores = model.score_batch(loaded.params, example_batch(vocab_size=CONFIG.vocab_size))
    assert scores.shape == (2,) and np.all(np.isfinite(jax.device_get(scores)))


def test_array_path_outside_the_checkpoint_is_refused(tmp_path):
    flat = _random_params()
    directory = write_t5x_checkpoint(tmp_path / "ckpt", flat)
    state = serialization.msgpack_restore((directory / "checkpoint").read_bytes())
    state["optimizer"]["target"]["token_embedder"]["embedding"]["kvstore"]["path"] = "../../etc"
    (directory / "checkpoint").write_bytes(serialization.to_bytes(state))
    with pytest.raises(CheckpointFormatError, match="leaves the checkpoint directory"):
        load_t5x_checkpoint(directory)


def test_missing_zarr_folder_names_the_parameter(tmp_path):
    import shutil

    directory = write_t5x_checkpoint(tmp_path / "ckpt", _random_params())
    shutil.rmtree(directory / "target.decoder.layers_0.mlp.wi_1.kernel")
    with pytest.raises(CheckpointFormatError, match="decoder/layers_0/mlp/wi_1/kernel"):
        load_t5x_checkpoint(directory)


def test_non_t5_parameter_tree_is_rejected(tmp_path):
    flat = _random_params()
    flat["encoder/layers_0/mlp/wi/kernel"] = np.zeros((16, 24), np.float32)  # T5 1.0 relu MLP
    directory = write_t5x_checkpoint(tmp_path / "ckpt", flat)
    with pytest.raises(CheckpointFormatError, match="unexpected"):
        load_t5x_checkpoint(directory)


def test_garbage_msgpack_is_a_format_error(tmp_path):
    directory = tmp_path / "bad"
    directory.mkdir()
    (directory / "checkpoint").write_bytes(b"\xc1\x00 not msgpack")
    with pytest.raises(CheckpointFormatError):
        load_t5x_checkpoint(directory)
