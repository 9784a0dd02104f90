"""The pointer-generator copy head (`T5Config.pointer_generator`): its distribution against a numpy
reference, packing, cached decoding, gradients, ranking, and what it must refuse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax import ranking
from instructrec_jax.checkpoints import hf
from instructrec_jax.model.config import num_params
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel
from instructrec_jax.model.t5 import Transformer, decoder_masks, param_shapes, random_params
from ranking_fixtures import CharTokenizer, tiny_config
from ranking_fixtures import random_params as ranking_params
from test_model_t5 import CONFIG, _example, _place, assert_cached_decoding_matches

POINTER = CONFIG.replace(pointer_generator=True)
# the copy head mixes whichever generated logits the model makes: its own projection or, tied,
# the token embedding's transpose
TIED = POINTER.replace(logits_via_embedding=True)


@pytest.fixture(scope="module", params=[POINTER, TIED], ids=["untied", "tied"])
def config(request):
    return request.param


@pytest.fixture(scope="module")
def params(config):
    return random_params(config, seed=3)


@pytest.fixture(scope="module")
def model(config):
    return EncoderDecoderModel(config)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _reference(config, params, enc, dec_in, dec_tgt):
    """log p from the formula, in numpy, on the plain decoder's hidden states and logits."""

    def plain(module, enc, dec_in, dec_tgt):
        encoded = module.encode(enc)
        self_mask, cross_mask = decoder_masks(enc, dec_tgt, dec_in.shape[1])
        hidden, logits = module.decoder(module.token_embedder(dec_in), encoded, self_mask, cross_mask,
                                        deterministic=True)
        if config.logits_via_embedding:
            assert logits is None
            logits = module.token_embedder.attend(hidden) / np.sqrt(config.d_model)
        return encoded, hidden, logits

    encoded, hidden, logits = map(np.asarray, Transformer(config).apply(
        {"params": params}, enc, dec_in, dec_tgt, method=plain))
    p = {k: np.asarray(v["kernel"], np.float64) for k, v in params["pointer"].items()}
    scores = np.einsum("btk,bsk->bts", hidden @ p["query"], encoded @ p["key"]) / np.sqrt(config.d_kv)
    real = np.asarray(enc) > 0
    scores = np.where(real[:, None, :], scores, -np.inf)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    copy = np.zeros(logits.shape)
    for b, row in enumerate(np.asarray(enc)):
        for j, token in enumerate(row):
            if token > 0:
                copy[b, :, token] += attention[b, :, j]
    gate = 1.0 / (1.0 + np.exp(-(hidden @ p["gate"])))
    mixed = gate * np.exp(_log_softmax(logits.astype(np.float64))) + (1.0 - gate) * copy
    with np.errstate(divide="ignore"):
        return np.log(mixed)


def test_output_is_the_gated_mixture_of_generating_and_copying(config, params):
    # token 5 twice in the first row (its copy mass adds up), padding after EOS, and target tokens
    # that are absent from the input (copy probability 0: only the generated share remains)
    enc = jnp.array([[5, 6, 7, 5, 1, 0, 0], [9, 8, 12, 13, 14, 15, 1]])
    dec_tgt = jnp.array([[5, 9, 1, 0], [13, 3, 21, 1]])
    dec_in = jnp.pad(dec_tgt[:, :-1], ((0, 0), (1, 0)))
    got = np.asarray(Transformer(config).apply({"params": params}, enc, dec_in, dec_tgt))
    expected = _reference(config, params, enc, dec_in, dec_tgt)
    real = np.asarray(dec_tgt) > 0
    np.testing.assert_allclose(got[real], expected[real], rtol=1e-5, atol=1e-5)
    # a distribution at every real target position, finite everywhere (padding rows copy nothing)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(got, -1))[real], 0.0, atol=1e-5)
    assert np.isfinite(got).all()
    # the copy head matters: input tokens gain over the plain model's distribution, others lose
    gate_off = _log_softmax(np.asarray(Transformer(config.replace(pointer_generator=False)).apply(
        {"params": {k: v for k, v in params.items() if k != "pointer"}}, enc, dec_in, dec_tgt),
        np.float64))
    assert (got[0, 0, 5] - gate_off[0, 0, 5]) > 0 > (got[0, 0, 20] - gate_off[0, 0, 20])


def test_packed_examples_score_as_each_example_alone(model, params):
    a, b, c = _example(1, 6, 4), _example(2, 8, 5), _example(3, 11, 7)
    packed, spans = _place([[a, b], [c]])

    def run(arrays):
        batch = dict(encoder_input_tokens=arrays["enc"], decoder_input_tokens=arrays["dec_in"],
                     decoder_target_tokens=arrays["dec_tgt"], encoder_segment_ids=arrays["enc_seg"],
                     decoder_segment_ids=arrays["dec_seg"])
        return np.asarray(model.logits(params, batch))

    packed_out = run(packed)
    for example, (row, span) in zip((a, b, c), spans):
        alone, [(_, alone_span)] = _place([[example]])
        np.testing.assert_allclose(packed_out[row, span], run(alone)[0, alone_span], atol=1e-5)


def test_cached_decoding_matches_teacher_forcing(model, params):
    arrays, _ = _place([[_example(5, 9, 9)], [_example(6, 14, 9)], [_example(7, 3, 9)]])
    batch = dict(encoder_input_tokens=arrays["enc"], decoder_input_tokens=arrays["dec_in"],
                 decoder_target_tokens=arrays["dec_tgt"])
    assert_cached_decoding_matches(model, params, arrays, np.asarray(model.logits(params, batch)))


def test_gradients_are_finite_and_reach_the_pointer(model, params):
    arrays, _ = _place([[_example(8, 10, 6)], [_example(9, 4, 3)]])  # targets mostly not in the input
    batch = dict(encoder_input_tokens=arrays["enc"], decoder_input_tokens=arrays["dec_in"],
                 decoder_target_tokens=arrays["dec_tgt"], decoder_loss_weights=(arrays["dec_tgt"] > 0))
    loss, grads = jax.value_and_grad(lambda p: model.loss_fn(p, batch, None)[0])(params)
    assert np.isfinite(float(loss))
    leaves = jax.tree_util.tree_leaves(grads)
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    for name in ("query", "key", "gate"):
        assert np.abs(np.asarray(grads["pointer"][name]["kernel"])).max() > 0, name


def test_parameters_are_counted_and_named():
    shapes = param_shapes(POINTER)
    assert shapes["pointer/query/kernel"] == (POINTER.d_model, POINTER.d_kv)
    assert shapes["pointer/key/kernel"] == (POINTER.d_model, POINTER.d_kv)
    assert shapes["pointer/gate/kernel"] == (POINTER.d_model, 1)
    assert num_params(POINTER) == sum(int(np.prod(s)) for s in shapes.values())
    assert num_params(POINTER) == num_params(CONFIG) + 2 * CONFIG.d_model * CONFIG.d_kv + CONFIG.d_model


@pytest.mark.parametrize("path", ["packed_candidates", "repeated_encoder"])
def test_shared_encoder_ranking_equals_full_passes(path):
    model = EncoderDecoderModel(tiny_config(pointer_generator=True))
    params = ranking_params(model, 4)
    scorer = ranking.CandidateScorer(model, params, CharTokenizer(),
                                     ranking.ScoringConfig(batch_size=4, shared_path=path))
    inputs = ["watched Heat, Casino; pick one of Toy Story, Jumanji, Heat", "short"]
    targets = [["Toy Story", "Jumanji", "Heat", "GoldenEye"], ["x", "yy", "short", "zz"]]
    shared = scorer.log_likelihoods(inputs, targets)
    full = scorer.log_likelihoods_full_pass(inputs, targets, batch_size=8)
    for (sums, _), reference in zip(shared, full):
        np.testing.assert_allclose(sums, reference, rtol=1e-6, atol=1e-5)
    assert np.ptp(shared[0][0]) > 1e-3


def test_hugging_face_conversion_refuses_a_copy_head(tmp_path):
    with pytest.raises(ValueError, match="no Hugging Face"):
        hf.save_hf_checkpoint(POINTER, random_params(POINTER), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    hf.save_hf_checkpoint(CONFIG, random_params(CONFIG), tmp_path / "plain")
    with pytest.raises(hf.CheckpointFormatError, match="pointer-generator"):
        hf.load_hf_checkpoint(tmp_path / "plain", pointer_generator=True)
