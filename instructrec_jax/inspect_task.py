"""Task inspection: look at a SeqIO task or mixture before spending accelerator hours on it.

`instructrec inspect-task --task instructrec_ml100k_p1_i0_t3` (or `python -m
instructrec_jax.inspect_task …`) prints a few decoded examples and a summary: examples per split,
token-length mean / p95 / max of inputs and targets (EOS included), the share of examples that the
configured feature lengths would truncate, and the count of examples per template.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from typing import Iterable, Sequence

import numpy as np

DEFAULT_LENGTHS = {"inputs": 512, "targets": 64}


@dataclasses.dataclass(frozen=True)
class LengthStats:
    """Token lengths of one feature over a sample of examples."""

    count: int
    mean: float
    p95: float
    max: int
    truncated: float  # share of examples longer than the configured length

    @classmethod
    def of(cls, lengths: Sequence[int], limit: int) -> "LengthStats":
        if not lengths:
            return cls(0, 0.0, 0.0, 0, 0.0)
        a = np.asarray(lengths)
        return cls(len(a), float(a.mean()), float(np.percentile(a, 95)), int(a.max()),
                   float((a > limit).mean()))


@dataclasses.dataclass
class SplitSummary:
    """What inspection reports for one split of a task or mixture."""

    split: str
    num_examples: int
    sampled: int
    inputs: LengthStats
    targets: LengthStats
    templates: dict[str, int]


def parse_lengths(text: str) -> dict[str, int]:
    """Parses 'inputs=512,targets=64' (or a Python-dict-like "{'inputs': 512, ...}")."""
    cleaned = text.strip().strip("{}").replace("'", "").replace('"', "").replace(":", "=")
    lengths = {}
    for part in filter(None, (p.strip() for p in cleaned.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in DEFAULT_LENGTHS:
            raise ValueError(f"bad feature length {part!r}: expected inputs=N,targets=M")
        try:
            lengths[key.strip()] = int(value)
        except ValueError:
            raise ValueError(f"bad feature length {part!r}: {value!r} is not an integer") from None
    return {**DEFAULT_LENGTHS, **lengths}


def _component_tasks(task_or_mixture) -> list[tuple[object, float]]:
    """(task, rate) pairs: the task itself with rate 1, or a mixture's tasks with their rates."""
    import seqio

    if isinstance(task_or_mixture, seqio.Mixture):
        return [(t, float(task_or_mixture.get_rate(t))) for t in task_or_mixture.tasks]
    return [(task_or_mixture, 1.0)]


def _template_counts(task, split: str) -> dict[str, int]:
    from instructrec_jax import tasks as registry

    try:
        info = registry.task_info(task.name)
    except KeyError:
        return {}
    return dict(info.splits.get(split, {}).get("templates", {}))


def _lengths(examples: Iterable[dict], limit: int) -> tuple[list[int], list[int]]:
    inputs, targets = [], []
    for i, ex in enumerate(examples):
        if i >= limit:
            break
        inputs.append(int(ex["inputs"].shape[0]) if "inputs" in ex else 0)
        targets.append(int(ex["targets"].shape[0]))
    return inputs, targets


def summarize(task_or_mixture, split: str, lengths: dict[str, int], max_examples: int
              ) -> SplitSummary | None:
    """Counts and token-length statistics of one split; None if no component has that split."""
    components = [(t, r) for t, r in _component_tasks(task_or_mixture) if split in t.splits]
    if not components:
        return None
    counts = {t.name: int(t.num_input_examples(split) or 0) for t, _ in components}
    total = sum(counts.values())
    templates: collections.Counter = collections.Counter()
    all_inputs: list[int] = []
    all_targets: list[int] = []
    for task, _ in components:
        templates.update(_template_counts(task, split))
        share = max(1, round(max_examples * counts[task.name] / max(total, 1)))
        # sequence_length=None: tokenized with EOS, nothing trimmed, so truncation can be measured.
        ds = task.get_dataset(sequence_length=None, split=split, shuffle=False, num_epochs=1,
                              try_in_mem_cache=False)
        ins, tgs = _lengths(ds.as_numpy_iterator(), share)
        all_inputs += ins
        all_targets += tgs
    return SplitSummary(
        split=split,
        num_examples=total,
        sampled=len(all_targets),
        inputs=LengthStats.of(all_inputs, lengths["inputs"]),
        targets=LengthStats.of(all_targets, lengths["targets"]),
        templates=dict(sorted(templates.items())),
    )


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def format_examples(task_or_mixture, split: str, n: int, lengths: dict[str, int], seed: int) -> str:
    """The first `n` examples of a split (a mixture samples its tasks), decoded."""
    # A mixture samples its tasks by rate (seeded); a task is read in file order.
    kwargs = {} if hasattr(task_or_mixture, "tasks") else {"try_in_mem_cache": False}
    ds = task_or_mixture.get_dataset(sequence_length=lengths, split=split, shuffle=False,
                                     num_epochs=1, seed=seed, **kwargs)
    vocab = task_or_mixture.output_features["targets"].vocabulary
    lines = []
    for i, ex in enumerate(ds.as_numpy_iterator()):
        if i >= n:
            break
        lines.append(f"--- example {i + 1} [{_text(ex.get('instruction_type', b''))} "
                     f"{_text(ex.get('template_id', b''))}] user={_text(ex.get('user_id', b''))}")
        lines.append(f"inputs  ({len(ex['inputs'])} tokens): {vocab.decode(ex['inputs'].tolist())}")
        lines.append(f"targets ({len(ex['targets'])} tokens): {vocab.decode(ex['targets'].tolist())}")
        candidates = ex.get("candidates")
        if candidates is not None and len(candidates):
            label = int(ex.get("label_index", -1))
            shown = ", ".join(_text(c) for c in candidates[:10])
            more = f", … ({len(candidates)} in all)" if len(candidates) > 10 else ""
            lines.append(f"candidates: {shown}{more}; true item at index {label}")
    if not lines:
        lines.append(f"(split {split!r} has no examples)")
    return "\n".join(lines)


def format_summary(name: str, summaries: list[SplitSummary], lengths: dict[str, int]) -> str:
    out = [f"Summary of {name} (configured lengths: inputs {lengths['inputs']}, "
           f"targets {lengths['targets']})", "",
           "| split | examples | sampled | inputs mean | p95 | max | truncated | "
           "targets mean | p95 | max | truncated |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        out.append(
            f"| {s.split} | {s.num_examples:,} | {s.sampled:,} | {s.inputs.mean:.1f} | "
            f"{s.inputs.p95:.0f} | {s.inputs.max} | {s.inputs.truncated:.1%} | "
            f"{s.targets.mean:.1f} | {s.targets.p95:.0f} | {s.targets.max} | "
            f"{s.targets.truncated:.1%} |")
    for s in summaries:
        if s.templates:
            out += ["", f"Examples per template ({s.split}):"]
            out += [f"  {tid}: {count:,}" for tid, count in s.templates.items()]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instructrec inspect-task", description=__doc__.split("\n")[0])
    parser.add_argument("--task", help="task or mixture name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the registered tasks and mixtures")
    parser.add_argument("--split", action="append",
                        help="split(s) to inspect (repeatable; default: every split of the task)")
    parser.add_argument("--num-examples", type=int, default=3, help="examples to print per split")
    parser.add_argument("--lengths", default="inputs=512,targets=64",
                        help="feature lengths used for truncation shares, e.g. inputs=512,targets=64")
    parser.add_argument("--max-summary-examples", type=int, default=20_000,
                        help="examples tokenized per split for the length statistics")
    parser.add_argument("--data-dir", action="append",
                        help="extra folder of prepared datasets (beside $INSTRUCTREC_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        lengths = parse_lengths(args.lengths)
    except ValueError as e:
        print(f"inspect-task: {e}", file=sys.stderr)
        return 2

    from pathlib import Path

    from instructrec_jax import tasks as registry

    for directory in args.data_dir or []:
        registry.register_all([Path(directory).expanduser()])
    if args.list or not args.task:
        names = registry.registered_names()
        print("\n".join(names) if names else
              f"no prepared datasets under {', '.join(map(str, registry.data_dirs()))}; "
              "run `instructrec prepare` first")
        return 0 if args.list else 2
    try:
        task = registry.get_task_or_mixture(args.task)
    except ValueError as e:
        print(f"inspect-task: {e}", file=sys.stderr)
        return 2

    splits = args.split or [s for s in ("train", "validation", "test")
                            if any(s in t.splits for t, _ in _component_tasks(task))]
    summaries = []
    for split in splits:
        print(f"\n=== {args.task} / {split} ===")
        print(format_examples(task, split, args.num_examples, lengths, args.seed))
        summary = summarize(task, split, lengths, args.max_summary_examples)
        if summary is not None:
            summaries.append(summary)
    print()
    print(format_summary(args.task, summaries, lengths))
    return 0


if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
