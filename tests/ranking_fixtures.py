"""A tiny random Flan-T5-shaped model, a character tokenizer and a fake model with known scores."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from instructrec_jax.model.config import T5Config
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

VOCAB = 512  # room for a small SentencePiece vocabulary (+100 sentinels) as well as CharTokenizer


class CharTokenizer:
    """Ids 3..62 from characters (0 pad, 1 EOS, 2 unk): deterministic, no model file needed."""

    def encode(self, s: str) -> list[int]:
        return [3 + (ord(ch) % 60) for ch in s]

    def decode(self, ids) -> str:
        return "".join(chr(97 + ((i - 3) % 26)) for i in ids if i > 2)


def tiny_config(**overrides) -> T5Config:
    fields = dict(
        vocab_size=VOCAB, d_model=32, d_ff=64, num_heads=2, d_kv=16, num_encoder_layers=2,
        num_decoder_layers=2, dropout_rate=0.0, dtype="float32", param_dtype="float32",
    )
    fields.update(overrides)
    return T5Config(**fields)


@functools.lru_cache(maxsize=None)
def tiny_model_and_params(seed: int = 0):
    """One shared model object per seed: jitted functions keyed on it compile once per test session."""
    model = EncoderDecoderModel(tiny_config())
    return model, random_params(model, seed)


def random_params(model, seed: int = 0):
    """Random weights of the model's shapes, drawn with numpy.

    Compiling the model's own initialiser (truncated normals for every array) takes XLA tens of
    seconds on a busy CPU; tracing it for the shapes takes one. Kernels get N(0, 1/fan_in), norm
    scales 1, embeddings N(0, 1): a random model whose candidate scores clearly differ.
    """
    import flax.linen as nn
    import numpy as np

    shapes = nn.meta.unbox(jax.eval_shape(model.init_params, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)
    paths, treedef = jax.tree_util.tree_flatten_with_path(shapes)

    def draw(path, leaf):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if name.endswith("scale"):
            return np.ones(leaf.shape, leaf.dtype)
        std = 1.0 if "embedding" in name else 1.0 / np.sqrt(leaf.shape[0])
        return (rng.standard_normal(leaf.shape) * std).astype(leaf.dtype)

    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(draw(p, leaf)) for p, leaf in paths])


class KnownScoreModel:
    """A stand-in model whose log-likelihood is known by hand:

    log p(target | input) = -1 per target token (EOS included) + 5 if the target's first token
    equals the input's first token. So 'sum' prefers short targets and the bonus; 'mean' divides
    both by the token count. It has no decoding cache (its "log-likelihoods" are not normalised
    distributions), so scorers over it use `shared_path='repeated_encoder'`.
    """

    def encode(self, params, encoder_tokens):
        return encoder_tokens[..., None].astype(jnp.float32)

    def score_encoded(self, params, encoded, encoder_tokens, decoder_inputs, targets):
        real = (targets > 0).astype(jnp.float32)
        bonus = jnp.where(targets[:, 0] == encoder_tokens[:, 0], 5.0, 0.0)
        return -jnp.sum(real, axis=-1) + bonus

    def score_batch(self, params, batch):
        return self.score_encoded(params, None, batch["encoder_input_tokens"], None,
                                  batch["decoder_target_tokens"])


def write_model_gin(config, path):
    """A gin model file binding MODEL to an EncoderDecoderModel with exactly `config`'s fields."""
    fields = "\n".join(f"  {k} = {v!r}" for k, v in vars(config).items())
    path.write_text(
        "from __gin__ import dynamic_registration\n"
        "from instructrec_jax.model import config\n"
        "from instructrec_jax.model import encoder_decoder\n"
        "MODEL = @encoder_decoder.EncoderDecoderModel()\n"
        "encoder_decoder.EncoderDecoderModel.config = @config.T5Config()\n"
        f"config.T5Config:\n{fields}\n", encoding="utf-8")
    return path
