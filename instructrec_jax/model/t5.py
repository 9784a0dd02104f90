"""The T5.1.1 / Flan-T5 encoder-decoder network in flax.linen, with T5X's parameter names and axes.

Numerics follow T5X's T5.1.1 network exactly (see shared/docs/T5X.md): pre-norm RMSNorm computed in
float32, attention logits not scaled (the query initialiser absorbs 1/sqrt(d_kv)), one relative
position table per stack (bidirectional buckets in the encoder, causal in the decoder), gated-GELU
MLP with the tanh approximation, untied float32 output projection, dropout on the embeddings, on
every residual branch, inside the MLP and on the attention probabilities.

Packed sequences: masks come from segment ids (no attention across segments, causal within a
decoder segment). The relative position of two tokens of one segment is the difference of their
indices in the packed row, which equals the difference of their segment positions because
`seqio.EncDecFeatureConverter` packs each segment contiguously; so T5X, and this module, need no
position ids to make a packed example give the same logits as that example alone.

Decoding: `decode(..., decode=True, max_decode_length=L)` on one token per call keeps keys and
values in the 'cache' collection: the first call creates the cache (self-attention keys/values of
length L, and the cross-attention keys/values projected once from the encoder output) and decodes
position 0; each later call decodes the next position.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from instructrec_jax.model.config import T5Config

Array = jax.Array
# Added to the attention logits of masked positions (as T5X: finite, so that a fully masked row
# softmaxes to uniform weights instead of NaN).
MASK_VALUE = -1e10

_REMAT_POLICIES: dict[str, Callable[..., bool] | None] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _constrain(x: Array, axes: tuple[str, ...]) -> Array:
    return nn.with_logical_constraint(x, axes)


def _fan_in_normal(scale: float = 1.0) -> Callable[..., Array]:
    return nn.initializers.variance_scaling(scale, "fan_in", "normal")


def _fan_in_truncated_normal() -> Callable[..., Array]:
    return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class Kernel(nn.Module):
    """One named weight matrix (`<name>/kernel`) with its logical axes; the caller does the matmul."""

    shape: tuple[int, ...]
    axes: tuple[str, ...]
    init: Callable[..., Array]
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> Array:
        return self.param("kernel", nn.with_logical_partitioning(self.init, self.axes), self.shape,
                          self.param_dtype)


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias; statistics in float32."""

    epsilon: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(variance + self.epsilon)).astype(self.dtype)
        return y * scale.astype(self.dtype)


class Embed(nn.Module):
    """The token embedding table shared by encoder and decoder inputs (`token_embedder/embedding`)."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.embedding = self.param(
            "embedding",
            nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0), ("vocab", "embed")),
            (cfg.vocab_size, cfg.d_model), cfg.parameter_dtype)

    def __call__(self, tokens: Array) -> Array:
        x = jnp.take(self.embedding, tokens.astype(jnp.int32), axis=0)
        return x.astype(self.config.activation_dtype)

    def attend(self, x: Array) -> Array:
        """Logits against the embedding table (tied output), in float32."""
        return jnp.einsum("bld,vd->blv", x.astype(jnp.float32), self.embedding.astype(jnp.float32))


def relative_position_bucket(relative_position: Array, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
    """T5's bucket of `key_position - query_position`: exact for small distances, log-spaced beyond.

    Bidirectional: half the buckets for keys after the query. Causal (decoder): keys after the query
    share bucket 0 with distance 0 (they are masked anyway).
    """
    bucket = jnp.zeros_like(relative_position)
    distance = -relative_position  # how far back the key is
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (distance < 0).astype(relative_position.dtype) * num_buckets
        distance = jnp.abs(distance)
    else:
        distance = jnp.maximum(distance, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # float32 like T5X and transformers, so bucket boundaries agree with theirs.
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
    large = max_exact + (log_ratio / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).astype(relative_position.dtype)
    large = jnp.minimum(large, num_buckets - 1)
    return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
    """One stack's relative position table [heads, buckets], turned into attention logit biases."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_positions: Array, key_positions: Array) -> Array:
        """Bias [1, heads, q, k] (float32) for 1-D query and key position vectors."""
        cfg = self.config
        table = self.param(
            "rel_embedding",
            nn.with_logical_partitioning(nn.initializers.variance_scaling(1.0, "fan_avg", "uniform"),
                                         ("heads", "relpos_buckets")),
            (cfg.num_heads, cfg.relative_attention_num_buckets), cfg.parameter_dtype)
        relative = key_positions[None, :].astype(jnp.int32) - query_positions[:, None].astype(jnp.int32)
        buckets = relative_position_bucket(relative, bidirectional=self.bidirectional,
                                           num_buckets=cfg.relative_attention_num_buckets,
                                           max_distance=cfg.relative_attention_max_distance)
        return jnp.take(table.astype(jnp.float32), buckets, axis=1)[None]


class Attention(nn.Module):
    """Multi-head dot-product attention with T5X's query/key/value/out kernels [embed, heads*d_kv].

    `cache`: None (plain attention over `inputs_kv`), 'self' (append this step's key/value at
    `cache_index` to a cache of `max_length` and attend over it) or 'cross' (keys/values of
    `inputs_kv` projected once, on the first call, and reused).
    """

    config: T5Config

    @nn.compact
    def __call__(self, inputs_q: Array, inputs_kv: Array, biases: tuple[Array, ...], *,
                 deterministic: bool, cache: str | None = None, cache_index: Array | None = None,
                 max_length: int | None = None) -> Array:
        cfg = self.config
        dtype, heads, d_kv, d_model = cfg.activation_dtype, cfg.num_heads, cfg.d_kv, cfg.d_model
        inner = cfg.joined_kv
        # fan_in of a [embed, joined_kv] kernel is d_model; the extra d_kv**-0.5 on the query is
        # the logit scaling that T5 never applies at run time.
        query_init = _fan_in_normal(1.0 / d_kv)
        w_q = Kernel((d_model, inner), ("embed", "joined_kv"), query_init, cfg.parameter_dtype,
                     name="query")()
        w_k = Kernel((d_model, inner), ("embed", "joined_kv"), _fan_in_normal(), cfg.parameter_dtype,
                     name="key")()
        w_v = Kernel((d_model, inner), ("embed", "joined_kv"), _fan_in_normal(), cfg.parameter_dtype,
                     name="value")()
        w_o = Kernel((inner, d_model), ("joined_kv", "embed"), _fan_in_normal(), cfg.parameter_dtype,
                     name="out")()

        def project(x: Array, kernel: Array) -> Array:
            y = jnp.einsum("bld,dhk->blhk", x, kernel.astype(dtype).reshape(d_model, heads, d_kv))
            return _constrain(y, ("batch", "length", "heads", "kv"))

        query = project(inputs_q, w_q)
        if cache == "cross":
            key = self.variable("cache", "cached_key", lambda: project(inputs_kv, w_k)).value
            value = self.variable("cache", "cached_value", lambda: project(inputs_kv, w_v)).value
        elif cache == "self":
            batch = inputs_q.shape[0]
            shape = (batch, max_length, heads, d_kv)
            cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, dtype)
            start = (0, cache_index, 0, 0)
            cached_key.value = jax.lax.dynamic_update_slice(cached_key.value,
                                                            project(inputs_kv, w_k), start)
            cached_value.value = jax.lax.dynamic_update_slice(cached_value.value,
                                                              project(inputs_kv, w_v), start)
            key, value = cached_key.value, cached_value.value
        else:
            key, value = project(inputs_kv, w_k), project(inputs_kv, w_v)

        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
        for bias in biases:
            logits = logits + bias
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(dtype)
        # T5X drops whole key columns per (batch, head): the mask is broadcast over queries.
        weights = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(weights,
                                                                     deterministic=deterministic)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        out = jnp.einsum("bqhd,hdD->bqD", context, w_o.astype(dtype).reshape(heads, d_kv, d_model))
        return _constrain(out, ("batch", "length", "embed"))


class GatedMlp(nn.Module):
    """wo(gelu_tanh(x @ wi_0) * (x @ wi_1)), with dropout on the hidden activations."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, *, deterministic: bool) -> Array:
        cfg = self.config
        dtype = cfg.activation_dtype
        init = _fan_in_truncated_normal()
        w_0 = Kernel((cfg.d_model, cfg.d_ff), ("embed", "mlp"), init, cfg.parameter_dtype,
                     name="wi_0")()
        w_1 = Kernel((cfg.d_model, cfg.d_ff), ("embed", "mlp"), init, cfg.parameter_dtype,
                     name="wi_1")()
        w_o = Kernel((cfg.d_ff, cfg.d_model), ("mlp", "embed"), init, cfg.parameter_dtype,
                     name="wo")()
        gate = jax.nn.gelu(jnp.einsum("bld,df->blf", x, w_0.astype(dtype)), approximate=True)
        hidden = gate * jnp.einsum("bld,df->blf", x, w_1.astype(dtype))
        hidden = _constrain(hidden, ("batch", "length", "mlp"))
        hidden = nn.Dropout(cfg.dropout_rate, broadcast_dims=(-2,))(hidden,
                                                                    deterministic=deterministic)
        out = jnp.einsum("blf,fd->bld", hidden, w_o.astype(dtype))
        return _constrain(out, ("batch", "length", "embed"))


def _residual_dropout(config: T5Config, x: Array, deterministic: bool) -> Array:
    return nn.Dropout(config.dropout_rate, broadcast_dims=(-2,))(x, deterministic=deterministic)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention block then pre-norm MLP block."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, relpos: Array, mask_bias: Array, deterministic: bool) -> Array:
        cfg = self.config
        norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,  # noqa: E731
                                    cfg.parameter_dtype, name=name)
        y = norm("pre_attention_layer_norm")(x)
        y = Attention(cfg, name="attention")(y, y, (relpos, mask_bias), deterministic=deterministic)
        x = x + _residual_dropout(cfg, y, deterministic)
        y = norm("pre_mlp_layer_norm")(x)
        y = GatedMlp(cfg, name="mlp")(y, deterministic=deterministic)
        x = x + _residual_dropout(cfg, y, deterministic)
        return _constrain(x, ("batch", "length", "embed"))


class DecoderLayer(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the encoder, then the MLP."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, encoded: Array, relpos: Array, self_mask_bias: Array,
                 cross_mask_bias: Array, deterministic: bool, decode: bool = False,
                 cache_index: Array | None = None, max_length: int | None = None) -> Array:
        cfg = self.config
        norm = lambda name: RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype,  # noqa: E731
                                    cfg.parameter_dtype, name=name)
        y = norm("pre_self_attention_layer_norm")(x)
        y = Attention(cfg, name="self_attention")(
            y, y, (relpos, self_mask_bias), deterministic=deterministic,
            cache="self" if decode else None, cache_index=cache_index, max_length=max_length)
        x = x + _residual_dropout(cfg, y, deterministic)
        y = norm("pre_cross_attention_layer_norm")(x)
        y = Attention(cfg, name="encoder_decoder_attention")(
            y, encoded, (cross_mask_bias,), deterministic=deterministic,
            cache="cross" if decode else None)
        x = x + _residual_dropout(cfg, y, deterministic)
        y = norm("pre_mlp_layer_norm")(x)
        y = GatedMlp(cfg, name="mlp")(y, deterministic=deterministic)
        x = x + _residual_dropout(cfg, y, deterministic)
        return _constrain(x, ("batch", "length", "embed"))


def _layer_class(cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...]):
    if policy == "none":
        return cls
    return nn.remat(cls, policy=_REMAT_POLICIES[policy], static_argnums=static_argnums,
                    prevent_cse=True)


def _mask_bias(mask: Array) -> Array:
    """Boolean [b, q, k] mask -> additive float32 bias [b, 1, q, k]."""
    return jnp.where(mask, 0.0, MASK_VALUE).astype(jnp.float32)[:, None]


class Encoder(nn.Module):
    """The encoder stack over embedded tokens, ending in `encoder_norm`."""

    config: T5Config

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        length = x.shape[1]
        positions = jnp.arange(length)
        relpos = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(positions,
                                                                                   positions)
        mask_bias = _mask_bias(mask)
        x = _constrain(_residual_dropout(cfg, x, deterministic), ("batch", "length", "embed"))
        # static_argnums counts `self` as 0: `deterministic` is argument 4.
        layer_cls = _layer_class(EncoderLayer, cfg.remat_policy, (4,))
        for i in range(cfg.num_encoder_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, relpos, mask_bias, deterministic)
        x = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype,
                    name="encoder_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
    """The decoder stack, `decoder_norm` and (untied) `logits_dense`; returns the final hidden
    states and float32 logits, or None for the logits with `logits_via_embedding` (the caller
    projects the hidden states onto the embedding table)."""

    config: T5Config

    @nn.compact
    def __call__(self, y: Array, encoded: Array, self_mask: Array | None, cross_mask: Array,
                 deterministic: bool, decode: bool = False,
                 max_decode_length: int | None = None) -> tuple[Array, Array | None]:
        cfg = self.config
        relpos_bias = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")
        cache_index = None
        if decode:
            if max_decode_length is None:
                raise ValueError("Decoder: decode=True needs max_decode_length (the cache length)")
            if y.shape[1] != 1:
                raise ValueError(f"Decoder: decode=True takes one token per call, got {y.shape[1]}")
            index_var = self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))
            cache_index = index_var.value
            key_positions = jnp.arange(max_decode_length)
            relpos = relpos_bias(cache_index[None], key_positions)
            # Only the positions already written to the cache are visible.
            self_mask_bias = _mask_bias((key_positions <= cache_index)[None, None, :])
            index_var.value = cache_index + 1
        else:
            positions = jnp.arange(y.shape[1])
            relpos = relpos_bias(positions, positions)
            self_mask_bias = _mask_bias(self_mask)
        cross_mask_bias = _mask_bias(cross_mask)

        y = _constrain(_residual_dropout(cfg, y, deterministic), ("batch", "length", "embed"))
        # Rematerialisation only pays off for training; decoding keeps the plain layer.
        layer_cls = DecoderLayer if decode else _layer_class(DecoderLayer, cfg.remat_policy, (6, 7))
        for i in range(cfg.num_decoder_layers):
            y = layer_cls(cfg, name=f"layers_{i}")(y, encoded, relpos, self_mask_bias,
                                                   cross_mask_bias, deterministic, decode,
                                                   cache_index, max_decode_length)
        y = RMSNorm(cfg.layer_norm_epsilon, cfg.activation_dtype, cfg.parameter_dtype,
                    name="decoder_norm")(y)
        y = _residual_dropout(cfg, y, deterministic)
        if cfg.logits_via_embedding:
            return y, None
        kernel = Kernel((cfg.d_model, cfg.vocab_size), ("embed", "vocab"), _fan_in_truncated_normal(),
                        cfg.parameter_dtype, name="logits_dense")()
        # float32 logits for a stable softmax, as T5X.
        logits = jnp.einsum("bld,dv->blv", y.astype(jnp.float32), kernel.astype(jnp.float32))
        return y, _constrain(logits, ("batch", "length", "vocab"))


class PointerGenerator(nn.Module):
    """A copy mechanism over the encoder input (See et al., 2017), `T5Config.pointer_generator`.

    Not part of Flan-T5, and off by default. Each decoder position attends, with one extra head of
    width d_kv, from its final hidden state to the encoder's final states; the attention mass on the
    input positions holding a token is that token's copy probability. A sigmoid gate g from the
    same hidden state mixes the two distributions, so the returned "logits" are log-probabilities:

        log p(v) = log(g · softmax(logits)_v + (1 − g) · Σ_{j: x_j = v} a_j)

    Padding and, when packed, other segments' input positions get no attention (`cross_mask`, the
    decoder's cross-attention mask). A token absent from the input has copy probability 0 and
    keeps log g + its generated log-probability, so the result is finite everywhere. At every
    position that sees at least one input token it sums to 1 over the vocabulary: the losses'
    log-normaliser of it is 0 (no z-loss), and re-normalising it (the ranker's log_softmax) changes
    nothing. A fully masked row (decoder padding) copies nothing and sums to g; it carries no loss.
    """

    config: T5Config

    @nn.compact
    def __call__(self, hidden: Array, logits: Array, encoded: Array, encoder_input_tokens: Array,
                 cross_mask: Array) -> Array:
        cfg = self.config
        f32 = jnp.float32
        query = Kernel((cfg.d_model, cfg.d_kv), ("embed", "kv"), _fan_in_normal(), cfg.parameter_dtype,
                       name="query")()
        key = Kernel((cfg.d_model, cfg.d_kv), ("embed", "kv"), _fan_in_normal(), cfg.parameter_dtype,
                     name="key")()
        gate = Kernel((cfg.d_model, 1), ("embed", "kv"), nn.initializers.zeros, cfg.parameter_dtype,
                      name="gate")()
        h = hidden.astype(f32)
        q = jnp.einsum("btd,dk->btk", h, query.astype(f32))
        k = jnp.einsum("bsd,dk->bsk", encoded.astype(f32), key.astype(f32))
        scores = jnp.einsum("btk,bsk->bts", q, k) / jnp.sqrt(f32(cfg.d_kv))
        attention = jax.nn.softmax(jnp.where(cross_mask, scores, MASK_VALUE), axis=-1)
        attention = jnp.where(cross_mask, attention, 0.0)  # a fully masked row copies nothing
        tokens = encoder_input_tokens.astype(jnp.int32)
        copy = jax.vmap(lambda a, x: jnp.zeros((a.shape[0], cfg.vocab_size), f32).at[:, x].add(a))(
            attention, tokens)
        gate_logit = jnp.einsum("btd,do->bto", h, gate.astype(f32))
        present = copy > 0
        # The inner where keeps log's gradient finite where the copy probability is 0.
        log_copy = jnp.where(present, jnp.log(jnp.where(present, copy, 1.0)), -jnp.inf)
        log_generate = jax.nn.log_softmax(logits.astype(f32), axis=-1)
        out = jnp.logaddexp(jax.nn.log_sigmoid(gate_logit) + log_generate,
                            jax.nn.log_sigmoid(-gate_logit) + log_copy)
        return _constrain(out, ("batch", "length", "vocab"))


def encoder_mask(encoder_input_tokens: Array, encoder_segment_ids: Array | None = None) -> Array:
    """[b, q, k] bool: both tokens real (non-zero) and, when packed, of the same segment."""
    valid = encoder_input_tokens > 0
    mask = valid[:, :, None] & valid[:, None, :]
    if encoder_segment_ids is not None:
        mask &= encoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
    return mask


def decoder_masks(encoder_input_tokens: Array, decoder_target_tokens: Array | None,
                  decoder_length: int, encoder_segment_ids: Array | None = None,
                  decoder_segment_ids: Array | None = None) -> tuple[Array, Array]:
    """(self-attention [b, q, q], cross-attention [b, q, k]) boolean masks for teacher forcing.

    Queries and keys count as real where the *target* token is non-zero (the input row starts with
    the pad id 0 as decoder start token), as T5X.
    """
    batch = encoder_input_tokens.shape[0]
    if decoder_target_tokens is None:
        target_valid = jnp.ones((batch, decoder_length), bool)
    else:
        target_valid = decoder_target_tokens > 0
    causal = jnp.tril(jnp.ones((decoder_length, decoder_length), bool))[None]
    self_mask = causal & target_valid[:, :, None] & target_valid[:, None, :]
    cross_mask = target_valid[:, :, None] & (encoder_input_tokens > 0)[:, None, :]
    if decoder_segment_ids is not None:
        self_mask &= decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :]
        if encoder_segment_ids is not None:
            cross_mask &= decoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :]
    return self_mask, cross_mask


class Transformer(nn.Module):
    """The Flan-T5 encoder-decoder: `encode`, `decode` (teacher forcing or one cached step), call."""

    config: T5Config

    def setup(self):
        self.token_embedder = Embed(self.config)
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        if self.config.pointer_generator:
            self.pointer = PointerGenerator(self.config)

    def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Array | None = None,
               encoder_positions: Array | None = None, enable_dropout: bool = False) -> Array:
        """Encoder outputs [b, length, d_model] (activation dtype).

        `encoder_positions` is accepted for the feature converter's batches; relative positions come
        from the packed row's indices (see the module docstring).
        """
        del encoder_positions
        mask = encoder_mask(encoder_input_tokens, encoder_segment_ids)
        x = self.token_embedder(encoder_input_tokens)
        return self.encoder(x, mask, deterministic=not enable_dropout)

    def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Array | None = None, encoder_segment_ids: Array | None = None,
               decoder_segment_ids: Array | None = None, decoder_positions: Array | None = None,
               enable_dropout: bool = False, decode: bool = False,
               max_decode_length: int | None = None) -> Array:
        """float32 logits [b, length, vocab] for the next token at every decoder position.

        With `decode=True`, `decoder_input_tokens` is [b, 1] (one step) and the 'cache' collection
        must be mutable; packing is not allowed then.
        """
        del decoder_positions
        if decode:
            if encoder_segment_ids is not None or decoder_segment_ids is not None:
                raise ValueError("Transformer.decode: packed (segment ids) inputs cannot be decoded "
                                 "incrementally")
            self_mask = None
            cross_mask = jnp.broadcast_to((encoder_input_tokens > 0)[:, None, :],
                                          (encoder_input_tokens.shape[0], 1,
                                           encoder_input_tokens.shape[1]))
        else:
            self_mask, cross_mask = decoder_masks(encoder_input_tokens, decoder_target_tokens,
                                                  decoder_input_tokens.shape[1],
                                                  encoder_segment_ids, decoder_segment_ids)
        y = self.token_embedder(decoder_input_tokens)
        hidden, logits = self.decoder(y, encoded, self_mask, cross_mask,
                                      deterministic=not enable_dropout, decode=decode,
                                      max_decode_length=max_decode_length)
        if self.config.logits_via_embedding:
            logits = self.token_embedder.attend(hidden) / jnp.sqrt(jnp.float32(self.config.d_model))
        if self.config.pointer_generator:
            logits = self.pointer(hidden, logits, encoded, encoder_input_tokens, cross_mask)
        return logits

    def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
                 decoder_target_tokens: Array | None = None, encoder_segment_ids: Array | None = None,
                 decoder_segment_ids: Array | None = None, encoder_positions: Array | None = None,
                 decoder_positions: Array | None = None, *, enable_dropout: bool = False,
                 decode: bool = False, max_decode_length: int | None = None) -> Array:
        encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                              enable_dropout=enable_dropout)
        return self.decode(encoded, encoder_input_tokens, decoder_input_tokens, decoder_target_tokens,
                           encoder_segment_ids, decoder_segment_ids, decoder_positions,
                           enable_dropout=enable_dropout, decode=decode,
                           max_decode_length=max_decode_length)


def param_shapes(config: T5Config) -> dict[str, tuple[int, ...]]:
    """'a/b/kernel' -> shape for every parameter of `Transformer(config)` (traced, nothing allocated)."""
    tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
    variables = jax.eval_shape(
        lambda t: Transformer(config).init(jax.random.PRNGKey(0), t, t), tokens)
    flat = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(variables["params"]))[0]
    return {"/".join(str(entry.key) for entry in path): tuple(leaf.shape) for path, leaf in flat}


def random_params(config: T5Config, seed: int = 0) -> dict:
    """Stand-in parameters drawn with numpy at T5X-like scales (kernels ~ N(0, 1/fan_in),
    embeddings ~ N(0, 1), norm scales near 1), for tests and benchmarks that need working weights
    but not `Transformer.init` itself, whose compilation is slow on CPU."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out: dict = {}
    for key, shape in param_shapes(config).items():
        if key.endswith("/scale"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif key.endswith("rel_embedding"):
            value = 0.5 * rng.standard_normal(shape)
        elif key == "token_embedder/embedding":
            value = rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
        node = out
        *parents, leaf = key.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value.astype(config.parameter_dtype)
    return out
