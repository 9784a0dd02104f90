"""The `instructrec` command: one entry point that dispatches to each subcommand's module.

Subcommand modules are imported lazily so that, for example, `instructrec tpu --dry-run` does not
pay for importing TensorFlow and JAX.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line help). Each module exposes `main(argv: list[str]) -> int | None`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("instructrec_jax.prepare", "read raw logs, filter, split and write instructions"),
    "inspect-task": ("instructrec_jax.inspect_task", "print examples and statistics of a SeqIO task"),
    "train": ("instructrec_jax.train", "gin-configured T5X-style fine-tuning"),
    "eval": ("instructrec_jax.evaluate", "paper-protocol ranking evaluation of a checkpoint"),
    "compare": ("instructrec_jax.compare", "paired bootstrap of two methods' per-example eval rankings"),
    "infer": ("instructrec_jax.infer", "batched score/predict inference to JSONL"),
    "recommend": ("instructrec_jax.recommend", "rank items for a user's history and/or request"),
    "convert-checkpoint": ("instructrec_jax.checkpoints.convert", "import/export HF and T5X checkpoints"),
    "tpu": ("instructrec_jax.tpu", "create, set up and run on Cloud TPU VMs"),
    "demo": ("instructrec_jax.demo", "the end-to-end ml-100k job"),
}


def _usage() -> str:
    lines = ["usage: instructrec <command> [args]", "", "commands:"]
    width = max(len(name) for name in SUBCOMMANDS)
    for name, (_, help_text) in SUBCOMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    # TensorFlow's C++ start-up chatter (no CUDA here, CPU feature notes) is noise for a CLI user.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"instructrec: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
