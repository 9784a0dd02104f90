"""T5X's training loss: cross-entropy with z-loss and label smoothing, weighted, summed, normalised.

Per target token t with logits x (vocabulary V), log-normaliser Z = logsumexp(x), label smoothing s:
    soft target q = (1 - s) on t, s / (V - 1) elsewhere
    loss_t = -sum_j q_j log softmax(x)_j + z_loss * log(Z)**2 - H(q)
where H(q) (the entropy of q) makes the minimum loss 0. Token losses are multiplied by the weights
(`decoder_loss_weights`), summed, and divided by the loss-normalising factor:
    None                      no division (T5X's default; pair it with a constant factor)
    a number                  divide by it (T5X recommends 233472 = 2048 * 114 for Flan fine-tuning)
    'NUM_REAL_TARGET_TOKENS'  divide by the sum of the weights
    'NUM_TOTAL_TARGET_TOKENS' divide by batch * target length, padding included
    'AVERAGE_PER_SEQUENCE'    weights divided by their sum within each sequence (each packed
                              segment counts as a sequence), then divided by the number of
                              sequences: the mean over sequences of the per-sequence mean loss

`in_input_cross_entropy` is an optional second term (not in T5X) for reranking-style instructions,
whose answer is one of the items listed in the input: the cross-entropy of the target over a
softmax restricted to the distinct tokens of its own example's input (the listed candidates,
and also the history items and template words, which are easy negatives). It trains the
comparison that likelihood ranking of the listed candidates makes; BENCHMARKS.md has its ablation.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
SPECIAL_FACTORS = ("NUM_REAL_TARGET_TOKENS", "NUM_TOTAL_TARGET_TOKENS", "AVERAGE_PER_SEQUENCE")
LossNormalizingFactor = float | int | str | None


def token_cross_entropy(logits: Array, targets: Array, *, label_smoothing: float = 0.0,
                        z_loss: float = 0.0) -> tuple[Array, Array]:
    """(loss, z_loss) per token [...], unweighted; the loss includes the z-loss term.

    Works on the target logit and the logit sum instead of a one-hot [..., V] soft-target tensor,
    which keeps the memory of the loss at the size of the logits.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    if label_smoothing:
        confidence = 1.0 - label_smoothing
        low = label_smoothing / (vocab - 1)
        expected_logit = (confidence - low) * target_logit + low * jnp.sum(logits, axis=-1)
        entropy = -(confidence * np.log(confidence) + (vocab - 1) * low * np.log(low + 1e-20))
        cross_entropy = log_z - expected_logit - entropy
    else:
        cross_entropy = log_z - target_logit
    token_z_loss = z_loss * jnp.square(log_z)
    return cross_entropy + token_z_loss, token_z_loss


def weighted_cross_entropy(logits: Array, targets: Array, weights: Array | None = None, *,
                           label_smoothing: float = 0.0, z_loss: float = 0.0,
                           loss_normalizing_factor: float | Array | None = None
                           ) -> tuple[Array, Array, Array]:
    """(total loss, total z-loss, weight sum): weighted sums divided by a numeric factor (or not)."""
    if logits.ndim != targets.ndim + 1:
        raise ValueError(f"weighted_cross_entropy: logits {logits.shape} do not match targets "
                         f"{targets.shape}")
    loss, token_z_loss = token_cross_entropy(logits, targets, label_smoothing=label_smoothing,
                                             z_loss=z_loss)
    if weights is None:
        weight_sum = jnp.asarray(np.prod(targets.shape), jnp.float32)
    else:
        weights = weights.astype(jnp.float32)
        loss, token_z_loss = loss * weights, token_z_loss * weights
        weight_sum = jnp.sum(weights)
    total, total_z = jnp.sum(loss), jnp.sum(token_z_loss)
    if loss_normalizing_factor is not None:
        total, total_z = total / loss_normalizing_factor, total_z / loss_normalizing_factor
    return total, total_z, weight_sum


def in_input_cross_entropy(logits: Array, targets: Array, inputs: Array,
                           input_segment_ids: Array | None = None,
                           target_segment_ids: Array | None = None) -> tuple[Array, Array]:
    """(cross-entropy, member) per target token [b, t]: -log of the target's probability under a
    softmax over the distinct non-padding tokens of the same example's input (the same packed
    segment when segment ids are given); member is whether the target is one of those tokens.
    Tokens whose target is not in its input get a cross-entropy of 0 (weight them by `member`).

    Computed on the [b, t, input length] logits of the input tokens (duplicates counted once),
    never on a [b, vocab] mask, so packed rows cost no more than unpacked ones.
    """
    logits = logits.astype(jnp.float32)
    inputs = inputs.astype(jnp.int32)
    targets = targets.astype(jnp.int32)
    if input_segment_ids is None:
        input_segment_ids = (inputs > 0).astype(jnp.int32)
        target_segment_ids = (targets > 0).astype(jnp.int32)
    elif target_segment_ids is None:
        raise ValueError("in_input_cross_entropy: packed inputs need target_segment_ids too")
    length = inputs.shape[1]
    valid = (inputs > 0) & (input_segment_ids > 0)
    same = ((inputs[:, :, None] == inputs[:, None, :])
            & (input_segment_ids[:, :, None] == input_segment_ids[:, None, :]))
    earlier = jnp.tril(jnp.ones((length, length), bool), k=-1)  # [l, l']: l' < l
    first = valid & ~jnp.any(same & earlier[None], axis=-1)  # first occurrence in its segment
    member_of = first[:, None, :] & (input_segment_ids[:, None, :] == target_segment_ids[:, :, None])
    input_logits = jnp.take_along_axis(
        logits, jnp.broadcast_to(inputs[:, None, :], member_of.shape), axis=-1)  # [b, t, l]
    # A large finite mask, not -inf: an empty set must not give NaN gradients.
    log_z = jax.nn.logsumexp(jnp.where(member_of, input_logits, -1e9), axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    member = jnp.any(member_of & (inputs[:, None, :] == targets[:, :, None]), axis=-1)
    member = member & (targets > 0)
    return jnp.where(member, log_z - target_logit, 0.0), member


def _per_segment_weight_sums(weights: Array, segment_ids: Array) -> Array:
    """For every token, the sum of the weights of the tokens of its own segment (same row)."""
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    return jnp.sum(jnp.where(same_segment, weights[:, None, :], 0.0), axis=-1)


def loss_normalizing_factor_and_weights(factor: LossNormalizingFactor, batch: Mapping[str, Array]
                                        ) -> tuple[float | Array | None, Array | None]:
    """Resolve a (possibly special) factor into a number and the token weights to use with it."""
    weights = batch.get("decoder_loss_weights")
    if factor is None or not isinstance(factor, str):
        return factor, weights
    name = factor.upper()
    if name not in SPECIAL_FACTORS:
        raise ValueError(f"loss_normalizing_factor: unknown {factor!r}; expected a number, None or "
                         f"one of {SPECIAL_FACTORS}")
    targets = batch["decoder_target_tokens"]
    if weights is None:
        weights = (targets > 0).astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    if name == "NUM_REAL_TARGET_TOKENS":
        return jnp.sum(weights), weights
    if name == "NUM_TOTAL_TARGET_TOKENS":
        return float(np.prod(targets.shape)), weights
    segment_ids = batch.get("decoder_segment_ids")
    if segment_ids is None:
        norm = jnp.sum(weights, axis=-1, keepdims=True)
    else:
        norm = _per_segment_weight_sums(weights, segment_ids)
    weights = jnp.where(norm > 0, weights / jnp.where(norm > 0, norm, 1.0), 0.0)
    return jnp.sum(weights), weights
