"""Autoregressive decoding with a key/value cache: greedy, temperature/top-k sampling, beam search.

Each strategy drives a `step_fn(tokens [n, 1], cache) -> (logits [n, V], cache)` inside one
`lax.while_loop`, starting from the decoder start token (0) and stopping at EOS (1) or after
`max_length` tokens. Tokens after a sequence's EOS are 0.

`logits_constraint(step, prefix_tokens, log_probs) -> log_probs` (optional) sees, at every step,
the number of tokens generated so far (`step`, a traced int32 scalar), the generated tokens
[n, max_length] (positions >= step hold 0) and the model's next-token log-probabilities [n, V]
(float32); it returns them with disallowed tokens pushed to a large negative value (e.g. -1e9 or
-inf). It runs inside the compiled loop, so it must be written with jax.numpy. Scores stay the
model's own log-probabilities: the constraint only removes choices. For beam search n is
batch * num_beams (beam-major within each example). A two-argument
`logits_constraint(prefix_tokens, log_probs)` is accepted too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
Cache = Any
StepFn = Callable[[Array, Cache], tuple[Array, Cache]]
LogitsConstraint = Callable[..., Array]

PAD_ID = 0
EOS_ID = 1
DECODER_START_ID = 0
# Scores at or below this are "impossible" (a constrained-out token); finite to avoid inf - inf.
NEG_INF = -1.0e7


def brevity_penalty(alpha: float, length: Array) -> Array:
    """T5X's length normalisation for beam scores: ((5 + length) / 6) ** alpha."""
    return jnp.power((5.0 + length.astype(jnp.float32)) / 6.0, alpha)


def _apply_constraint(constraint: LogitsConstraint | None, step: Array, prefix: Array,
                      log_probs: Array) -> Array:
    if constraint is None:
        return log_probs
    try:
        positional = [p for p in inspect.signature(constraint).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        two_args = len(positional) == 2
    except (TypeError, ValueError):  # builtins without a signature: assume the documented form
        two_args = False
    out = constraint(prefix, log_probs) if two_args else constraint(step, prefix, log_probs)
    # Clamp so that -inf from the hook never meets +inf/-inf arithmetic in the beam bookkeeping.
    return jnp.maximum(out.astype(jnp.float32), 2 * NEG_INF)


def temperature_sample(step_fn: StepFn, cache: Cache, batch_size: int, max_length: int,
                       rng: Array | None = None, *, temperature: float = 1.0, top_k: int = 0,
                       eos_id: int = EOS_ID, start_id: int = DECODER_START_ID,
                       logits_constraint: LogitsConstraint | None = None) -> tuple[Array, Array]:
    """Sample (or, with temperature 0, take the argmax) token by token.

    Returns tokens [b, max_length] and scores [b] = the sum of the model's log-probabilities of the
    chosen tokens up to and including EOS.
    """
    greedy = temperature == 0.0
    if rng is None:
        if not greedy:
            raise ValueError("temperature_sample: sampling (temperature > 0) needs an rng key")
        rng = jax.random.PRNGKey(0)
    tokens = jnp.full((batch_size, max_length + 1), PAD_ID, jnp.int32).at[:, 0].set(start_id)

    def cond(state):
        step, _, _, finished, _, _ = state
        return (step < max_length) & ~jnp.all(finished)

    def body(state):
        step, tokens, cache, finished, scores, rng = state
        current = jax.lax.dynamic_slice_in_dim(tokens, step, 1, axis=1)
        logits, cache = step_fn(current, cache)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = _apply_constraint(logits_constraint, step, tokens[:, 1:], log_probs)
        if greedy:
            chosen = jnp.argmax(log_probs, axis=-1)
        else:
            rng, key = jax.random.split(rng)
            sample_logits = log_probs / temperature
            if top_k:
                kth = jax.lax.top_k(sample_logits, top_k)[0][:, -1:]
                sample_logits = jnp.where(sample_logits < kth, 2 * NEG_INF, sample_logits)
            chosen = jax.random.categorical(key, sample_logits, axis=-1)
        chosen = chosen.astype(jnp.int32)
        chosen_log_prob = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(finished, 0.0, chosen_log_prob)
        chosen = jnp.where(finished, PAD_ID, chosen)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, chosen[:, None], step + 1, axis=1)
        finished = finished | (chosen == eos_id)
        return step + 1, tokens, cache, finished, scores, rng

    state = (jnp.array(0, jnp.int32), tokens, cache, jnp.zeros((batch_size,), bool),
             jnp.zeros((batch_size,), jnp.float32), rng)
    _, tokens, _, _, scores, _ = jax.lax.while_loop(cond, body, state)
    return tokens[:, 1:], scores


def greedy_search(step_fn: StepFn, cache: Cache, batch_size: int, max_length: int, *,
                  eos_id: int = EOS_ID, start_id: int = DECODER_START_ID,
                  logits_constraint: LogitsConstraint | None = None) -> tuple[Array, Array]:
    """The most likely next token at every step; tokens [b, max_length], scores [b]."""
    return temperature_sample(step_fn, cache, batch_size, max_length, None, temperature=0.0,
                              eos_id=eos_id, start_id=start_id,
                              logits_constraint=logits_constraint)


def expand_for_beams(tree: Any, num_beams: int) -> Any:
    """Repeat every batch-leading array num_beams times ([b, ...] -> [b * k, ...]); scalars stay."""
    return jax.tree_util.tree_map(
        lambda x: jnp.repeat(x, num_beams, axis=0) if jnp.ndim(x) > 0 else x, tree)


# Cache entries under this name (the encoder-decoder attention's keys and values) are the same for
# every beam of an example, so reordering beams need not copy them.
BEAM_INVARIANT_CACHE = "encoder_decoder_attention"


def _gather_beams(tree: Any, indices: Array, batch_size: int, old_beams: int) -> Any:
    """Select beams: leaves [b * old_beams, ...] -> [b * new_beams, ...] by indices [b, new_beams]."""
    new_beams = indices.shape[1]

    def gather(path, x):
        invariant = any(getattr(entry, "key", None) == BEAM_INVARIANT_CACHE for entry in path)
        if jnp.ndim(x) == 0 or (invariant and new_beams == old_beams):
            return x
        x = x.reshape((batch_size, old_beams) + x.shape[1:])
        index = indices.reshape(indices.shape + (1,) * (x.ndim - 2))
        x = jnp.take_along_axis(x, index, axis=1)
        return x.reshape((batch_size * new_beams,) + x.shape[2:])

    return jax.tree_util.tree_map_with_path(gather, tree)


def _gather_sequences(seqs: Array, indices: Array) -> Array:
    """seqs [b, k, L], indices [b, m] -> [b, m, L]."""
    return jnp.take_along_axis(seqs, indices[:, :, None], axis=1)


def beam_search(step_fn: StepFn, cache: Cache, batch_size: int, max_length: int, *,
                num_beams: int = 4, alpha: float = 0.6, eos_id: int = EOS_ID,
                start_id: int = DECODER_START_ID,
                logits_constraint: LogitsConstraint | None = None) -> tuple[Array, Array]:
    """T5X-style beam search; `cache` must already be expanded to batch * num_beams rows.

    Returns tokens [b, num_beams, max_length] and scores [b, num_beams], best first. A finished
    beam's score is its log-probability divided by brevity_penalty(alpha, its length incl. EOS);
    an example with no finished beam at max_length falls back to its live beams and their raw
    log-probabilities.
    """
    k, length = num_beams, max_length
    seqs = jnp.full((batch_size, k, length + 1), PAD_ID, jnp.int32).at[:, :, 0].set(start_id)
    # Only the first beam is live at the start, so the first step does not pick k copies.
    live_log_probs = jnp.tile(jnp.array([0.0] + [NEG_INF] * (k - 1), jnp.float32), (batch_size, 1))
    finished_scores = jnp.full((batch_size, k), NEG_INF, jnp.float32)
    finished_flags = jnp.zeros((batch_size, k), bool)
    best_possible_penalty = brevity_penalty(alpha, jnp.array(length))

    def cond(state):
        step, _, live_lp, _, fin_scores, fin_flags, _ = state
        best_live = live_lp[:, 0] / best_possible_penalty
        worst_finished = jnp.where(fin_flags.all(axis=1), fin_scores.min(axis=1), NEG_INF)
        done = jnp.all(worst_finished > best_live)
        return (step < length) & ~done

    def body(state):
        step, live_seqs, live_lp, fin_seqs, fin_scores, fin_flags, cache = state
        current = jax.lax.dynamic_slice_in_dim(live_seqs, step, 1, axis=2).reshape(batch_size * k, 1)
        logits, cache = step_fn(current, cache)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        log_probs = _apply_constraint(logits_constraint, step,
                                      live_seqs[:, :, 1:].reshape(batch_size * k, length), log_probs)
        vocab = log_probs.shape[-1]
        candidates = (live_lp[:, :, None] + log_probs.reshape(batch_size, k, vocab))
        # 2k candidates guarantee k that do not end here, whatever number end in EOS.
        top_lp, top_index = jax.lax.top_k(candidates.reshape(batch_size, k * vocab), 2 * k)
        top_beam = top_index // vocab
        top_token = (top_index % vocab).astype(jnp.int32)
        top_seqs = _gather_sequences(live_seqs, top_beam)
        top_seqs = jax.lax.dynamic_update_slice_in_dim(top_seqs, top_token[:, :, None], step + 1,
                                                       axis=2)
        ends = top_token == eos_id
        possible = top_lp > NEG_INF / 2

        # Live beams: the best k candidates that did not just end.
        live_rank = jnp.where(ends | ~possible, 2 * NEG_INF, top_lp)
        new_live_lp, live_pick = jax.lax.top_k(live_rank, k)
        new_live_seqs = _gather_sequences(top_seqs, live_pick)
        new_live_lp = jnp.maximum(new_live_lp, NEG_INF)
        cache = _gather_beams(cache, jnp.take_along_axis(top_beam, live_pick, axis=1), batch_size, k)

        # Finished beams: merge the old finished set with the candidates that ended now.
        new_scores = top_lp / brevity_penalty(alpha, step + 1)
        new_scores = jnp.where(ends & possible, new_scores, NEG_INF)
        all_scores = jnp.concatenate([fin_scores, new_scores], axis=1)
        all_flags = jnp.concatenate([fin_flags, ends & possible], axis=1)
        all_seqs = jnp.concatenate([fin_seqs, top_seqs], axis=1)
        fin_scores, fin_pick = jax.lax.top_k(jnp.where(all_flags, all_scores, 2 * NEG_INF), k)
        fin_scores = jnp.maximum(fin_scores, NEG_INF)
        fin_flags = jnp.take_along_axis(all_flags, fin_pick, axis=1)
        fin_seqs = _gather_sequences(all_seqs, fin_pick)
        return step + 1, new_live_seqs, new_live_lp, fin_seqs, fin_scores, fin_flags, cache

    state = (jnp.array(0, jnp.int32), seqs, live_log_probs, seqs, finished_scores, finished_flags,
             cache)
    _, live_seqs, live_lp, fin_seqs, fin_scores, fin_flags, _ = jax.lax.while_loop(cond, body,
                                                                                   state)
    none_finished = ~fin_flags.any(axis=1)
    out_seqs = jnp.where(none_finished[:, None, None], live_seqs, fin_seqs)
    out_scores = jnp.where(none_finished[:, None], live_lp, fin_scores)
    return out_seqs[:, :, 1:], out_scores
