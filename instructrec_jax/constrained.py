"""Generation constrained to the catalogue (matching, T2): every decoded sequence is an item's target.

`CatalogueTrie` holds each item's target token sequence (its text tokenized with the dataset
vocabulary, ending with EOS). On the host it is a prefix trie (dict of dicts) for lookups and
checks. Inside the compiled decoding loop the same constraint is computed without pointers: a
prefix of length `step` may continue with token v iff some item sequence starts with the prefix
and has v at position `step` — i.e. v is a child of the prefix's trie node. That is one
comparison of the prefix against the [items, length] token table per step, which XLA vectorises
and which needs no per-node bookkeeping in the loop.

Items whose texts tokenize identically (two films with one title) share one sequence; a generated
sequence maps back to all of them (`items_for`), listed in catalogue order.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from instructrec_jax.ranking import EOS_ID, Tokenizer, bucket_length, tokenize

DISALLOWED = -1.0e9


class CatalogueTrie:
    """The catalogue's item token sequences as a prefix trie and as a jit-able logits constraint."""

    def __init__(self, item_targets: Mapping[str, str], tokenizer: Tokenizer, *, max_length: int | None = 64):
        if not item_targets:
            raise ValueError("an empty catalogue cannot constrain generation")
        by_sequence: dict[tuple[int, ...], list[str]] = {}
        for item_id, text in item_targets.items():
            ids = tuple(tokenize(tokenizer, text, max_length))
            by_sequence.setdefault(ids, []).append(item_id)
        self.sequences: list[tuple[int, ...]] = sorted(by_sequence)
        self._items = {seq: tuple(ids) for seq, ids in by_sequence.items()}
        self.max_length = max(len(s) for s in self.sequences)
        table = np.zeros((len(self.sequences), self.max_length), dtype=np.int32)
        for row, seq in enumerate(self.sequences):
            table[row, : len(seq)] = seq
        self.table = table
        self.root: dict = {}
        for seq in self.sequences:
            node = self.root
            for token in seq:
                node = node.setdefault(token, {})
        # Built once: `predict_batch` caches its compiled function by the constraint's identity.
        self.constraint = self._make_constraint()

    # -- host side -----------------------------------------------------------------------------
    def allowed_next(self, prefix: Sequence[int]) -> set[int]:
        """Tokens that may follow `prefix` (empty if the prefix leaves the catalogue or is complete)."""
        node = self.root
        for token in prefix:
            if token not in node:
                return set()
            node = node[token]
        return set(node)

    def items_for(self, tokens: Sequence[int]) -> tuple[str, ...]:
        """The item ids whose sequence is `tokens` cut after the first EOS; () if none is."""
        tokens = [int(t) for t in tokens]
        if EOS_ID in tokens:
            tokens = tokens[: tokens.index(EOS_ID) + 1]
        return self._items.get(tuple(tokens), ())

    # -- device side -----------------------------------------------------------------------------
    def _make_constraint(self):
        table = jnp.asarray(self.table)  # [S, Lmax]
        num_sequences, width = self.table.shape
        positions = jnp.arange(width)

        def constraint(step, prefix_tokens, log_probs):
            """Pushes every token that would leave the catalogue to DISALLOWED (see module docstring)."""
            n, vocab = log_probs.shape
            length = prefix_tokens.shape[1]
            # compare the first min(length, width) prefix positions; those >= step are not yet written
            cols = min(length, width)
            prefix = prefix_tokens[:, None, :cols]  # [n, 1, cols]
            same = (table[None, :, :cols] == prefix) | (positions[None, None, :cols] >= step)
            matches = jnp.all(same, axis=-1)  # [n, S]
            in_range = step < width
            next_token = jnp.where(in_range, table[:, jnp.minimum(step, width - 1)], 0)  # [S]
            rows = jnp.broadcast_to(jnp.arange(n)[:, None], (n, num_sequences))
            cols_idx = jnp.broadcast_to(next_token[None, :], (n, num_sequences))
            # a sequence shorter than step + 1 offers token 0 here; it already ended with EOS
            offered = (matches & (next_token[None, :] > 0) & in_range).astype(jnp.int32)
            allowed = jnp.zeros((n, vocab), jnp.int32).at[rows, cols_idx].max(offered)
            return jnp.where(allowed > 0, log_probs, DISALLOWED)

        return constraint


@dataclasses.dataclass(frozen=True)
class GeneratedItem:
    """One item generated for an input: its id(s), beam score and summed log-likelihood."""

    item_ids: tuple[str, ...]  # all items sharing the generated text, catalogue order
    text_tokens: tuple[int, ...]
    beam_score: float  # the beam's score (log p / brevity penalty, T5X's alpha)
    rank: int


def generate_items(
    model,
    params,
    tokenizer: Tokenizer,
    trie: CatalogueTrie,
    inputs: Sequence[str],
    *,
    top_k: int = 10,
    alpha: float = 0.6,
    batch_size: int = 8,
    max_input_length: int | None = 512,
) -> list[list[GeneratedItem]]:
    """The top-k distinct catalogue items per input, by constrained beam search (k beams)."""
    if top_k > len(trie.sequences):
        raise ValueError(f"top_k={top_k} but the catalogue holds only {len(trie.sequences)} distinct item texts")
    out: list[list[GeneratedItem]] = []
    encoded = [tokenize(tokenizer, text, max_input_length) for text in inputs]
    width = bucket_length(max((len(e) for e in encoded), default=1), 32)
    for start in range(0, len(inputs), batch_size):
        chunk = encoded[start : start + batch_size]
        tokens = np.zeros((batch_size, width), dtype=np.int32)
        for row, ids in enumerate(chunk):
            tokens[row, : len(ids)] = ids
        seqs, scores = model.predict_batch(
            params,
            {"encoder_input_tokens": tokens},
            method="beam",
            num_beams=top_k,
            alpha=alpha,
            max_decode_length=trie.max_length,
            return_all=True,
            logits_constraint=trie.constraint,
        )
        seqs, scores = np.asarray(seqs), np.asarray(scores)
        for row in range(len(chunk)):
            found = []
            for beam in range(top_k):
                ids = trie.items_for(seqs[row, beam])
                if not ids:  # cannot happen unless the constraint is broken: say so loudly
                    raise RuntimeError(
                        f"constrained beam produced a sequence outside the catalogue: {seqs[row, beam].tolist()}"
                    )
                cut = tuple(int(t) for t in seqs[row, beam][: list(seqs[row, beam]).index(EOS_ID) + 1])
                found.append(GeneratedItem(ids, cut, float(scores[row, beam]), beam + 1))
            out.append(found)
    return out
