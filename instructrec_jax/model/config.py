"""The T5.1.1 / Flan-T5 hyperparameters: one frozen record, the published sizes, and a parameter count.

Sizes follow T5X's published Flan-T5 models (shared/docs/T5X.md); `tiny` is this project's CPU-sized
model with the same architecture.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

REMAT_POLICIES = ("none", "full", "minimal")

# name -> (d_model, d_ff, num_heads, d_kv, num_encoder_layers, num_decoder_layers)
_SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny": (256, 1024, 4, 64, 4, 4),
    "small": (512, 1024, 6, 64, 8, 8),
    "base": (768, 2048, 12, 64, 12, 12),
    "large": (1024, 2816, 16, 64, 24, 24),
    "xl": (2048, 5120, 32, 64, 24, 24),
    "xxl": (4096, 10240, 64, 64, 24, 24),
}

# T5X.md's table, for the documentation and the tests that compare against it.
PUBLISHED_PARAMS: dict[str, float] = {
    "small": 77e6,
    "base": 248e6,
    "large": 783e6,
    "xl": 2.85e9,
    "xxl": 11.3e9,
}


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Shape, precision and regularisation of a T5.1.1-style encoder-decoder (gated-GELU, untied)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_ff: int = 1024
    num_heads: int = 6
    d_kv: int = 64
    num_encoder_layers: int = 8
    num_decoder_layers: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    dtype: str = "bfloat16"  # activations and matmuls
    param_dtype: str = "float32"  # stored parameters
    remat_policy: str = "none"  # 'none' | 'full' | 'minimal' (per layer)
    logits_via_embedding: bool = False  # True: T5 1.0-style tied output, scaled by d_model**-0.5
    # True: a pointer-generator copy head over the encoder input (t5.PointerGenerator); not
    # Flan-T5, so such a model has no Hugging Face form.
    pointer_generator: bool = False

    def __post_init__(self):
        positive = ("vocab_size", "d_model", "d_ff", "num_heads", "d_kv", "num_encoder_layers",
                    "num_decoder_layers", "relative_attention_num_buckets",
                    "relative_attention_max_distance")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"T5Config.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"T5Config.dropout_rate must be in [0, 1), got {self.dropout_rate!r}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"T5Config.remat_policy must be one of {REMAT_POLICIES}, "
                             f"got {self.remat_policy!r}")
        for name in ("dtype", "param_dtype"):
            try:
                jnp.dtype(getattr(self, name))
            except TypeError as error:
                raise ValueError(f"T5Config.{name}: not a dtype: {getattr(self, name)!r}") from error

    @property
    def activation_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def parameter_dtype(self) -> Any:
        return jnp.dtype(self.param_dtype)

    @property
    def joined_kv(self) -> int:
        return self.num_heads * self.d_kv

    def replace(self, **changes) -> T5Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> T5Config:
        """The published size `name` (tiny, small, base, large, xl, xxl), with field overrides."""
        return preset_config(name, **overrides)


def preset_config(name: str, **overrides) -> T5Config:
    """A `T5Config` for a named size; gin can call this as `@config.preset_config()`."""
    if name not in _SIZES:
        raise ValueError(f"unknown Flan-T5 size {name!r}; expected one of {sorted(_SIZES)}")
    d_model, d_ff, heads, d_kv, enc, dec = _SIZES[name]
    fields = dict(d_model=d_model, d_ff=d_ff, num_heads=heads, d_kv=d_kv,
                  num_encoder_layers=enc, num_decoder_layers=dec)
    fields.update(overrides)
    return T5Config(**fields)


def preset_names() -> tuple[str, ...]:
    return tuple(_SIZES)


def num_params(config: T5Config) -> int:
    """The number of parameters `Transformer(config)` holds, computed from the shapes alone."""
    d, ff, inner, vocab = config.d_model, config.d_ff, config.joined_kv, config.vocab_size
    relpos = config.num_heads * config.relative_attention_num_buckets
    attention = 4 * d * inner  # query, key, value, out
    mlp = 3 * d * ff  # wi_0, wi_1, wo
    encoder_layer = attention + mlp + 2 * d  # two pre-norms
    decoder_layer = 2 * attention + mlp + 3 * d
    total = vocab * d  # token_embedder
    total += config.num_encoder_layers * encoder_layer + relpos + d  # + relpos table, encoder_norm
    total += config.num_decoder_layers * decoder_layer + relpos + d
    if not config.logits_via_embedding:
        total += d * vocab  # decoder/logits_dense
    if config.pointer_generator:
        total += 2 * d * config.d_kv + d  # pointer/query, pointer/key, pointer/gate
    return total
