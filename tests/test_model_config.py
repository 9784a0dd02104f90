"""T5Config presets, the analytic parameter count, and the gin model files."""

from pathlib import Path

import gin
import jax
import pytest

from instructrec_jax.model import config as config_lib
from instructrec_jax.model.config import PUBLISHED_PARAMS, T5Config, num_params
from instructrec_jax.model.t5 import Transformer

GIN_DIR = Path(__file__).resolve().parents[1] / "gin" / "models"


def _initialised_size(config: T5Config) -> int:
    tokens = jax.ShapeDtypeStruct((1, 1), "int32")
    shapes = jax.eval_shape(lambda t: Transformer(config).init(jax.random.PRNGKey(0), t, t), tokens)
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.mark.parametrize("config", [
    T5Config(vocab_size=50, d_model=24, d_ff=40, num_heads=3, d_kv=5, num_encoder_layers=2,
             num_decoder_layers=3, relative_attention_num_buckets=12),
    T5Config(vocab_size=50, d_model=24, d_ff=40, num_heads=3, d_kv=5, num_encoder_layers=1,
             num_decoder_layers=1, logits_via_embedding=True),
    T5Config(vocab_size=50, d_model=24, d_ff=40, num_heads=3, d_kv=5, num_encoder_layers=1,
             num_decoder_layers=1, pointer_generator=True),
    T5Config.preset("tiny"),
    T5Config.preset("small"),
], ids=["uneven", "tied", "pointer", "tiny", "small"])
def test_num_params_equals_the_initialised_tree(config):
    assert num_params(config) == _initialised_size(config)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_presets_match_the_published_parameter_counts_within_2_percent(name):
    count = num_params(T5Config.preset(name))
    assert abs(count - PUBLISHED_PARAMS[name]) / PUBLISHED_PARAMS[name] < 0.02


def test_preset_sizes_are_t5_1_1():
    xl = T5Config.preset("xl")
    assert (xl.d_model, xl.d_ff, xl.num_heads, xl.d_kv, xl.num_encoder_layers,
            xl.num_decoder_layers, xl.vocab_size) == (2048, 5120, 32, 64, 24, 24, 32128)
    tiny = T5Config.preset("tiny", vocab_size=2432)
    assert (tiny.d_model, tiny.d_ff, tiny.num_heads, tiny.num_encoder_layers, tiny.vocab_size) == (
        256, 1024, 4, 4, 2432)


@pytest.mark.parametrize("bad", [dict(d_model=0), dict(remat_policy="sometimes"),
                                 dict(dtype="float33"), dict(dropout_rate=1.0)])
def test_invalid_config_values_are_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        T5Config(**bad)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="xxl"):
        T5Config.preset("huge")


@pytest.mark.parametrize("name", config_lib.preset_names())
def test_gin_model_file_builds_the_preset_model(name):
    gin.clear_config()
    try:
        gin.parse_config_file(str(GIN_DIR / f"flan_t5_{name}.gin"))
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        assert gin.query_parameter("%NUM_EMBEDDINGS") == 32128
        assert gin.query_parameter("%DROPOUT_RATE") == 0.1
    finally:
        gin.clear_config()
    activation = "float32" if name == "tiny" else "bfloat16"
    assert model.config == T5Config.preset(name, dtype=activation)
    assert (model.z_loss, model.label_smoothing, model.loss_normalizing_factor) == (1e-4, 0.0, None)


def test_gin_macros_override_vocabulary_dropout_and_loss(tmp_path):
    gin.clear_config()
    try:
        gin.parse_config_files_and_bindings(
            [str(GIN_DIR / "flan_t5_tiny.gin")],
            ["NUM_EMBEDDINGS = 2432", "DROPOUT_RATE = 0.0", "Z_LOSS = 0.0",
             "LOSS_NORMALIZING_FACTOR = 'NUM_REAL_TARGET_TOKENS'", "REMAT_POLICY = 'full'"])
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    finally:
        gin.clear_config()
    assert model.config.vocab_size == 2432 and model.config.dropout_rate == 0.0
    assert model.config.remat_policy == "full"
    assert model.z_loss == 0.0 and model.loss_normalizing_factor == "NUM_REAL_TARGET_TOKENS"
