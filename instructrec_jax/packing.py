"""First-fit packing of encoder-decoder examples over a pool: fewer padded positions than SeqIO's.

SeqIO's `trim_and_pack_dataset` (what `EncDecFeatureConverter(pack=True)` runs) packs greedily in
arrival order into one open row: an example that does not fit closes the row and starts the next,
even when an earlier row still has room. When inputs and targets must both fit, that leaves much
of each row empty: for inputs uniform in [64, 256] of 256 and targets in [8, 32] of 32 it packs
1.06 examples per row. First-fit over a pool of examples puts each example into the first row
(opened in this pool) where both its inputs and its targets still fit: 1.22 per row on the same
examples with a pool of 256, 1.26 with 2,048 (BENCHMARKS.md, `tools/packing_stats.py`).

`FirstFitEncDecFeatureConverter(pool_size=…)` is SeqIO's `EncDecFeatureConverter` with only the
packing step replaced: the same trimming, the same packed features (`inputs`, `targets` and their
`_segment_ids` / `_positions`, segments numbered from 1 in each row, positions restarting at 0),
then SeqIO's own conversion into model features (autoregressive decoder inputs that restart at
every segment, loss weights). The rows are a pure function of the incoming examples, so the
stream stays deterministic and a resumed run that skips consumed batches lands on the same data.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

PACKED_SUFFIXES = ("", "_segment_ids", "_positions")


def first_fit_rows(lengths: Sequence[Sequence[int]], capacities: Sequence[int]) -> list[list[int]]:
    """Indices of the examples in each row: every example, in order, goes into the first row where
    each of its features still fits its capacity (a new row if none). `lengths[i][f]` is example
    i's length of feature f."""
    rows: list[list[int]] = []
    used: list[list[int]] = []
    for index, sizes in enumerate(lengths):
        if any(size > cap for size, cap in zip(sizes, capacities)):
            raise ValueError(f"example {index} has lengths {list(sizes)}, longer than the row {list(capacities)}; "
                             "trim before packing")
        for row, filled in zip(rows, used):
            if all(f + size <= cap for f, size, cap in zip(filled, sizes, capacities)):
                row.append(index)
                for k, size in enumerate(sizes):
                    filled[k] += size
                break
        else:
            rows.append([index])
            used.append(list(sizes))
    return rows


def pack_pool(features: Mapping[str, np.ndarray], lengths: Mapping[str, np.ndarray],
              packed_lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Packs one pool of examples. `features[k]`: [pool, max_len] right-padded tokens;
    `lengths[k]`: [pool] each example's real length. Returns, for every key k, `k`,
    `k_segment_ids` and `k_positions` as [rows, packed_lengths[k]] int32 arrays."""
    keys = list(packed_lengths)
    pool = len(lengths[keys[0]])
    sizes = [[int(lengths[k][i]) for k in keys] for i in range(pool)]
    rows = first_fit_rows(sizes, [packed_lengths[k] for k in keys])
    out = {f"{k}{suffix}": np.zeros((len(rows), packed_lengths[k]), np.int32)
           for k in keys for suffix in PACKED_SUFFIXES}
    for r, members in enumerate(rows):
        for f, k in enumerate(keys):
            at = 0
            for segment, i in enumerate(members, start=1):
                n = sizes[i][f]
                out[k][r, at:at + n] = features[k][i, :n]
                out[f"{k}_segment_ids"][r, at:at + n] = segment
                out[f"{k}_positions"][r, at:at + n] = np.arange(n)
                at += n
    return out


def first_fit_pack_dataset(dataset: tf.data.Dataset, packed_lengths: Mapping[str, int],
                           pool_size: int) -> tf.data.Dataset:
    """`seqio.utils.trim_and_pack_dataset`'s output format, packed first-fit over pools of
    `pool_size` consecutive examples (the last pool may be smaller)."""
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    keys = list(packed_lengths)
    for k in keys:
        if k not in dataset.element_spec:
            raise ValueError(f"feature {k!r} to pack is not in the dataset (it has {sorted(dataset.element_spec)})")
        if not dataset.element_spec[k].shape.is_compatible_with(tf.TensorShape([None])):
            raise ValueError(f"feature {k!r} must be one-dimensional to be packed, "
                             f"got shape {dataset.element_spec[k].shape}")

    def trim(example):
        out = {}
        for k in keys:
            tokens = tf.cast(example[k][:packed_lengths[k]], tf.int32)
            out[k], out[f"{k}_length"] = tokens, tf.size(tokens)
        return out

    ds = dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.padded_batch(pool_size, padded_shapes={**{k: [None] for k in keys},
                                                   **{f"{k}_length": [] for k in keys}})
    names = [(k, f"{k}{suffix}") for k in keys for suffix in PACKED_SUFFIXES]

    def pack(batch):
        def run(*arrays):
            features = dict(zip(keys, arrays[:len(keys)]))
            lengths = dict(zip(keys, arrays[len(keys):]))
            packed = pack_pool(features, lengths, packed_lengths)
            return [packed[name] for _, name in names]

        results = tf.numpy_function(run, [batch[k] for k in keys] + [batch[f"{k}_length"] for k in keys],
                                    [tf.int32] * len(names), stateful=False)
        for (key, _), value in zip(names, results):
            value.set_shape([None, packed_lengths[key]])
        return {name: value for (_, name), value in zip(names, results)}

    return ds.map(pack, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


class FirstFitEncDecFeatureConverter(seqio.EncDecFeatureConverter):
    """`seqio.EncDecFeatureConverter(pack=True)` with first-fit packing over pools of
    `pool_size` examples instead of SeqIO's one-open-row packing (see the module docstring)."""

    def __init__(self, pool_size: int = 256, **kwargs):
        kwargs.setdefault("pack", True)
        if not kwargs["pack"]:
            raise ValueError("FirstFitEncDecFeatureConverter packs; use seqio.EncDecFeatureConverter(pack=False)")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        super().__init__(**kwargs)
        self._pool_size = pool_size

    def _pack_or_pad(self, ds: tf.data.Dataset, packed_lengths: Mapping[str, int]) -> tf.data.Dataset:
        return first_fit_pack_dataset(ds, packed_lengths, self._pool_size)
