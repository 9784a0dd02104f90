"""Benchmark: instruction generation (and optionally writing) on a synthetic Games-sized log.

The paper's Amazon Games set has 50,546 users, 16,859 items and 410,907 interactions after
5-core filtering. This tool builds a synthetic log of that shape (Zipf-skewed item popularity,
category paths under "Video Games", brands, years, descriptions, reviews with opinion sentences),
preprocesses it with the project's own code, then times `iter_instructions` for every type and
template draw, and, with --write, the TFRecord writing too. Wall and CPU seconds are both
reported because the development machine is shared.

    python tools/bench_instructions.py                     # generation only, all types
    python tools/bench_instructions.py --write /tmp/bench  # generation + TFRecord shards
    python tools/bench_instructions.py --users 5000        # a quick smaller run
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructrec_jax.data.preprocess import PreprocessConfig, prepare_data  # noqa: E402
from instructrec_jax.data.types import Interaction, Item, RawDataset  # noqa: E402
from instructrec_jax.instructions.generator import GeneratorOptions, iter_instructions  # noqa: E402
from instructrec_jax.instructions.render import ItemRenderer  # noqa: E402

PLATFORMS = ("PC", "PlayStation 4", "Xbox One", "Nintendo Switch", "Nintendo 3DS", "PlayStation 3")
KINDS = ("Games", "Accessories", "Digital Games")
GENRES = ("Action", "Adventure", "Racing", "Role-Playing", "Sports", "Strategy", "Puzzle",
          "Fighting", "Shooter", "Simulation", "Controllers", "Headsets", "Cables")
BRANDS = tuple(f"Studio {name}" for name in ("Aurora", "Basalt", "Cobalt", "Delta", "Ember",
                                             "Fjord", "Granite", "Harbor", "Iris", "Juniper"))
WORDS = ("dragon knight galaxy racer legend shadow storm quest empire hero arena pixel neon "
         "castle rogue titan ocean forest frontier rally champion tactics dungeon ranger").split()
DESCRIPTION_WORDS = ("explore open world multiplayer campaign online coop story battle upgrade "
                     "weapons vehicles puzzles levels graphics soundtrack wireless ergonomic "
                     "compatible rechargeable adjustable precision lighting splitscreen "
                     "characters missions crafting survival strategy tournament").split()
REVIEW_SENTENCES = (
    "I loved the story and the soundtrack.", "Great fun with friends on the weekend.",
    "Arrived quickly and works as described.", "Boring after a few hours of play.",
    "The controls feel solid and the graphics are beautiful.", "My son plays it every day.",
    "Not worth the price in my opinion.", "Best purchase I made this year, highly recommend.",
)


def synthetic_log(users: int, items: int, mean_length: float, seed: int,
                  zipf: float = 0.6) -> RawDataset:
    """A Games-shaped log: each user has at least 5 distinct items; item popularity falls as
    rank^-zipf (0.6 keeps about as many items through the 5-core filter as the real set)."""
    rng = random.Random(seed)
    catalogue: dict[str, Item] = {}
    for i in range(items):
        platform, kind, genre = rng.choice(PLATFORMS), rng.choice(KINDS), rng.choice(GENRES)
        title = " ".join(rng.sample(WORDS, rng.randint(1, 3))).title() + f" {i % 97 + 1}"
        catalogue[f"B{i:09d}"] = Item(
            item_id=f"B{i:09d}", title=title, categories=("Video Games", platform, kind, genre),
            brand=rng.choice(BRANDS), year=rng.randint(1995, 2018),
            description=" ".join(rng.choices(DESCRIPTION_WORDS, k=rng.randint(15, 60))) + ".")
    ids = list(catalogue)
    weights = list(itertools.accumulate((rank + 1) ** -zipf for rank in range(items)))
    extra_mean = max(mean_length - 5.0, 0.1)
    log = []
    for u in range(users):
        length = 5 + min(int(rng.expovariate(1.0 / extra_mean)), 200)
        chosen: dict[str, None] = {}
        while len(chosen) < length:
            chosen.setdefault(rng.choices(ids, cum_weights=weights)[0])
        for k, item in enumerate(chosen):
            review = " ".join(rng.sample(REVIEW_SENTENCES, rng.randint(1, 3)))
            log.append(Interaction(f"A{u:07d}", item, 1_400_000_000 + u * 97 + k * 86_400,
                                   float(rng.randint(1, 5)), review, None))
    return RawDataset(name="synthetic-games", interactions=log, items=catalogue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=50_546)
    parser.add_argument("--items", type=int, default=17_000,
                        help="catalogue size before filtering (~16.9k survive the 5-core filter)")
    parser.add_argument("--mean-length", type=float, default=8.6,
                        help="mean raw sequence length (the real set: 8.13 after filtering)")
    parser.add_argument("--zipf", type=float, default=0.6, help="popularity skew exponent")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--types", default=None, help="comma-separated types (default: all)")
    parser.add_argument("--templates-per-example", default="1")
    parser.add_argument("--max-train-examples-per-type", type=int, default=None)
    parser.add_argument("--renderer", default="title")
    parser.add_argument("--negatives", default="9,99", help="evaluation candidate set sizes")
    parser.add_argument("--neg99", default="scenarios", choices=("scenarios", "all", "none"))
    parser.add_argument("--max-eval-examples", type=int, default=None)
    parser.add_argument("--write", metavar="DIR", help="also write TFRecord shards under DIR "
                                                      "(removed afterwards)")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --write: processes writing types in parallel")
    args = parser.parse_args(argv)

    def clock():
        """Wall seconds, and CPU seconds of this process plus its finished worker processes."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.perf_counter(), time.process_time() + children.ru_utime + children.ru_stime

    rows = []
    wall, cpu = clock()
    raw = synthetic_log(args.users, args.items, args.mean_length, args.seed, args.zipf)
    rows.append(("synthetic log", *(a - b for a, b in zip(clock(), (wall, cpu))),
                 len(raw.interactions)))

    wall, cpu = clock()
    negatives = tuple(int(n) for n in args.negatives.split(","))
    data = prepare_data(raw, PreprocessConfig(negatives=negatives, seed=args.seed))
    rows.append(("preprocess (5-core, splits, candidates)",
                 *(a - b for a, b in zip(clock(), (wall, cpu))), data.stats.interactions))
    del raw

    per_example = args.templates_per_example
    options = GeneratorOptions(
        seed=args.seed, types=None if args.types is None else tuple(args.types.split(",")),
        renderer=ItemRenderer(args.renderer),
        templates_per_example=per_example if per_example == "all" else int(per_example),
        max_train_examples_per_type=args.max_train_examples_per_type, neg99=args.neg99,
        max_eval_examples=args.max_eval_examples)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    chars = 0

    def counted(triples):
        nonlocal chars
        for type_name, split, record in triples:
            counts[(type_name, split)] += 1
            chars += len(record.inputs) + len(record.targets)
            yield type_name, split, record

    wall, cpu = clock()
    if args.write:
        from instructrec_jax.data.preprocess import write_prepared
        from instructrec_jax.prepare import write_all_instructions

        target = Path(args.write) / "bench-instructions"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        write_prepared(data, target)  # worker processes load the data from here
        wall, cpu = clock()  # the timed part starts after the data files are written
        written = write_all_instructions(target, data, options, workers=args.workers)
        for type_name, splits in written.section.items():
            for split, entry in splits.items():
                counts[(type_name, split)] += entry["num_examples"]
        size = sum(f.stat().st_size for f in target.rglob("*.tfrecord"))
        shutil.rmtree(target)
        label = f"generate + write TFRecords ({args.workers} worker(s))"
    else:
        for _ in counted(iter_instructions(data, options)):
            pass
        size = 0
        label = "generate instructions"
    elapsed_wall, elapsed_cpu = (a - b for a, b in zip(clock(), (wall, cpu)))
    total = sum(counts.values())
    rows.append((label, elapsed_wall, elapsed_cpu, total))

    print(f"\n{data.stats_markdown()}")
    print(f"machine: {os.cpu_count()} CPUs visible, load average {os.getloadavg()[0]:.1f}")
    print("\n| stage | wall s | CPU s | items |\n|---|---:|---:|---:|")
    for name, w, c, n in rows:
        print(f"| {name} | {w:.1f} | {c:.1f} | {n:,} |")
    print(f"\n{total:,} records ("
          + (f"{chars / 1e9:.2f} G characters" if chars else f"{size / 1e9:.2f} GB of TFRecords")
          + "): "
          f"{total / elapsed_wall:,.0f} records/s wall, {total / elapsed_cpu:,.0f} records/s CPU")
    by_split = collections.Counter()
    for (_, split), n in counts.items():
        by_split[split] += n
    print("records per split: " + ", ".join(f"{s} {n:,}" for s, n in sorted(by_split.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
