"""Times preprocessing on a synthetic Games-sized log (default 50k users, ~400k interactions).

    python tools/bench_preprocess.py [--users 50000] [--interactions 400000] [--items 17000]

The log mimics Amazon Video Games 2018 after 5-core (PAPER.md: 50,546 users, 16,859 items,
410,907 interactions): Zipf-like item popularity, sequence lengths of at least 5 with a long
tail, timestamps with ties, a few repeated (user, item) pairs and a short review per
interaction. Prints wall and CPU seconds of prepare_data, write_prepared and load_prepared.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from instructrec_jax.data.preprocess import (PreprocessConfig, load_prepared, prepare_data,
                                             write_prepared)
from instructrec_jax.data.types import Interaction, Item, RawDataset


def synthetic_log(users: int, interactions: int, items: int, seed: int = 0) -> RawDataset:
    """A random log with the shape of a 5-core Amazon category (see the module docstring)."""
    rng = np.random.default_rng(seed)
    extra = max(interactions - 5 * users, 0)
    lengths = 5 + rng.multinomial(extra, rng.dirichlet(np.full(users, 0.5)))
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    item_of = rng.choice(items, size=int(lengths.sum()), p=popularity)
    times = 1_400_000_000 + rng.integers(0, 5_000, size=item_of.size) * 86_400  # day granularity
    log = []
    cursor = 0
    for user, length in enumerate(lengths.tolist()):
        for k in range(cursor, cursor + length):
            log.append(Interaction(f"U{user:06d}", f"B{item_of[k]:08d}", int(times[k]),
                                   float(1 + k % 5), f"review {k}", None))
        cursor += length
    catalogue = {f"B{i:08d}": Item(f"B{i:08d}", f"Game number {i}", ("Video Games", "PC"), "Brand")
                 for i in range(items)}
    return RawDataset("synthetic-games", log, catalogue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--interactions", type=int, default=400_000)
    parser.add_argument("--items", type=int, default=17_000)
    args = parser.parse_args()
    start = time.perf_counter()
    raw = synthetic_log(args.users, args.interactions, args.items)
    print(f"synthetic log: {len(raw.interactions):,} interactions "
          f"({time.perf_counter() - start:.1f} s to build)")
    timings = {}

    def timed(step, call):
        wall, cpu = time.perf_counter(), time.process_time()
        result = call()
        timings[step] = (time.perf_counter() - wall, time.process_time() - cpu)
        return result

    data = timed("prepare_data", lambda: prepare_data(raw, PreprocessConfig()))
    print(data.stats_markdown())
    print(f"train {len(data.train):,}, valid {len(data.valid):,}, test {len(data.test):,}, "
          f"search {', '.join(f'{k} {len(v):,}' for k, v in data.search.items())}\n")
    with tempfile.TemporaryDirectory() as directory:
        timed("write_prepared", lambda: write_prepared(data, directory))
        timed("load_prepared", lambda: load_prepared(directory))
    print("| step | wall s | CPU s |\n|---|---:|---:|")
    for step, (wall, cpu) in timings.items():
        print(f"| {step} | {wall:.1f} | {cpu:.1f} |")

if __name__ == "__main__":
    main()
