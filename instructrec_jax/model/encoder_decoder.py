"""The encoder-decoder model as T5X's trainer and evaluator see it: init, loss, score, predict.

Batches are the feature dicts of `seqio.EncDecFeatureConverter`: encoder_input_tokens,
decoder_input_tokens, decoder_target_tokens, decoder_loss_weights and, when packed,
encoder_segment_ids, decoder_segment_ids, encoder_positions, decoder_positions.
Every method is a pure function of (params, batch, ...) and can be jitted by the caller;
`predict_batch` jits itself once per set of decoding options.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from instructrec_jax.model import decoding, losses
from instructrec_jax.model.config import T5Config, num_params
from instructrec_jax.model.t5 import Transformer

Array = jax.Array
Batch = Mapping[str, Array]
PredictMethod = str  # 'beam' | 'greedy' | 'sample'


# What the network reads; positions are implied by the packed row (see t5.py).
_MODEL_INPUTS = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                 "encoder_segment_ids", "decoder_segment_ids")


def _features(batch: Batch, names: tuple[str, ...]) -> dict[str, Array]:
    """The named features present in `batch` (other keys would only cause recompilation)."""
    missing = [n for n in ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens")
               if n in names and batch.get(n) is None]
    if missing:
        raise KeyError(f"batch lacks feature(s) {missing}; it has {sorted(batch)}")
    return {name: batch[name] for name in names if batch.get(name) is not None}


def _unbox(params: Any) -> Any:
    """Plain arrays from params that may still carry logical-axis boxes."""
    return nn.meta.unbox(params)


def _reset_cache_index(cache: Any) -> Any:
    def reset(path, leaf):
        name = getattr(path[-1], "key", None)
        return jnp.zeros_like(leaf) if name == "cache_index" else leaf

    return jax.tree_util.tree_map_with_path(reset, cache)


class EncoderDecoderModel:
    """Flan-T5 (`Transformer(config)`) with T5X's loss options and decoding."""

    FEATURE_NAMES = ("encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
                     "decoder_loss_weights", "encoder_segment_ids", "decoder_segment_ids",
                     "encoder_positions", "decoder_positions")

    def __init__(self, config: T5Config, z_loss: float = 1e-4, label_smoothing: float = 0.0,
                 loss_normalizing_factor: losses.LossNormalizingFactor = None,
                 in_input_loss_weight: float = 0.0):
        if isinstance(loss_normalizing_factor, str):
            if loss_normalizing_factor.upper() not in losses.SPECIAL_FACTORS:
                raise ValueError(f"EncoderDecoderModel: loss_normalizing_factor "
                                 f"{loss_normalizing_factor!r} is not a number, None or one of "
                                 f"{losses.SPECIAL_FACTORS}")
        self.config = config
        self.z_loss = float(z_loss)
        self.label_smoothing = float(label_smoothing)
        self.loss_normalizing_factor = loss_normalizing_factor
        if in_input_loss_weight < 0:
            raise ValueError(f"EncoderDecoderModel: in_input_loss_weight must be >= 0, got "
                             f"{in_input_loss_weight}")
        self.in_input_loss_weight = float(in_input_loss_weight)
        self.module = Transformer(config)
        self._predict_fns: dict[tuple, Any] = {}
        # Compiled once per model and input shapes; inside a caller's jit they are simply inlined.
        self._init = jax.jit(self._init_impl, static_argnums=(1, 2))
        self._logits = jax.jit(self._logits_impl)
        self._encode = jax.jit(self._encode_impl)
        self._score_encoded = jax.jit(self._score_encoded_impl)
        self._decode_step = jax.jit(self._decode_step_impl, static_argnames=("max_decode_length",))

    def __repr__(self) -> str:
        return (f"EncoderDecoderModel({self.config}, z_loss={self.z_loss}, "
                f"label_smoothing={self.label_smoothing}, "
                f"loss_normalizing_factor={self.loss_normalizing_factor!r}, "
                f"in_input_loss_weight={self.in_input_loss_weight})")

    @property
    def num_params(self) -> int:
        return num_params(self.config)

    # ----------------------------------------------------------------------------- parameters
    def init_params(self, rng: Array, input_shapes: Mapping[str, tuple[int, ...]] | None = None
                    ) -> Any:
        """Initial parameters, boxed with their logical axes (`nn.LogicallyPartitioned`).

        Parameter shapes do not depend on `input_shapes` (default [1, 1] token batches); it is
        accepted for T5X-style callers. Use under `jax.eval_shape` for an abstract tree.
        """
        shapes = dict(input_shapes or {})
        encoder_shape = tuple(shapes.get("encoder_input_tokens", (1, 1)))
        decoder_shape = tuple(shapes.get("decoder_input_tokens", (1, 1)))
        return self._init(rng, encoder_shape, decoder_shape)

    def _init_impl(self, rng, encoder_shape, decoder_shape):
        encoder_tokens = jnp.ones(encoder_shape, jnp.int32)
        decoder_tokens = jnp.ones(decoder_shape, jnp.int32)
        variables = self.module.init({"params": rng}, encoder_tokens, decoder_tokens, decoder_tokens,
                                     enable_dropout=False)
        return variables["params"]

    def logical_axes(self, params: Any) -> Any:
        """The logical axis names of every parameter (a tree of `PartitionSpec`s)."""
        return nn.get_partition_spec(params)

    # ----------------------------------------------------------------------------- forward
    def logits(self, params: Any, batch: Batch, dropout_rng: Array | None = None) -> Array:
        """Teacher-forced float32 logits [b, target length, vocab]; dropout iff dropout_rng."""
        return self._logits(_unbox(params), _features(batch, _MODEL_INPUTS), dropout_rng)

    def _logits_impl(self, params, batch, dropout_rng):
        rngs = {"dropout": dropout_rng} if dropout_rng is not None else None
        return self.module.apply(
            {"params": params}, batch["encoder_input_tokens"], batch["decoder_input_tokens"],
            batch["decoder_target_tokens"], batch.get("encoder_segment_ids"),
            batch.get("decoder_segment_ids"), enable_dropout=dropout_rng is not None, rngs=rngs)

    def loss_fn(self, params: Any, batch: Batch, dropout_rng: Array | None
                ) -> tuple[Array, dict[str, Array]]:
        """(loss, metrics): T5X's weighted cross-entropy + z-loss, normalised as configured, plus
        `in_input_loss_weight` times the in-input cross-entropy (losses.in_input_cross_entropy,
        same weights and normalisation) when that weight is positive.

        metrics: loss, z_loss, cross_ent_loss (the full-vocabulary cross-entropy, without z-loss),
        accuracy (weighted, of the argmax), num_tokens (target tokens with weight > 0), weight_sum,
        num_examples (sequences; each packed segment counts once), and in_input_loss when used.
        All float32 scalars.
        """
        batch = _features(batch, self.FEATURE_NAMES)
        logits = self.logits(params, batch, dropout_rng)
        factor, weights = losses.loss_normalizing_factor_and_weights(self.loss_normalizing_factor,
                                                                     batch)
        targets = batch["decoder_target_tokens"]
        loss, z_loss, _ = losses.weighted_cross_entropy(
            logits, targets, weights, label_smoothing=self.label_smoothing,
            z_loss=self.z_loss, loss_normalizing_factor=factor)
        metrics = self._metrics(logits, batch, loss, z_loss)
        if self.in_input_loss_weight:
            token_loss, member = losses.in_input_cross_entropy(
                logits, targets, batch["encoder_input_tokens"], batch.get("encoder_segment_ids"),
                batch.get("decoder_segment_ids"))
            token_weights = (targets > 0) if weights is None else weights
            in_input = jnp.sum(token_loss * token_weights.astype(jnp.float32) * member)
            if factor is not None:
                in_input = in_input / factor
            loss = loss + self.in_input_loss_weight * in_input
            metrics.update(loss=loss, in_input_loss=in_input)
        return loss, metrics

    @staticmethod
    def _metrics(logits: Array, batch: Batch, loss: Array, z_loss: Array) -> dict[str, Array]:
        targets = batch["decoder_target_tokens"]
        weights = batch.get("decoder_loss_weights")
        weights = (targets > 0) if weights is None else weights
        weights = weights.astype(jnp.float32)
        correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
        weight_sum = jnp.sum(weights)
        segments = batch.get("decoder_segment_ids")
        if segments is None:
            num_examples = jnp.sum(jnp.any(targets > 0, axis=-1))
        else:
            previous = jnp.pad(segments[:, :-1], ((0, 0), (1, 0)))
            num_examples = jnp.sum((segments != previous) & (segments > 0))
        return {
            "loss": loss,
            "z_loss": z_loss,
            "cross_ent_loss": loss - z_loss,
            "accuracy": jnp.sum(correct * weights) / jnp.maximum(weight_sum, 1e-8),
            "num_tokens": jnp.sum(weights > 0).astype(jnp.float32),
            "weight_sum": weight_sum,
            "num_examples": num_examples.astype(jnp.float32),
        }

    def score_batch(self, params: Any, batch: Batch) -> Array:
        """[b] float32: sum over target tokens of log p(token) (weights from decoder_loss_weights,
        else target != 0); no z-loss, no dropout. Packed batches are not supported."""
        if batch.get("decoder_segment_ids") is not None:
            raise ValueError("score_batch: packed batches cannot be scored per example")
        logits = self.logits(params, batch)
        return _sequence_log_likelihood(logits, batch["decoder_target_tokens"],
                                        batch.get("decoder_loss_weights"))

    def encode(self, params: Any, encoder_input_tokens: Array,
               encoder_segment_ids: Array | None = None) -> Array:
        """Encoder outputs [b, length, d_model], for scoring many targets against one input."""
        return self._encode(_unbox(params), encoder_input_tokens, encoder_segment_ids)

    def _encode_impl(self, params, encoder_input_tokens, encoder_segment_ids):
        return self.module.apply({"params": params}, encoder_input_tokens, encoder_segment_ids,
                                 method=Transformer.encode)

    def score_encoded(self, params: Any, encoded: Array, encoder_input_tokens: Array,
                      decoder_input_tokens: Array, decoder_target_tokens: Array,
                      decoder_loss_weights: Array | None = None) -> Array:
        """[n] sum log p of each target given an already encoded input (row i of `encoded`).

        To score c candidates of one instruction, repeat its encoded row c times
        (`jnp.repeat(encoded, c, axis=0)`, same for the tokens): the encoder runs once.
        """
        return self._score_encoded(_unbox(params), encoded, encoder_input_tokens,
                                   decoder_input_tokens, decoder_target_tokens,
                                   decoder_loss_weights)

    def _score_encoded_impl(self, params, encoded, encoder_input_tokens, decoder_input_tokens,
                            decoder_target_tokens, decoder_loss_weights):
        logits = self.module.apply({"params": params}, encoded, encoder_input_tokens,
                                   decoder_input_tokens, decoder_target_tokens,
                                   method=Transformer.decode)
        return _sequence_log_likelihood(logits, decoder_target_tokens, decoder_loss_weights)

    # ----------------------------------------------------------------------------- decoding
    def decoder_step_fn(self, params: Any, encoded: Array, encoder_input_tokens: Array,
                        max_decode_length: int):
        """(step_fn, initial cache) for `decoding`: one cached decoder step per call.

        `step_fn(tokens [b, 1], cache) -> (logits [b, vocab], cache)`.
        """
        params = _unbox(params)

        def step_fn(tokens: Array, cache: Any) -> tuple[Array, Any]:
            return self._decode_step(params, encoded, encoder_input_tokens, tokens, cache,
                                     max_decode_length=max_decode_length)

        # Creating the cache runs step 0 once (self-attention slots zero-filled, cross-attention
        # keys/values projected); rewinding the index lets the search redo step 0 through step_fn.
        start = jnp.full((encoder_input_tokens.shape[0], 1), decoding.DECODER_START_ID, jnp.int32)
        _, created = self._decode_step(params, encoded, encoder_input_tokens, start, None,
                                       max_decode_length=max_decode_length)
        return step_fn, _reset_cache_index(created)

    def _decode_step_impl(self, params, encoded, encoder_input_tokens, tokens, cache, *,
                          max_decode_length):
        variables = {"params": params} if cache is None else {"params": params, "cache": cache}
        logits, mutated = self.module.apply(
            variables, encoded, encoder_input_tokens, tokens, decode=True,
            max_decode_length=max_decode_length, mutable=["cache"], method=Transformer.decode)
        return logits[:, -1, :], mutated["cache"]

    def predict_batch(self, params: Any, batch: Batch, rng: Array | None = None, *,
                      method: PredictMethod = "beam", num_beams: int = 4, alpha: float = 0.6,
                      temperature: float = 1.0, top_k: int = 0, max_decode_length: int | None = None,
                      return_all: bool = False, logits_constraint=None) -> tuple[Array, Array]:
        """Decode outputs for `batch['encoder_input_tokens']`.

        method 'beam' (num_beams, brevity alpha), 'greedy', or 'sample' (temperature, top_k; needs
        rng). max_decode_length defaults to the batch's decoder length. Returns (tokens, scores):
        beam with return_all: [b, num_beams, L] and [b, num_beams], best first; otherwise the best
        (or only) sequence [b, L] and [b]. See `decoding` for `logits_constraint` and the scores.
        """
        if method not in ("beam", "greedy", "sample"):
            raise ValueError(f"predict_batch: method must be 'beam', 'greedy' or 'sample', got "
                             f"{method!r}")
        if max_decode_length is None:
            for name in ("decoder_input_tokens", "decoder_target_tokens"):
                if name in batch:
                    max_decode_length = int(batch[name].shape[1])
                    break
            else:
                raise ValueError("predict_batch: give max_decode_length or a decoder feature")
        if method == "sample" and rng is None:
            raise ValueError("predict_batch: method='sample' needs rng")
        options = (method, int(num_beams) if method == "beam" else 1, float(alpha),
                   float(temperature), int(top_k), int(max_decode_length), logits_constraint)
        fn = self._predict_fns.get(options)
        if fn is None:
            fn = jax.jit(lambda p, tokens, key: self._predict(p, tokens, key, *options))
            self._predict_fns[options] = fn
        if rng is None:
            rng = jax.random.PRNGKey(0)
        tokens, scores = fn(_unbox(params), batch["encoder_input_tokens"], rng)
        if method == "beam" and not return_all:
            tokens, scores = tokens[:, 0], scores[:, 0]
        return tokens, scores

    def _predict(self, params, encoder_input_tokens, rng, method, num_beams, alpha, temperature,
                 top_k, max_length, constraint):
        batch_size = encoder_input_tokens.shape[0]
        encoded = self.encode(params, encoder_input_tokens)
        if method == "beam":
            encoded = decoding.expand_for_beams(encoded, num_beams)
            encoder_input_tokens = decoding.expand_for_beams(encoder_input_tokens, num_beams)
        step_fn, cache = self.decoder_step_fn(params, encoded, encoder_input_tokens, max_length)
        if method == "beam":
            return decoding.beam_search(step_fn, cache, batch_size, max_length,
                                        num_beams=num_beams, alpha=alpha,
                                        logits_constraint=constraint)
        if method == "greedy":
            return decoding.greedy_search(step_fn, cache, batch_size, max_length,
                                          logits_constraint=constraint)
        return decoding.temperature_sample(step_fn, cache, batch_size, max_length, rng,
                                           temperature=temperature, top_k=top_k,
                                           logits_constraint=constraint)


@jax.jit
def _sequence_log_likelihood(logits: Array, targets: Array, weights: Array | None) -> Array:
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token_log_probs = jnp.take_along_axis(log_probs, targets[..., None].astype(jnp.int32),
                                          axis=-1)[..., 0]
    weights = (targets > 0) if weights is None else weights
    return jnp.sum(token_log_probs * weights.astype(jnp.float32), axis=-1)


def example_batch(batch_size: int = 2, inputs_length: int = 8, targets_length: int = 4,
                  vocab_size: int = 32) -> dict[str, np.ndarray]:
    """A deterministic unpacked batch in the feature converter's layout (for smoke tests and AOT)."""
    rng = np.random.default_rng(0)
    inputs = rng.integers(2, vocab_size, (batch_size, inputs_length)).astype(np.int32)
    targets = rng.integers(2, vocab_size, (batch_size, targets_length)).astype(np.int32)
    targets[:, -1] = decoding.EOS_ID
    decoder_inputs = np.concatenate([np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1)
    return {"encoder_input_tokens": inputs, "decoder_input_tokens": decoder_inputs,
            "decoder_target_tokens": targets, "decoder_loss_weights": np.ones_like(targets, np.float32)}
