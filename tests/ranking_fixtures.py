"""A tiny random Flan-T5-shaped model, a character tokenizer and a fake model with known scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from instructrec_jax.model.config import T5Config
from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

VOCAB = 64


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


def tiny_model_and_params(seed: int = 0):
    model = EncoderDecoderModel(tiny_config())
    # jitted: op-by-op initialisation compiles every small op separately (tens of seconds on CPU)
    params = jax.jit(model.init_params)(jax.random.PRNGKey(seed))
    return model, params


class KnownScoreModel:
    """A stand-in model whose log-likelihood is known by hand:

    log p(target | input) = -1 per target token (EOS included) + 5 if the target's first token
    equals the input's first token. So 'sum' prefers short targets and the bonus; 'mean' divides
    both by the token count.
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
