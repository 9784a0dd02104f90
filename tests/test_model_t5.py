"""The Flan-T5 network: T5X names and axes, T5.1.1 numerics, packing, causality, cache, dropout."""

import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from instructrec_jax.model.config import T5Config
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel
from instructrec_jax.model.t5 import (Attention, Encoder, GatedMlp, RMSNorm, Transformer,
                                      random_params, relative_position_bucket)

CONFIG = T5Config(vocab_size=40, d_model=32, d_ff=48, num_heads=2, d_kv=8, num_encoder_layers=2,
                  num_decoder_layers=2, relative_attention_num_buckets=8,
                  relative_attention_max_distance=16, dropout_rate=0.1, dtype="float32")
ENC_LEN, DEC_LEN, BATCH = 14, 9, 3


@pytest.fixture(scope="module")
def model():
    return EncoderDecoderModel(CONFIG)


@pytest.fixture(scope="module")
def boxed_params(model):
    """The initialised tree's structure, shapes and axes (traced, not computed)."""
    return jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0)))


@pytest.fixture(scope="module")
def params():
    return random_params(CONFIG)


@pytest.fixture(scope="module")
def forward(model):
    """One compiled teacher-forced forward (segment ids always given: 1 = unpacked)."""

    @jax.jit
    def run(params, enc, dec_in, dec_tgt, enc_seg, dec_seg, rng=None):
        batch = dict(encoder_input_tokens=enc, decoder_input_tokens=dec_in,
                     decoder_target_tokens=dec_tgt, encoder_segment_ids=enc_seg,
                     decoder_segment_ids=dec_seg)
        return model.logits(params, batch, rng)

    return run


def _example(seed, enc_len, dec_len):
    rng = np.random.default_rng(seed)
    targets = rng.integers(2, CONFIG.vocab_size, dec_len)
    targets[-1] = 1
    return rng.integers(2, CONFIG.vocab_size, enc_len), targets


def _place(rows):
    """rows: list of lists of (inputs, targets) -> packed int32 arrays with segment ids."""
    arrays = {k: np.zeros((BATCH, n), np.int32) for k, n in (
        ("enc", ENC_LEN), ("enc_seg", ENC_LEN), ("dec_in", DEC_LEN), ("dec_tgt", DEC_LEN),
        ("dec_seg", DEC_LEN))}
    spans = []
    for row, examples in enumerate(rows):
        e = d = 0
        for segment, (inputs, targets) in enumerate(examples, start=1):
            arrays["enc"][row, e:e + len(inputs)] = inputs
            arrays["enc_seg"][row, e:e + len(inputs)] = segment
            arrays["dec_tgt"][row, d:d + len(targets)] = targets
            arrays["dec_in"][row, d + 1:d + len(targets)] = targets[:-1]
            arrays["dec_seg"][row, d:d + len(targets)] = segment
            spans.append((row, slice(d, d + len(targets))))
            e, d = e + len(inputs), d + len(targets)
    return arrays, spans


def _run(forward, params, arrays, rng=None):
    return np.asarray(forward(params, arrays["enc"], arrays["dec_in"], arrays["dec_tgt"],
                              arrays["enc_seg"], arrays["dec_seg"], rng))


def test_parameter_tree_uses_t5x_names_shapes_and_logical_axes(boxed_params):
    flat = traverse_util.flatten_dict(boxed_params, sep="/")
    d, inner, ff, vocab = 32, 16, 48, 40
    expected = {
        "token_embedder/embedding": ((vocab, d), ("vocab", "embed")),
        "encoder/relpos_bias/rel_embedding": ((2, 8), ("heads", "relpos_buckets")),
        "encoder/layers_1/pre_attention_layer_norm/scale": ((d,), ("embed",)),
        "encoder/layers_1/attention/query/kernel": ((d, inner), ("embed", "joined_kv")),
        "encoder/layers_1/attention/out/kernel": ((inner, d), ("joined_kv", "embed")),
        "encoder/layers_0/pre_mlp_layer_norm/scale": ((d,), ("embed",)),
        "encoder/layers_0/mlp/wi_0/kernel": ((d, ff), ("embed", "mlp")),
        "encoder/layers_0/mlp/wi_1/kernel": ((d, ff), ("embed", "mlp")),
        "encoder/layers_0/mlp/wo/kernel": ((ff, d), ("mlp", "embed")),
        "encoder/encoder_norm/scale": ((d,), ("embed",)),
        "decoder/relpos_bias/rel_embedding": ((2, 8), ("heads", "relpos_buckets")),
        "decoder/layers_1/pre_self_attention_layer_norm/scale": ((d,), ("embed",)),
        "decoder/layers_1/self_attention/key/kernel": ((d, inner), ("embed", "joined_kv")),
        "decoder/layers_1/pre_cross_attention_layer_norm/scale": ((d,), ("embed",)),
        "decoder/layers_1/encoder_decoder_attention/value/kernel": ((d, inner),
                                                                    ("embed", "joined_kv")),
        "decoder/layers_1/pre_mlp_layer_norm/scale": ((d,), ("embed",)),
        "decoder/decoder_norm/scale": ((d,), ("embed",)),
        "decoder/logits_dense/kernel": ((d, vocab), ("embed", "vocab")),
    }
    for key, (shape, axes) in expected.items():
        assert flat[key].value.shape == shape, key
        assert flat[key].names == axes, key
    assert all(isinstance(v, nn.LogicallyPartitioned) for v in flat.values())
    # exactly one relative position table per stack
    assert sum("rel_embedding" in k for k in flat) == 2


def test_activations_carry_logical_sharding_constraints(model, params):
    arrays, _ = _place([[_example(0, 5, 3)]])
    batch = dict(encoder_input_tokens=arrays["enc"], decoder_input_tokens=arrays["dec_in"],
                 decoder_target_tokens=arrays["dec_tgt"])
    mesh = jax.make_mesh((1, 1), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = [("batch", "data"), ("vocab", "model"), ("mlp", "model"), ("heads", "model"),
             ("joined_kv", "model"), ("embed", None), ("kv", None), ("length", None)]
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        jaxpr = str(jax.make_jaxpr(lambda p: model.logits(p, batch))(params))
    specs = set(re.findall(r"P\([^)]*\)", jaxpr))
    assert "P('data', None, None)" in specs  # (batch, length, embed)
    assert "P('data', None, 'model')" in specs  # (batch, length, mlp) and (.., vocab)
    assert "P('data', None, 'model', None)" in specs  # (batch, length, heads, kv)


def test_rms_norm_scales_without_mean_or_bias_in_float32():
    x = np.random.default_rng(0).normal(3.0, 2.0, (2, 3, 8)).astype(np.float32)
    norm = RMSNorm(epsilon=1e-6)
    variables = norm.init(jax.random.PRNGKey(0), x)
    scale = np.linspace(0.5, 2.0, 8).astype(np.float32)
    got = norm.apply({"params": {"scale": scale}}, x)
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6) * scale
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.all(nn.unbox(variables["params"]["scale"]) == 1.0)
    bf16 = RMSNorm(dtype=jnp.bfloat16).apply({"params": {"scale": scale}}, x.astype(jnp.bfloat16))
    assert bf16.dtype == jnp.bfloat16


def _reference_bucket(relative, bidirectional, num_buckets, max_distance):
    """T5's bucketing written out with math.log (float64) for values off the log boundaries."""
    n = -relative
    offset = 0
    if bidirectional:
        num_buckets //= 2
        offset = num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return offset + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return offset + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_follow_t5(bidirectional):
    relative = np.array([0, -1, 1, -7, 7, -9, -20, 20, -50, -127, -500, 500, 3, 15, -15])
    got = np.asarray(relative_position_bucket(jnp.asarray(relative), bidirectional=bidirectional,
                                              num_buckets=32, max_distance=128))
    expected = [_reference_bucket(int(r), bidirectional, 32, 128) for r in relative]
    np.testing.assert_array_equal(got, expected)
    if bidirectional:  # keys after the query use the upper half of the table
        assert got[2] == 17 and got[11] == 31 and got[10] == 15
    else:  # causal: every future key shares bucket 0 (it is masked anyway)
        assert got[2] == 0 and got[11] == 0 and got[10] == 31


def test_attention_logits_are_not_scaled_by_sqrt_d_kv():
    cfg = CONFIG
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 5, cfg.d_model)).astype(np.float32)
    bias = rng.normal(size=(1, cfg.num_heads, 5, 5)).astype(np.float32)
    attention = Attention(cfg)
    params = nn.unbox(attention.init(jax.random.PRNGKey(0), x, x, (bias,),
                                     deterministic=True)["params"])
    got = attention.apply({"params": params}, x, x, (bias,), deterministic=True)
    h, dk = cfg.num_heads, cfg.d_kv
    q, k, v = (np.einsum("bld,dj->blj", x, params[n]["kernel"]).reshape(1, 5, h, dk)
               for n in ("query", "key", "value"))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) + bias  # no 1/sqrt(d_kv)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(1, 5, h * dk)
    np.testing.assert_allclose(got, context @ params["out"]["kernel"], rtol=1e-5, atol=1e-6)


def test_mlp_is_gated_gelu_with_tanh_approximation():
    x = np.random.default_rng(2).normal(size=(2, 3, CONFIG.d_model)).astype(np.float32)
    mlp = GatedMlp(CONFIG)
    params = nn.unbox(mlp.init(jax.random.PRNGKey(0), x, deterministic=True)["params"])
    got = mlp.apply({"params": params}, x, deterministic=True)
    a = x @ params["wi_0"]["kernel"]
    gelu = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
    expected = (gelu * (x @ params["wi_1"]["kernel"])) @ params["wo"]["kernel"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_initialisers_use_t5x_scales():
    cfg = T5Config(vocab_size=64, d_model=256, d_ff=512, num_heads=4, d_kv=64,
                   num_encoder_layers=1, num_decoder_layers=1, dtype="float32")
    p = traverse_util.flatten_dict(nn.unbox(EncoderDecoderModel(cfg).init_params(
        jax.random.PRNGKey(3))), sep="/")
    std = lambda key: float(np.std(p[key]))  # noqa: E731
    layer = "encoder/layers_0/"
    assert std(layer + "attention/query/kernel") == pytest.approx((256 * 64) ** -0.5, rel=0.05)
    assert std(layer + "attention/key/kernel") == pytest.approx(256 ** -0.5, rel=0.05)
    assert std(layer + "attention/out/kernel") == pytest.approx(256 ** -0.5, rel=0.05)
    assert std(layer + "mlp/wi_0/kernel") == pytest.approx(256 ** -0.5, rel=0.05)
    assert std(layer + "mlp/wo/kernel") == pytest.approx(512 ** -0.5, rel=0.05)
    assert std("token_embedder/embedding") == pytest.approx(1.0, rel=0.05)
    assert np.all(p[layer + "pre_mlp_layer_norm/scale"] == 1.0)
    relpos = p["encoder/relpos_bias/rel_embedding"]  # uniform, fan_avg of [heads, buckets]
    assert np.abs(relpos).max() <= math.sqrt(3.0 / ((4 + 32) / 2))


def test_packed_examples_give_the_same_logits_as_each_example_alone(forward, params):
    a, b, c = _example(1, 6, 4), _example(2, 8, 5), _example(3, 11, 7)
    packed, spans = _place([[a, b], [c]])
    packed_logits = _run(forward, params, packed)
    for example, (row, span) in zip((a, b, c), spans):
        alone, [(_, alone_span)] = _place([[example]])
        expected = _run(forward, params, alone)[0, alone_span]
        np.testing.assert_allclose(packed_logits[row, span], expected, atol=1e-5)


def test_decoder_is_causal(forward, params):
    arrays, _ = _place([[_example(4, 10, 9)]])
    base = _run(forward, params, arrays)
    changed = {k: v.copy() for k, v in arrays.items()}
    changed["dec_in"][0, 5] = (changed["dec_in"][0, 5] + 7) % CONFIG.vocab_size + 2
    after = _run(forward, params, changed)
    np.testing.assert_allclose(after[0, :5], base[0, :5], atol=1e-6)
    assert np.abs(after[0, 5:] - base[0, 5:]).max() > 1e-3


def assert_cached_decoding_matches(model, params, arrays, full):
    """Step-by-step decoding with the cache gives teacher forcing's logits `full` at every step."""
    encoded = model.encode(params, arrays["enc"])
    step_fn, cache = model.decoder_step_fn(params, encoded, arrays["enc"], DEC_LEN)
    for t in range(DEC_LEN):
        logits, cache = step_fn(arrays["dec_in"][:, t:t + 1], cache)
        np.testing.assert_allclose(np.asarray(logits), full[:, t], atol=2e-5, err_msg=f"step {t}")


def test_cached_decoding_matches_teacher_forcing_step_by_step(model, forward, params):
    arrays, _ = _place([[_example(5, 9, 9)], [_example(6, 14, 9)], [_example(7, 3, 9)]])
    assert_cached_decoding_matches(model, params, arrays, _run(forward, params, arrays))


def test_dropout_acts_only_when_enabled(forward, params):
    arrays, _ = _place([[_example(8, 10, 6)]])
    plain = _run(forward, params, arrays)
    np.testing.assert_array_equal(_run(forward, params, arrays), plain)
    # RBG keys compile much faster than threefry on CPU; the model takes either kind.
    first = _run(forward, params, arrays, jax.random.key(1, impl="unsafe_rbg"))
    second = _run(forward, params, arrays, jax.random.key(2, impl="unsafe_rbg"))
    assert np.abs(first - plain).max() > 1e-3 and np.abs(first - second).max() > 1e-3


def test_remat_policies_change_nothing_numerically():
    # One encoder stack is enough: both stacks wrap their layers the same way.
    x = jnp.asarray(np.random.default_rng(9).normal(size=(2, 6, CONFIG.d_model)), jnp.float32)
    mask = jnp.ones((2, 6, 6), bool).at[1, :, 4:].set(False)
    cfg = CONFIG.replace(num_encoder_layers=1)
    params = random_params(cfg)["encoder"]
    results = {}
    for policy in ("none", "full", "minimal"):
        encoder = Encoder(cfg.replace(remat_policy=policy))

        def loss(p, x):
            out = encoder.apply({"params": p}, x, mask, False,
                                rngs={"dropout": jax.random.key(5, impl="unsafe_rbg")})
            return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)

        results[policy] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)
    for policy in ("full", "minimal"):
        assert float(results[policy][0]) == pytest.approx(float(results["none"][0]), rel=1e-6)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                               results[policy][1], results["none"][1])


def test_bfloat16_activations_keep_float32_parameters_and_logits():
    cfg = CONFIG.replace(dtype="bfloat16")
    module = Transformer(cfg)
    tokens = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    variables = jax.eval_shape(lambda t: module.init(jax.random.PRNGKey(0), t, t, t), tokens)
    params = nn.unbox(variables["params"])
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {jnp.dtype("float32")}
    logits = jax.eval_shape(lambda p, t: module.apply({"params": p}, t, t, t), params, tokens)
    encoded = jax.eval_shape(lambda p, t: module.apply({"params": p}, t, method=Transformer.encode),
                             params, tokens)
    assert logits.dtype == jnp.float32 and encoded.dtype == jnp.bfloat16


def test_tied_output_is_the_embedding_transposed_over_sqrt_d_model():
    untied_cfg = CONFIG.replace(num_encoder_layers=1, num_decoder_layers=1)
    tied_cfg = untied_cfg.replace(logits_via_embedding=True)
    tokens = jnp.array([[3, 4, 5, 1]])
    tied = random_params(tied_cfg)
    assert "logits_dense" not in tied["decoder"]
    untied = jax.tree_util.tree_map(lambda x: x, tied)
    untied["decoder"] = dict(tied["decoder"], logits_dense={
        "kernel": tied["token_embedder"]["embedding"].T / np.sqrt(CONFIG.d_model)})
    got = Transformer(tied_cfg).apply({"params": tied}, tokens, tokens, tokens)
    expected = Transformer(untied_cfg).apply({"params": untied}, tokens, tokens, tokens)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
