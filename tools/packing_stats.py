"""Rows each packer needs for the same examples (counts, not timings: independent of the load).

    python tools/packing_stats.py --examples 2048 --lengths 256/32 --pools 16,64,256,2048

Examples are `tools/bench_train.py`'s synthetic ones (each length uniform in [L/4, L]); they go
through the trainer's converters: SeqIO's `EncDecFeatureConverter(pack=True)` (`PACKER='seqio'`)
and first-fit over pools of each size (`PACKER='first_fit'`, `PACK_POOL_SIZE`). Prints rows,
examples per row and the share of positions that hold real tokens, as a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def count_rows(examples, lengths: dict[str, int], converter) -> int:
    import tensorflow as tf

    dataset = tf.data.Dataset.from_generator(
        lambda: ({"inputs": np.asarray(i, np.int32), "targets": np.asarray(t, np.int32)} for i, t in examples),
        output_signature={k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")})
    return sum(1 for _ in converter(dataset, lengths).as_numpy_iterator())


def _lengths(value: str) -> tuple[int, int]:
    try:
        inputs, targets = (int(x) for x in value.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INPUTS/TARGETS, e.g. 256/32; got {value!r}") from None
    return inputs, targets


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2048)
    parser.add_argument("--lengths", default="256/32", type=_lengths, help="inputs/targets")
    parser.add_argument("--pools", default="16,64,256,2048", help="first-fit pool sizes")
    parser.add_argument("--vocab", type=int, default=32128)
    args = parser.parse_args(argv)
    import seqio

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train import synthetic_examples

    from instructrec_jax.packing import FirstFitEncDecFeatureConverter

    inputs_length, targets_length = args.lengths
    lengths = {"inputs": inputs_length, "targets": targets_length}
    examples = synthetic_examples(args.examples, inputs_length, targets_length, args.vocab)
    real = sum(len(i) + len(t) for i, t in examples)
    runs = [("none", len(examples)),
            ("SeqIO (`PACKER='seqio'`)", count_rows(examples, lengths, seqio.EncDecFeatureConverter(pack=True)))]
    for pool in (int(p) for p in args.pools.split(",")):
        runs.append((f"first-fit, pool {pool}",
                     count_rows(examples, lengths, FirstFitEncDecFeatureConverter(pool_size=pool))))
    print(f"{args.examples} examples, lengths {inputs_length}/{targets_length}\n")
    print("| packer | rows | examples per row | real tokens / positions |\n|---|---:|---:|---:|")
    for name, rows in runs:
        print(f"| {name} | {rows} | {len(examples) / rows:.3f} | "
              f"{real / (rows * (inputs_length + targets_length)):.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
