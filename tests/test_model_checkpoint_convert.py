"""`instructrec convert-checkpoint` between HF safetensors, T5X legacy and our Orbax params layout."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from instructrec_jax.checkpoints import convert, hf
from instructrec_jax.model.config import T5Config
from instructrec_jax.model.t5 import param_shapes
from test_t5x_import import write_t5x_checkpoint

CONFIG = T5Config(vocab_size=40, d_model=16, d_ff=32, num_heads=2, d_kv=8, num_encoder_layers=1,
                  num_decoder_layers=2, relative_attention_max_distance=64, dtype="float32")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    flat = {k: rng.normal(size=s).astype(np.float32) for k, s in param_shapes(CONFIG).items()}
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _assert_same(a, b):
    flat_a = traverse_util.flatten_dict(jax.device_get(a), sep="/")
    flat_b = traverse_util.flatten_dict(jax.device_get(b), sep="/")
    assert set(flat_a) == set(flat_b)
    for key in flat_a:
        np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=key)


def test_hf_to_ours_to_hf_round_trip_keeps_every_tensor(tmp_path):
    params = _params()
    hf.save_hf_checkpoint(CONFIG, params, tmp_path / "hf")
    assert convert.main(["--from", "hf", "--to", "ours", str(tmp_path / "hf"),
                         str(tmp_path / "ours")]) == 0
    assert (tmp_path / "ours" / "params").is_dir()
    config, restored = convert.load_params(tmp_path / "ours")
    assert config == CONFIG.replace(dtype="bfloat16")  # activation dtype is not stored by HF
    _assert_same(restored, params)
    assert convert.main(["--from", "ours", "--to", "hf", str(tmp_path / "ours"),
                         str(tmp_path / "hf2")]) == 0
    a = hf.read_safetensors(tmp_path / "hf")
    b = hf.read_safetensors(tmp_path / "hf2")
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert json.loads((tmp_path / "hf2" / "config.json").read_text())[
        "relative_attention_max_distance"] == 64


def test_t5x_to_ours_keeps_params_and_infers_config(tmp_path):
    flat = traverse_util.flatten_dict(_params(1), sep="/")
    write_t5x_checkpoint(tmp_path / "t5x", flat)
    config, out = convert.convert("t5x", "ours", tmp_path / "t5x", tmp_path / "ours")
    assert config.d_model == 16 and config.num_decoder_layers == 2
    _, restored = convert.load_params(out)
    _assert_same(restored, traverse_util.unflatten_dict({tuple(k.split("/")): v
                                                         for k, v in flat.items()}))


def test_ours_without_config_file_infers_the_config_for_hf_export(tmp_path):
    params = _params(2)
    convert.save_params(params, tmp_path / "ours")  # no config
    config, _ = convert.convert("ours", "hf", tmp_path / "ours", tmp_path / "hf")
    assert (config.d_model, config.num_heads, config.d_kv) == (16, 2, 8)
    _, loaded = hf.load_hf_checkpoint(tmp_path / "hf")
    _assert_same(loaded, params)


def test_existing_destination_is_refused_without_overwrite(tmp_path, capsys):
    hf.save_hf_checkpoint(CONFIG, _params(), tmp_path / "hf")
    (tmp_path / "taken").mkdir()
    assert convert.main(["--from", "hf", "--to", "ours", str(tmp_path / "hf"),
                         str(tmp_path / "taken")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_missing_source_is_reported_not_raised(tmp_path, capsys):
    assert convert.main(["--from", "hf", "--to", "ours", str(tmp_path / "nope"),
                         str(tmp_path / "out")]) == 1
    assert "config.json not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_format_is_a_usage_error():
    with pytest.raises(SystemExit):
        convert.main(["--from", "pickle", "--to", "ours", "a", "b"])
