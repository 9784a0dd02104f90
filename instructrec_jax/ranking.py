"""Likelihood ranking of candidate items: the encoder runs once per instruction, the decoder over all
of its candidates.

For an instruction with candidates c_1..c_n, candidate k scores log p(target_k | inputs), where
target_k is the record's `candidate_targets[k]` tokenized with the dataset vocabulary plus EOS —
the exact string the decoder would have been trained to write had c_k been the answer. Nothing is
generated, so no out-of-catalogue item can appear (the paper's protocol).

Batching: B instructions are encoded together ([B, Le]) and the decoder scores all their
candidates in one teacher-forced pass. By default (`shared_path='packed_candidates'`) an
instruction's C candidate targets are packed into one decoder row, separated by segment ids
(the model's packing masks keep them apart, so each is scored exactly as alone), so cross-attention
keys/values are projected once per instruction and no candidate is padded to the longest.
`'repeated_encoder'` instead repeats the encoded states once per candidate (one decoder row each):
simpler, but every candidate re-projects the encoder's keys/values, which on the tiny model costs
more than the rest of the decoder.
Input and target lengths are rounded up (`bucket_length`: powers of two, then multiples of 64) and
the instruction batch is padded to B, so jit compiles once per (input bucket, target bucket, candidate count).

Scores (`ScoringConfig`), all documented choices:
- `reduction='sum'` (default, the paper): the summed token log-likelihood. Longer targets pay for
  every extra token, so short titles are favoured; FINDINGS.md measured sum > mean on ml-100k.
- `reduction='mean'`: the log-likelihood divided by the target's token count (EOS included).
- `score_eos=False`: EOS is left out of every target (and of the token counts), so an id-token
  item scores log p(item | inputs) alone. For models trained to write more after the item (the
  generator's `train_next_items`), where p(EOS | item) would say whether the user's training
  sequence went on rather than anything about the candidate.
- `prior`: an optional calibration term subtracted with weight `prior_weight` (α):
  `'neutral_input'` subtracts α·log p(target | neutral input) (the same model given
  `neutral_input`, by default the empty string: PMI-style, it removes how likely the item's text is
  regardless of the user); `'item_log_prior'` subtracts α·log p(item) from a table the caller gives
  (e.g. `popularity_log_prior`, the smoothed training popularity; a negative α adds it instead).
  The prior is reduced the same way as the likelihood ('sum' or per-token 'mean').
Ties between candidates (e.g. identical target strings) are left to `metrics.evaluate_rankings`'s
tie rule; this module never breaks them.

Candidate orders (`candidate_orders=K`, default 1): a record whose instruction type lists its
candidates is also scored with the list shuffled K - 1 times (re-listed with the dataset's item
texts, as the 99-negative final round re-lists winners), and each candidate's log-likelihood is the
mean over the K inputs (the shown order first). The model's score for a candidate moves with where the candidate sits in
the list; averaging over orders removes that noise, like an ensemble whose members are orders
instead of parameter trees (the "bootstrapping" of Hou et al., 2024, for LLM rankers). The orders
are a pure function of `candidate_order_seed` and the input text, so a score does not depend on
batching. The candidate set, its order in the record and the label are untouched; instructions
without a list (matching, T2) are scored once. Costs K scoring passes.

Ensembles: `CandidateScorer(model, [params_1, ..., params_m], ...)` scores every candidate with each
parameter tree (the same model and vocabulary, e.g. the same recipe trained with several seeds) and
ranks by the mean of the members' log-likelihoods, i.e. the log of the geometric mean of their
probabilities (not renormalised over the vocabulary); the prior, its weight and the template are
then chosen on the ensemble's scores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from instructrec_jax import metrics

EOS_ID = 1
REDUCTIONS = ("sum", "mean")
PRIORS = ("none", "neutral_input", "item_log_prior")


class Tokenizer(Protocol):
    """What ranking needs of a vocabulary (`seqio.SentencePieceVocabulary` has it)."""

    def encode(self, s: str) -> Sequence[int]:
        ...


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """How candidates are scored (see the module docstring)."""

    reduction: str = "sum"
    prior: str = "none"
    prior_weight: float = 1.0
    neutral_input: str = ""
    score_eos: bool = True  # False: targets are scored without their EOS (see the module docstring)
    batch_size: int = 16  # instructions per compiled call; the decoder sees batch_size * candidates rows
    max_input_length: int | None = 512  # inputs are cut to this many tokens (EOS kept), as SeqIO's trim
    max_target_length: int | None = 64
    min_input_bucket: int = 32
    min_target_bucket: int = 16
    bucket_step: int = 64  # padded lengths beyond the powers of two are multiples of this
    # 'packed_candidates' (default): an instruction's candidates packed into one decoder row;
    # 'repeated_encoder': encoded states repeated per candidate, one decoder row each.
    shared_path: str = "packed_candidates"
    candidate_orders: int = 1  # K >= 1: mean over the shown order and K - 1 shuffles (module docstring)
    candidate_order_seed: int = 0

    def __post_init__(self):
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {self.reduction!r}; expected one of {REDUCTIONS}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; expected one of {PRIORS}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.bucket_step < 1:
            raise ValueError(f"bucket_step must be >= 1, got {self.bucket_step}")
        if self.candidate_orders < 1:
            raise ValueError(f"candidate_orders must be >= 1 (1: the shown order only), got {self.candidate_orders}")
        if self.shared_path not in SHARED_PATHS:
            raise ValueError(f"unknown shared_path {self.shared_path!r}; expected one of {sorted(SHARED_PATHS)}")


@dataclasses.dataclass(frozen=True)
class ScoredCandidates:
    """The candidates of one instruction with their log-likelihoods and final ranking scores."""

    example_id: str
    candidates: tuple[str, ...]
    label_index: int
    log_likelihood: np.ndarray  # [C] summed log p of each candidate's target (EOS included unless not score_eos)
    num_tokens: np.ndarray  # [C] target tokens scored (the same)
    prior: np.ndarray | None  # [C] the reduced prior term before weighting, or None
    scores: np.ndarray  # [C] what is ranked: reduced likelihood - prior_weight * prior
    template_id: str = ""
    instruction_type: str = ""
    user_id: str = ""


def bucket_length(length: int, minimum: int, step: int = 64) -> int:
    """A padded length for `length` tokens: the next power of two (>= minimum) up to `step`, then
    the next multiple of `step`. Few distinct compiled shapes, and at most `step - 1` pad tokens
    once inputs are long (a power of two would pad a 270-token instruction to 512)."""
    size = max(minimum, 1)
    while size < length and size < step:
        size *= 2
    if size >= length:
        return size
    return -(-length // step) * step


def tokenize(tokenizer: Tokenizer, text: str, max_length: int | None) -> list[int]:
    """Token ids of `text` + EOS, cut to `max_length` with EOS kept last (SeqIO's append_eos_after_trim)."""
    ids = [int(t) for t in tokenizer.encode(text)]
    if max_length is not None:
        ids = ids[: max_length - 1]
    return ids + [EOS_ID]


# Module-level jits with the model as a static argument: every scorer built on the same model object
# shares the compiled functions (XLA compiles cost seconds on CPU, far more than a small batch).
@functools.partial(jax.jit, static_argnums=0)
def _repeated_encoder_scores(model, params, encoder_tokens, decoder_targets):
    """[B, C] summed log p of B·C targets, teacher-forced; the encoder runs on the B inputs only
    and its states are repeated per candidate (so each candidate re-projects cross-attention K/V)."""
    batch, num_candidates, length = decoder_targets.shape
    encoded = model.encode(params, encoder_tokens)
    encoded = jnp.repeat(encoded, num_candidates, axis=0)
    tokens = jnp.repeat(encoder_tokens, num_candidates, axis=0)
    targets = decoder_targets.reshape(batch * num_candidates, length)
    decoder_inputs = jnp.pad(targets[:, :-1], ((0, 0), (1, 0)))  # decoder start token is 0
    sums = model.score_encoded(params, encoded, tokens, decoder_inputs, targets)
    return sums.reshape(batch, num_candidates)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _packed_candidate_scores(model, params, encoder_tokens, packed, num_candidates):
    """[B, C] summed log p of each instruction's C targets packed into ONE decoder row.

    `packed` holds [B, 3, Lp] int32: decoder inputs (0 starts every candidate), targets, and segment
    ids (k + 1 for candidate k, 0 for padding). Self-attention stays inside a segment (the model's
    packing masks) and T5's relative positions only depend on distances within it, so each
    candidate is scored exactly as alone; cross-attention sees the instruction's whole encoded
    input (no encoder segment ids), so its keys/values are projected once per instruction.
    """
    import flax.linen as nn

    from instructrec_jax.model.t5 import Transformer

    inputs, targets, segments = packed[:, 0], packed[:, 1], packed[:, 2]
    encoded = model.encode(params, encoder_tokens)
    logits = model.module.apply({"params": nn.meta.unbox(params)}, encoded, encoder_tokens, inputs, targets,
                                None, segments, method=Transformer.decode)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0] * (targets > 0)
    # segment k + 1 -> column k; padding (segment 0) -> no column
    columns = jax.nn.one_hot(segments - 1, num_candidates, dtype=jnp.float32)
    return jnp.einsum("bl,blc->bc", token, columns)


SHARED_PATHS = ("packed_candidates", "repeated_encoder")


def _pack_candidates(rows: Sequence[Sequence[Sequence[int]]], batch_size: int, length: int) -> np.ndarray:
    """[batch, 3, length]: decoder inputs, targets and segment ids of each row's packed candidates."""
    out = np.zeros((batch_size, 3, length), dtype=np.int32)
    for r, candidates in enumerate(rows):
        at = 0
        for k, ids in enumerate(candidates):
            n = len(ids)
            out[r, 1, at : at + n] = ids
            out[r, 0, at + 1 : at + n] = ids[:-1]  # position `at` keeps the start token 0
            out[r, 2, at : at + n] = k + 1
            at += n
    return out


@functools.partial(jax.jit, static_argnums=0)
def full_pass_scores(model, params, encoder_tokens, decoder_targets):
    """[N] summed log p of N (input, target) pairs, each a full encoder-decoder pass (EOS-ended
    targets, 0-padded; `infer`'s score mode and the reference path of the tests use it)."""
    decoder_inputs = jnp.pad(decoder_targets[:, :-1], ((0, 0), (1, 0)))
    batch = {
        "encoder_input_tokens": encoder_tokens,
        "decoder_input_tokens": decoder_inputs,
        "decoder_target_tokens": decoder_targets,
    }
    return model.score_batch(params, batch)


def shuffled_orders(config: ScoringConfig, inputs: str, count: int) -> list[np.ndarray]:
    """The `config.candidate_orders - 1` shuffles of a `count`-candidate list that an instruction
    with text `inputs` is also scored with: a pure function of `candidate_order_seed` and the text
    (so a score does not depend on batching); `order[j]` = index of the candidate listed j-th."""
    rng = np.random.default_rng([config.candidate_order_seed, zlib.crc32(inputs.encode("utf-8"))])
    return [rng.permutation(count) for _ in range(config.candidate_orders - 1)]


class CandidateScorer:
    """Scores candidate target strings for instruction inputs with one model and one set of params,
    or with several (a list of parameter trees: an ensemble, see the module docstring)."""

    def __init__(self, model, params, tokenizer: Tokenizer, config: ScoringConfig = ScoringConfig(),
                 *, item_log_prior: Mapping[str, float] | None = None,
                 item_texts: Mapping[str, str] | None = None):
        if config.prior == "item_log_prior" and item_log_prior is None:
            raise ValueError("prior='item_log_prior' needs an item_log_prior table (e.g. popularity_log_prior)")
        if config.candidate_orders > 1 and item_texts is None:
            raise ValueError("candidate_orders > 1 needs item_texts (each item's text as the "
                             "instructions list it, e.g. storage.read_item_texts) to re-list candidates")
        self.item_texts = dict(item_texts or {})
        self.model = model
        self.members = list(params) if isinstance(params, (list, tuple)) else [params]
        if not self.members:
            raise ValueError("an ensemble needs at least one parameter tree")
        self.tokenizer = tokenizer
        self.config = config
        self.item_log_prior = dict(item_log_prior or {})
        self._neutral_cache: dict[str, tuple[float, int]] = {}
        self._token_cache: dict[str, list[int]] = {}
        self.compiled_shapes: set[tuple[int, ...]] = set()
        # instructions scored over several candidate orders / once (no list, or candidate_orders=1)
        self.order_counts = {"reordered": 0, "once": 0}

    # -- tokenization -------------------------------------------------------------------------
    def _target_ids(self, text: str) -> list[int]:
        ids = self._token_cache.get(text)
        if ids is None:
            ids = tokenize(self.tokenizer, text, self.config.max_target_length)
            if not self.config.score_eos:
                ids = ids[:-1]
                if not ids:
                    raise ValueError(f"candidate target {text!r} has no tokens to score without EOS")
            self._token_cache[text] = ids
        return ids

    def _member_mean(self, fn, *args) -> np.ndarray:
        """fn(model, params, *args) for every member, as float64, averaged over the members."""
        total = None
        for params in self.members:
            value = np.asarray(fn(self.model, params, *args), dtype=np.float64)
            total = value if total is None else total + value
        return total / len(self.members)

    # -- the core: log-likelihoods with the shared encoder --------------------------------------
    def log_likelihoods(
        self, inputs: Sequence[str], candidate_targets: Sequence[Sequence[str]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each input, (summed log p [C], token counts [C]) of its candidate targets."""
        if len(inputs) != len(candidate_targets):
            raise ValueError(f"{len(inputs)} inputs but {len(candidate_targets)} candidate lists")
        cfg = self.config
        encoded_inputs = [tokenize(self.tokenizer, text, cfg.max_input_length) for text in inputs]
        encoded_targets = [[self._target_ids(t) for t in targets] for targets in candidate_targets]
        results: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(inputs)
        packed = cfg.shared_path == "packed_candidates"
        # Group by shape bucket so that each compiled call is full of real rows of similar length.
        # The decoder length is the packed row (all candidates) or the longest single candidate.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, (enc, targets) in enumerate(zip(encoded_inputs, encoded_targets)):
            if not targets:
                results[i] = (np.zeros(0), np.zeros(0, dtype=np.int64))
                continue
            decoder_length = sum(len(t) for t in targets) if packed else max(len(t) for t in targets)
            key = (
                bucket_length(len(enc), cfg.min_input_bucket, cfg.bucket_step),
                bucket_length(decoder_length, cfg.min_target_bucket, cfg.bucket_step),
                len(targets),
            )
            groups.setdefault(key, []).append(i)
        for (enc_len, dec_len, num_c), members in sorted(groups.items()):
            for start in range(0, len(members), cfg.batch_size):
                chunk = members[start : start + cfg.batch_size]
                enc = np.zeros((cfg.batch_size, enc_len), dtype=np.int32)
                for row, i in enumerate(chunk):
                    enc[row, : len(encoded_inputs[i])] = encoded_inputs[i]
                self.compiled_shapes.add((cfg.batch_size, enc_len, num_c, dec_len))
                if packed:
                    rows = _pack_candidates([encoded_targets[i] for i in chunk], cfg.batch_size, dec_len)
                    sums = self._member_mean(_packed_candidate_scores, enc, rows, num_c)
                else:
                    dec = np.zeros((cfg.batch_size, num_c, dec_len), dtype=np.int32)
                    for row, i in enumerate(chunk):
                        for c, ids in enumerate(encoded_targets[i]):
                            dec[row, c, : len(ids)] = ids
                    sums = self._member_mean(_repeated_encoder_scores, enc, dec)
                for row, i in enumerate(chunk):
                    counts = np.array([len(ids) for ids in encoded_targets[i]], dtype=np.int64)
                    results[i] = (sums[row, :num_c], counts)
        return results  # type: ignore[return-value]

    def log_likelihoods_full_pass(
        self, inputs: Sequence[str], candidate_targets: Sequence[Sequence[str]], *, batch_size: int = 16
    ) -> list[np.ndarray]:
        """The reference: every (input, candidate) pair through the whole encoder-decoder.

        Slow on purpose (the encoder runs once per candidate); for tests and the benchmark.
        """
        cfg = self.config
        pairs = []
        for i, (text, targets) in enumerate(zip(inputs, candidate_targets)):
            enc = tokenize(self.tokenizer, text, cfg.max_input_length)
            for c, target in enumerate(targets):
                pairs.append((i, c, enc, self._target_ids(target)))
        out = [np.zeros(len(t)) for t in candidate_targets]
        if not pairs:
            return out
        enc_len = bucket_length(max(len(p[2]) for p in pairs), cfg.min_input_bucket, cfg.bucket_step)
        dec_len = bucket_length(max(len(p[3]) for p in pairs), cfg.min_target_bucket, cfg.bucket_step)
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            enc = np.zeros((batch_size, enc_len), dtype=np.int32)
            dec = np.zeros((batch_size, dec_len), dtype=np.int32)
            for row, (_, _, e, d) in enumerate(chunk):
                enc[row, : len(e)] = e
                dec[row, : len(d)] = d
            sums = self._member_mean(full_pass_scores, enc, dec)
            for row, (i, c, _, _) in enumerate(chunk):
                out[i][c] = sums[row]
        return out

    # -- candidate orders ------------------------------------------------------------------------
    def candidate_orders_of(self, record: Any) -> list[tuple[str, np.ndarray]]:
        """(input, order) pairs a record is scored with: its own input and the identity, then, for
        an instruction that lists its candidates, `candidate_orders - 1` seeded shuffles, each
        with its input re-listed (`generator.relisted_inputs`, the list the 99-negative final round
        rewrites too) and `order[j]` = the record's index of the candidate listed j-th."""
        from instructrec_jax.instructions.format import base_type
        from instructrec_jax.instructions.generator import relisted_inputs

        shown = [(record.inputs, np.arange(len(record.candidates)))]
        orders = self.config.candidate_orders
        if (orders == 1 or len(record.candidates) < 2
                or not base_type(record.instruction_type).has_candidates):
            return shown  # nothing to reorder, or no list in the input (e.g. matching, T2)
        for order in shuffled_orders(self.config, record.inputs, len(record.candidates)):
            shown.append((relisted_inputs(record, [record.candidates[k] for k in order], self.item_texts),
                          order))
        return shown

    def _order_averaged_log_likelihoods(
        self, inputs: Sequence[str], candidate_targets: Sequence[Sequence[str]],
        orders: Sequence[Sequence[tuple[str, np.ndarray]]] | None,
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`log_likelihoods`, each instruction's sums averaged over its (input, order) pairs."""
        if orders is None or all(len(o) == 1 for o in orders):
            return self.log_likelihoods(inputs, candidate_targets)
        flat = self.log_likelihoods(
            [text for pairs in orders for text, _ in pairs],
            [[targets[k] for k in order] for pairs, targets in zip(orders, candidate_targets)
             for _, order in pairs])
        out, at = [], 0
        for pairs in orders:
            total = np.zeros(len(pairs[0][1]))
            for k, (_, order) in enumerate(pairs):
                total[order] += flat[at + k][0]  # back to the record's candidate order
            out.append((total / len(pairs), flat[at][1]))  # pairs[0] is the identity order
            at += len(pairs)
        return out

    # -- priors and final scores ---------------------------------------------------------------
    def neutral_log_likelihoods(self, targets: Iterable[str]) -> dict[str, tuple[float, int]]:
        """(summed log p, tokens) of each distinct target under the neutral input; cached per text."""
        targets = list(targets)
        missing = sorted({t for t in targets if t not in self._neutral_cache})
        if missing:
            width = 16
            rows = [missing[k : k + width] for k in range(0, len(missing), width)]
            # pad the last row by repeating its first target: one compiled candidate count
            rows[-1] = rows[-1] + [rows[-1][0]] * (width - len(rows[-1]))
            scored = self.log_likelihoods([self.config.neutral_input] * len(rows), rows)
            for row, (sums, counts) in zip(rows, scored):
                for text, s, n in zip(row, sums, counts):
                    self._neutral_cache[text] = (float(s), int(n))
        return {t: self._neutral_cache[t] for t in targets}

    def _reduce(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return sums if self.config.reduction == "sum" else sums / np.maximum(counts, 1)

    def score(
        self,
        inputs: Sequence[str],
        candidate_targets: Sequence[Sequence[str]],
        candidate_items: Sequence[Sequence[str]] | None = None,
        orders: Sequence[Sequence[tuple[str, np.ndarray]]] | None = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]]:
        """(log-likelihoods, token counts, prior or None, final scores) per input; with `orders`
        (`candidate_orders_of` per input), the log-likelihoods are averaged over them."""
        cfg = self.config
        scored = self._order_averaged_log_likelihoods(inputs, candidate_targets, orders)
        neutral = None
        if cfg.prior == "neutral_input":
            neutral = self.neutral_log_likelihoods(t for targets in candidate_targets for t in targets)
        out = []
        for k, (sums, counts) in enumerate(scored):
            value = self._reduce(sums, counts)
            prior = None
            if neutral is not None:
                ps = np.array([neutral[t][0] for t in candidate_targets[k]])
                pc = np.array([neutral[t][1] for t in candidate_targets[k]])
                prior = self._reduce(ps, pc)
            elif cfg.prior == "item_log_prior":
                if candidate_items is None:
                    raise ValueError("prior='item_log_prior' needs the candidates' item ids")
                floor = min(self.item_log_prior.values(), default=0.0)
                prior = np.array([self.item_log_prior.get(item, floor) for item in candidate_items[k]])
            final = value if prior is None else value - cfg.prior_weight * prior
            out.append((sums, counts, prior, final))
        return out

    def score_records(self, records: Sequence[Any]) -> list[ScoredCandidates]:
        """Scores `InstructionRecord`s (inputs, candidate_targets, candidates, label_index...)."""
        for record in records:
            if len(record.candidate_targets) != len(record.candidates):
                raise ValueError(
                    f"{record.example_id}: {len(record.candidates)} candidates but "
                    f"{len(record.candidate_targets)} candidate targets"
                )
        orders = None
        if self.config.candidate_orders > 1:
            orders = [self.candidate_orders_of(r) for r in records]
            reordered = sum(len(o) > 1 for o in orders)
            self.order_counts["reordered"] += reordered
            self.order_counts["once"] += len(orders) - reordered
        scored = self.score(
            [r.inputs for r in records],
            [r.candidate_targets for r in records],
            [r.candidates for r in records],
            orders,
        )
        return [
            ScoredCandidates(
                example_id=r.example_id,
                candidates=tuple(r.candidates),
                label_index=int(r.label_index),
                log_likelihood=sums,
                num_tokens=counts,
                prior=prior,
                scores=final,
                template_id=r.template_id,
                instruction_type=r.instruction_type,
                user_id=r.user_id,
            )
            for r, (sums, counts, prior, final) in zip(records, scored)
        ]


def popularity_log_prior(counts: Mapping[str, int], catalogue: Iterable[str] = ()) -> dict[str, float]:
    """log p(item) from training counts with add-one smoothing (items never seen get log(1/total))."""
    items = set(counts) | set(catalogue)
    total = sum(counts.values()) + len(items)
    return {item: math.log((counts.get(item, 0) + 1) / total) for item in items}


# -- evaluation of scored records ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TemplateResults:
    """Metrics of one instruction type on one split: all templates together and each on its own."""

    overall: metrics.RankingMetrics
    by_template: dict[str, metrics.RankingMetrics]

    def as_dict(self) -> dict:
        return {
            "overall": self.overall.as_dict(),
            "by_template": {t: m.as_dict() for t, m in sorted(self.by_template.items())},
        }


def evaluate_scored(
    scored: Sequence[ScoredCandidates],
    *,
    tie_rule: str = "pessimistic",
    hr_ks: Sequence[int] = metrics.PAPER_HR_KS,
    ndcg_ks: Sequence[int] = metrics.PAPER_NDCG_KS,
) -> TemplateResults:
    """Per-template and overall metrics through `metrics.evaluate_rankings` (records without a
    true candidate, label -1, are refused: they belong to the grouped 99-negative protocol)."""
    bad = [s.example_id for s in scored if s.label_index < 0]
    if bad:
        raise ValueError(f"{len(bad)} records have no true candidate (e.g. {bad[0]}); use rank_groups for _neg99 types")
    kwargs = dict(tie_rule=tie_rule, hr_ks=hr_ks, ndcg_ks=ndcg_ks)
    overall = metrics.evaluate_rankings([s.scores for s in scored], [s.label_index for s in scored], **kwargs)
    by_template: dict[str, list[ScoredCandidates]] = {}
    for s in scored:
        by_template.setdefault(s.template_id, []).append(s)
    return TemplateResults(
        overall=overall,
        by_template={
            t: metrics.evaluate_rankings([s.scores for s in rows], [s.label_index for s in rows], **kwargs)
            for t, rows in by_template.items()
        },
    )


def reweighted(scored: Sequence[ScoredCandidates], prior_weight: float, reduction: str) -> list[ScoredCandidates]:
    """The same candidates ranked by `reduced likelihood - prior_weight * prior` (records without a
    prior keep the reduced likelihood)."""
    out = []
    for s in scored:
        value = s.log_likelihood if reduction == "sum" else s.log_likelihood / np.maximum(s.num_tokens, 1)
        final = value if s.prior is None else value - prior_weight * s.prior
        out.append(dataclasses.replace(s, scores=final))
    return out


def calibrate_prior_weight(
    valid: Sequence[ScoredCandidates],
    weights: Sequence[float],
    reduction: str,
    *,
    metric: str = "NDCG@5",
    tie_rule: str = "pessimistic",
) -> tuple[float, dict[float, float]]:
    """The prior weight of `weights` with the best overall `metric` on validation records (ties: the
    one closest to 0, then the smaller), and the metric of every weight."""
    if not weights:
        raise ValueError("calibrate_prior_weight needs at least one weight")
    values = {}
    for w in weights:
        rows = reweighted(valid, float(w), reduction)
        values[float(w)] = metrics.evaluate_rankings([r.scores for r in rows], [r.label_index for r in rows],
                                                     tie_rule=tie_rule).values[metric]
    best = min(values, key=lambda w: (-values[w], abs(w), w))
    return best, values


def best_template(valid: TemplateResults, metric: str = "NDCG@5") -> str:
    """The template with the highest `metric` on validation (ties: the smallest template id)."""
    if not valid.by_template:
        raise ValueError("no per-template results to choose from")
    return min(valid.by_template, key=lambda t: (-valid.by_template[t][metric], t))


# -- the 99-negative protocols -------------------------------------------------------------------


def group_key(example_id: str) -> str:
    """The example a `/gNN` candidate-group record belongs to (the id without its group suffix)."""
    head, sep, tail = example_id.rpartition("/g")
    return head if sep and tail.isdigit() else example_id


@dataclasses.dataclass(frozen=True)
class GroupedExample:
    """The candidate groups of one 99-negative example, in group order."""

    key: str
    groups: tuple[ScoredCandidates, ...]

    @property
    def candidates(self) -> tuple[str, ...]:
        return tuple(c for g in self.groups for c in g.candidates)

    @property
    def label_index(self) -> int:
        offset = 0
        for g in self.groups:
            if g.label_index >= 0:
                return offset + g.label_index
            offset += len(g.candidates)
        raise ValueError(f"{self.key}: no group holds the true item")


def collect_groups(scored: Sequence[ScoredCandidates]) -> list[GroupedExample]:
    """Gathers `/gNN` group records into examples (ordered by first appearance, groups by NN)."""
    by_key: dict[str, list[ScoredCandidates]] = {}
    for s in scored:
        by_key.setdefault(group_key(s.example_id), []).append(s)
    return [
        GroupedExample(key, tuple(sorted(rows, key=lambda s: s.example_id))) for key, rows in by_key.items()
    ]


def direct_scores(example: GroupedExample) -> np.ndarray:
    """All candidates of all groups ranked together, each by its score within its own group."""
    return np.concatenate([g.scores for g in example.groups])


def group_winners(example: GroupedExample, tie_rule: str = "pessimistic") -> list[str]:
    """The best candidate of each group. A true item tying with another candidate for the win loses
    the tie under the 'pessimistic' and 'expected' rules and wins it under 'optimistic'."""
    winners = []
    for g in example.groups:
        top = np.max(g.scores)
        tied = [k for k in range(len(g.candidates)) if g.scores[k] == top]
        if g.label_index in tied and len(tied) > 1:
            pick = g.label_index if tie_rule == "optimistic" else next(k for k in tied if k != g.label_index)
        else:
            pick = tied[0]
        winners.append(g.candidates[pick])
    return winners


def final_round_scores(example: GroupedExample, winners: Sequence[str], final: ScoredCandidates) -> np.ndarray:
    """Scores over all candidates for the grouped protocol: the group winners get their final-round
    scores; every other candidate gets -inf, i.e. ranks below all winners (exact HR/NDCG for k up
    to the number of groups; beyond that the tie rule decides among the eliminated)."""
    position = {item: k for k, item in enumerate(final.candidates)}
    out = np.full(len(example.candidates), -np.inf)
    for k, item in enumerate(example.candidates):
        if item in winners:
            out[k] = final.scores[position[item]]
    return out


def grouped_rows(
    scored_groups: Sequence[ScoredCandidates],
    *,
    protocol: str = "groups",
    rerank: Callable[[GroupedExample, list[str]], ScoredCandidates] | None = None,
    tie_rule: str = "pessimistic",
) -> list[tuple[GroupedExample, np.ndarray]]:
    """Each 99-negative example with one score per candidate, under a protocol:

    'pooled': the 100 candidates ranked together by their in-group scores;
    'groups' (the paper's): each group's winner goes to a final round, which `rerank` scores (given
    the example and the winners, it returns the final instruction's scored candidates, e.g. via
    `instructions.generator.with_candidates`); see `final_round_scores`.
    """
    examples = collect_groups(scored_groups)
    if protocol == "pooled":
        return [(e, direct_scores(e)) for e in examples]
    if protocol == "groups":
        if rerank is None:
            raise ValueError("protocol='groups' needs a rerank function for the final round")
        rows = []
        for e in examples:
            winners = group_winners(e, tie_rule)
            rows.append((e, final_round_scores(e, winners, rerank(e, winners))))
        return rows
    raise ValueError(f"unknown grouped protocol {protocol!r}; expected 'pooled' or 'groups'")


def rank_groups(
    scored_groups: Sequence[ScoredCandidates],
    *,
    protocol: str = "groups",
    rerank: Callable[[GroupedExample, list[str]], ScoredCandidates] | None = None,
    tie_rule: str = "pessimistic",
    hr_ks: Sequence[int] = metrics.PAPER_HR_KS,
    ndcg_ks: Sequence[int] = metrics.PAPER_NDCG_KS,
) -> metrics.RankingMetrics:
    """Metrics of 99-negative examples scored group by group (protocols as in `grouped_rows`)."""
    rows = grouped_rows(scored_groups, protocol=protocol, rerank=rerank, tie_rule=tie_rule)
    return metrics.evaluate_rankings(
        [r for _, r in rows], [e.label_index for e, _ in rows], tie_rule=tie_rule, hr_ks=hr_ks, ndcg_ks=ndcg_ks
    )
