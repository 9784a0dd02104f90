"""`instructrec demo` (`make demo`): the whole job on the embedded ml-100k, on a laptop's CPU.

It runs, in this process and one after the other, the very commands a user would type, printing
each one first so that any step can be rerun or changed by hand:

1. `instructrec prepare`: ml-100k from the recbole wheel (fetched once into the cache), 5-core
   filtering, chronological leave-one-out splits, the scenario instructions with items written as
   id tokens, a SentencePiece vocabulary with one piece per item; then the task inspection summary.
2. `instructrec train` with `gin/experiments/ml100k_demo.gin`: the tiny-budget model and recipe
   that issue 6's ablations chose (BENCHMARKS.md), a fixed number of steps, progress with ETA.
3. `instructrec eval` with `gin/experiments/ml100k_demo_eval.gin`: every scenario on validation
   and test, per template and best-on-validation, against popularity, item-kNN and SASRec on the
   very same candidate sets; `results.md`, `results.png` and `metrics.json`.

Everything goes under `--work-dir` (default `demo_output/`): `prepared/`, `model/` (checkpoints,
config.gin, model-info.txt, TensorBoard summaries) and `report/`. A second run reuses the prepared
data and resumes (or skips) training from the checkpoint, so an interrupted demo continues.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

DATASET_NAME = "ml100k_demo"
DATASET_FOLDER = "ml100kdemo"
# The instruction types trained and evaluated: the paper's five ranking scenarios.
DEMO_TYPES = ("p1_i0_t3", "p0_i2_t3", "p1p2_i0_t3", "p1_i1_t3", "p1_i2_t3")
TRAIN_GIN = "gin/experiments/ml100k_demo.gin"
EVAL_GIN = "gin/experiments/ml100k_demo_eval.gin"


def prepare_command(work_dir: Path) -> list[str]:
    return ["prepare", "--source", "embedded-ml-100k", "--name", DATASET_NAME,
            "--out-dir", str(work_dir / "prepared"), "--renderer", "id_token",
            "--types", ",".join(DEMO_TYPES), "--neg99", "none", "--vocab-size", "2000",
            "--workers", "2"]


def inspect_command(work_dir: Path) -> list[str]:
    return ["inspect-task", "--data-dir", str(work_dir / "prepared"),
            "--task", f"instructrec_{DATASET_FOLDER}_p1_i0_t3", "--num-examples", "1",
            "--lengths", "{'inputs': 192, 'targets': 4}", "--max-summary-examples", "1000"]


def train_command(work_dir: Path, gin_file: str, extra: Sequence[str]) -> list[str]:
    return ["train", f"--gin_file={gin_file}", f"--gin.MODEL_DIR='{work_dir / 'model'}'", *extra]


def eval_command(work_dir: Path, gin_file: str, extra: Sequence[str]) -> list[str]:
    return ["eval", f"--gin_file={gin_file}",
            f"--gin.CHECKPOINT_PATH='{work_dir / 'model' / 'checkpoints'}'",
            f"--gin.EVAL_OUTPUT_DIR='{work_dir / 'report'}'", *extra]


def _run(command: list[str], runner: Callable[[list[str]], int]) -> None:
    print(f"\n$ instructrec {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    code = runner(command)
    if code:
        raise SystemExit(f"demo: `instructrec {command[0]}` failed with status {code}")
    print(f"({command[0]}: {time.perf_counter() - started:.0f} s)", flush=True)


def _cli(command: list[str]) -> int:
    import gin

    from instructrec_jax import cli

    gin.clear_config()
    return cli.main(command)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="instructrec demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="demo_output", help="where everything is written")
    parser.add_argument("--train-gin", default=TRAIN_GIN, help="the training experiment gin file")
    parser.add_argument("--eval-gin", default=EVAL_GIN, help="the evaluation gin file")
    parser.add_argument("--train-binding", action="append", default=[], metavar="--gin.X=V",
                        help="extra gin flag for training, e.g. --train-binding=--gin.TRAIN_STEPS=100")
    parser.add_argument("--eval-binding", action="append", default=[], metavar="--gin.X=V",
                        help="extra gin flag for evaluation, e.g. --eval-binding=--gin.MAX_EXAMPLES=50")
    parser.add_argument("--skip-train", action="store_true", help="evaluate the existing checkpoint")
    return parser


def main(argv: Sequence[str] | None = None, runner: Callable[[list[str]], int] = _cli) -> int:
    args = _parser().parse_args(argv)
    work_dir = Path(args.work_dir).expanduser().resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    # The experiment gin files name the dataset; tasks are registered from this folder.
    os.environ["INSTRUCTREC_DATA_DIR"] = str(work_dir / "prepared")
    started = time.perf_counter()
    prepared = work_dir / "prepared" / DATASET_FOLDER
    if (prepared / "manifest.json").exists():
        print(f"demo: reusing the prepared dataset {prepared} (delete it to prepare again)")
    else:
        _run(prepare_command(work_dir), runner)
    _run(inspect_command(work_dir), runner)
    if not args.skip_train:
        _run(train_command(work_dir, args.train_gin, args.train_binding), runner)
    _run(eval_command(work_dir, args.eval_gin, args.eval_binding), runner)
    print(f"\ndemo: done in {(time.perf_counter() - started) / 60:.1f} min. Report: "
          f"{work_dir / 'report' / 'results.md'} (and results.png, metrics.json); "
          f"checkpoint: {work_dir / 'model' / 'checkpoints'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
