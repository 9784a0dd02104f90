"""Batched inference from a checkpoint to JSONL: score given targets, or predict (greedy, beam, sampling).

Input: a JSONL file of `{"inputs": ..., "targets": ... (optional), "id": ... (optional)}` objects,
or a SeqIO task/mixture split. Output: one JSON line per example, in input order, carrying the
example's id (`id` from the file, the task's `example_id` feature, else the example's index).

Sharding: shard i of k takes examples i, i+k, i+2k, ... and writes its own file
`<name>-<mode>-<i:05d>-of-<k:05d>.jsonl`, so k machines can split a job without talking.

Resuming: lines are appended per completed batch, then flushed and fsynced, to
`<file>.inprogress`; the final name appears (by rename) only once the shard is complete. On
restart the in-progress file is cut back to its last complete batch (a torn last line or a
partial batch is dropped) and inference continues from there. Batches are always the same
examples and sampling keys are derived from the batch index, so a resumed run writes the same
bytes as an uninterrupted one (tested by killing a subprocess mid-run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import gin
import jax
import jax.numpy as jnp
import numpy as np

# Imported here, not lazily: it registers gin configurables, which gin refuses once the config is locked.
from instructrec_jax.checkpoints.manager import load_params_for_inference
from instructrec_jax.data.types import DataFormatError
from instructrec_jax.ranking import EOS_ID, bucket_length, full_pass_scores

log = logging.getLogger(__name__)

MODES = ("score", "predict")
METHODS = ("greedy", "beam", "sample")
IN_PROGRESS = ".inprogress"


@dataclasses.dataclass(frozen=True)
class InferenceExample:
    """One example to run: its id, its texts (if known) and its token ids (EOS-terminated)."""

    example_id: str
    input_tokens: tuple[int, ...]
    target_tokens: tuple[int, ...] | None = None
    inputs: str | None = None
    targets: str | None = None


@dataclasses.dataclass(frozen=True)
class InferenceConfig:
    """Mode, decoding options, batching and sharding of an inference run."""

    mode: str = "predict"
    method: str = "beam"
    num_beams: int = 4
    alpha: float = 0.6
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    return_all_beams: bool = False
    batch_size: int = 16
    max_input_length: int | None = 512
    max_target_length: int = 64
    shard_id: int = 0
    num_shards: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown inference mode {self.mode!r}; expected one of {MODES}")
        if self.method not in METHODS:
            raise ValueError(f"unknown decoding method {self.method!r}; expected one of {METHODS}")
        if not 0 <= self.shard_id < self.num_shards:
            raise ValueError(f"shard id {self.shard_id} is not in [0, {self.num_shards})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class InferenceSummary:
    """What a run did: where it wrote, how many lines, and how many it found already done."""

    path: Path
    written: int
    resumed_from: int
    seconds: float


# -- inputs ---------------------------------------------------------------------------------------


def _trim_eos(ids: Sequence[int], max_length: int | None) -> tuple[int, ...]:
    ids = [int(t) for t in ids]
    if ids and ids[-1] == EOS_ID:
        ids = ids[:-1]
    if max_length is not None:
        ids = ids[: max_length - 1]
    return tuple(ids) + (EOS_ID,)


def read_jsonl_examples(path: str | os.PathLike, tokenizer, *, max_input_length: int | None = 512,
                        max_target_length: int | None = 64) -> list[InferenceExample]:
    """Examples from a JSONL file of {"inputs", "targets"?, "id"?}; bad lines raise DataFormatError."""
    examples = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(str(path), number, f"not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("inputs"), str):
                raise DataFormatError(str(path), number, 'expected an object with a string "inputs"')
            targets = record.get("targets")
            if targets is not None and not isinstance(targets, str):
                raise DataFormatError(str(path), number, '"targets" must be a string when given')
            example_id = str(record.get("id", len(examples)))
            if example_id in seen:
                raise DataFormatError(str(path), number, f"duplicate id {example_id!r}")
            seen.add(example_id)
            examples.append(InferenceExample(
                example_id=example_id,
                input_tokens=_trim_eos(tokenizer.encode(record["inputs"]), max_input_length),
                target_tokens=None if targets is None else _trim_eos(tokenizer.encode(targets), max_target_length),
                inputs=record["inputs"],
                targets=targets,
            ))
    return examples


def task_examples(mixture_or_task_name: str, split: str, *, max_input_length: int = 512,
                  max_target_length: int = 64) -> tuple[list[InferenceExample], Any]:
    """Examples of a SeqIO task/mixture split (tokenized by the task) and the task's vocabulary."""
    import seqio

    import instructrec_jax.tasks  # noqa: F401  (registers the prepared datasets' tasks)

    task = seqio.get_mixture_or_task(mixture_or_task_name)
    dataset = task.get_dataset({"inputs": max_input_length, "targets": max_target_length}, split=split,
                               shuffle=False, num_epochs=1)
    examples = []
    for index, ex in enumerate(dataset.as_numpy_iterator()):
        text = lambda key: ex[key].decode("utf-8") if key in ex else None  # noqa: E731
        example_id = text("example_id") or str(index)
        examples.append(InferenceExample(
            example_id=example_id,
            input_tokens=_trim_eos(ex["inputs"], max_input_length),
            target_tokens=_trim_eos(ex["targets"], max_target_length) if "targets" in ex else None,
            inputs=text("inputs_pretokenized"),
            targets=text("targets_pretokenized"),
        ))
    return examples, task.output_features["inputs"].vocabulary


def shard_examples(examples: Sequence[InferenceExample], shard_id: int, num_shards: int) -> list[InferenceExample]:
    """Every `num_shards`-th example starting at `shard_id`."""
    return list(examples[shard_id::num_shards])


# -- the run --------------------------------------------------------------------------------------


def _pad(rows: Sequence[Sequence[int]], batch_size: int, width: int) -> np.ndarray:
    out = np.zeros((batch_size, width), dtype=np.int32)
    for r, ids in enumerate(rows):
        out[r, : len(ids)] = ids
    return out


def _cut_at_eos(ids: Sequence[int]) -> list[int]:
    ids = [int(t) for t in ids]
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else [t for t in ids if t != 0]


def _batch_lines(model, params, tokenizer, batch: Sequence[InferenceExample], batch_index: int,
                 config: InferenceConfig) -> list[str]:
    width = bucket_length(max(len(e.input_tokens) for e in batch), 32)
    enc = _pad([e.input_tokens for e in batch], config.batch_size, width)
    records: list[dict[str, Any]] = []
    if config.mode == "score":
        missing = [e.example_id for e in batch if e.target_tokens is None]
        if missing:
            raise ValueError(f"score mode needs targets; example {missing[0]!r} has none")
        dec_width = bucket_length(max(len(e.target_tokens) for e in batch), 8)
        dec = _pad([e.target_tokens for e in batch], config.batch_size, dec_width)
        scores = np.asarray(full_pass_scores(model, params, enc, dec))
        for row, e in enumerate(batch):
            records.append({"id": e.example_id, "inputs": e.inputs, "targets": e.targets,
                            "score": float(scores[row]), "num_tokens": len(e.target_tokens)})
    else:
        # One key per batch index: a resumed run draws the same samples as an uninterrupted one.
        rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), batch_index)
        return_all = config.method == "beam" and config.return_all_beams
        tokens, scores = model.predict_batch(
            params, {"encoder_input_tokens": enc}, rng, method=config.method, num_beams=config.num_beams,
            alpha=config.alpha, temperature=config.temperature, top_k=config.top_k,
            max_decode_length=config.max_target_length, return_all=return_all)
        tokens, scores = np.asarray(tokens), np.asarray(scores)
        for row, e in enumerate(batch):
            record: dict[str, Any] = {"id": e.example_id, "inputs": e.inputs}
            if e.targets is not None:
                record["targets"] = e.targets
            if return_all:
                beams = [{"prediction": tokenizer.decode(_cut_at_eos(tokens[row, b])), "score": float(scores[row, b])}
                         for b in range(tokens.shape[1])]
                record["prediction"], record["score"] = beams[0]["prediction"], beams[0]["score"]
                record["beams"] = beams
            else:
                record["prediction"] = tokenizer.decode(_cut_at_eos(tokens[row]))
                record["score"] = float(scores[row])
            records.append(record)
    return [json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records]


def _complete_lines(path: Path, batch_size: int) -> int:
    """Cuts an in-progress file back to its last complete batch; returns the lines kept."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep, count, offset = 0, 0, 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break  # torn last line
        try:
            json.loads(line)
        except ValueError:
            break
        offset += len(line)
        count += 1
        if count % batch_size == 0:
            keep = offset
    kept = (count // batch_size) * batch_size
    if keep != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
    return kept


def output_path(output_dir: str | os.PathLike, name: str, config: InferenceConfig) -> Path:
    """The file a shard writes: `<name>-<mode>-<shard:05d>-of-<num_shards:05d>.jsonl`."""
    return Path(output_dir) / f"{name}-{config.mode}-{config.shard_id:05d}-of-{config.num_shards:05d}.jsonl"


def run_inference(model, params, tokenizer, examples: Sequence[InferenceExample], path: str | os.PathLike,
                  config: InferenceConfig = InferenceConfig(), *, progress: bool = True) -> InferenceSummary:
    """Runs this shard's examples into `path` (see the module docstring for sharding and resuming)."""
    path = Path(path)
    started = time.perf_counter()
    mine = shard_examples(examples, config.shard_id, config.num_shards)
    if path.exists():
        log.info("%s is complete already (%d examples); nothing to do", path, len(mine))
        return InferenceSummary(path, 0, len(mine), 0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + IN_PROGRESS)
    done = _complete_lines(partial, config.batch_size)
    if done:
        log.info("resuming %s after %d examples", partial, done)
    written = 0
    with open(partial, "ab") as handle:
        for start in range(done, len(mine), config.batch_size):
            batch = mine[start : start + config.batch_size]
            lines = _batch_lines(model, params, tokenizer, batch, start // config.batch_size, config)
            handle.write("".join(lines).encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
            written += len(batch)
            if progress:
                print(f"infer: {start + len(batch)}/{len(mine)} examples -> {partial.name}", flush=True)
    os.replace(partial, path)
    return InferenceSummary(path, written, done, time.perf_counter() - started)


# -- gin entry and command line ---------------------------------------------------------------------


@gin.configurable(denylist=["shard_id", "num_shards"])
def infer(
    model=gin.REQUIRED,
    checkpoint_path: str = gin.REQUIRED,
    output_dir: str = gin.REQUIRED,
    mode: str = "predict",
    input_jsonl: str | None = None,
    mixture_or_task_name: str | None = None,
    split: str = "test",
    vocabulary_path: str | None = None,
    task_feature_lengths: dict | None = None,
    batch_size: int = 16,
    method: str = "beam",
    num_beams: int = 4,
    alpha: float = 0.6,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    return_all_beams: bool = False,
    shard_id: int = 0,
    num_shards: int = 1,
) -> InferenceSummary:
    """T5X-style inference run: load the checkpoint, read the inputs, write this shard's JSONL."""
    lengths = dict(task_feature_lengths or {"inputs": 512, "targets": 64})
    config = InferenceConfig(mode=mode, method=method, num_beams=num_beams, alpha=alpha,
                             temperature=temperature, top_k=top_k, seed=seed,
                             return_all_beams=return_all_beams, batch_size=batch_size,
                             max_input_length=lengths["inputs"], max_target_length=lengths["targets"],
                             shard_id=shard_id, num_shards=num_shards)
    if (input_jsonl is None) == (mixture_or_task_name is None):
        raise ValueError("give exactly one of INPUT_JSONL or MIXTURE_OR_TASK_NAME")
    if input_jsonl is not None:
        if vocabulary_path is None:
            raise ValueError("a JSONL input needs VOCABULARY_PATH (the dataset's spiece.model)")
        from instructrec_jax.vocabulary import load_vocabulary

        tokenizer = load_vocabulary(os.path.expanduser(vocabulary_path))
        examples = read_jsonl_examples(os.path.expanduser(input_jsonl), tokenizer, max_input_length=lengths["inputs"],
                                       max_target_length=lengths["targets"])
        name = Path(input_jsonl).stem
    else:
        examples, tokenizer = task_examples(mixture_or_task_name, split, max_input_length=lengths["inputs"],
                                            max_target_length=lengths["targets"])
        name = f"{mixture_or_task_name}-{split}"
    params = load_params_for_inference(checkpoint_path, model)
    summary = run_inference(model, params, tokenizer, examples, output_path(output_dir, name, config), config)
    print(f"infer: wrote {summary.path} ({summary.written} new lines, {summary.resumed_from} kept from "
          f"an earlier run, {summary.seconds:.1f}s)")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """`instructrec infer`: gin flags (--gin_file=gin/models/...gin --gin_file=gin/runs/infer.gin
    --gin.CHECKPOINT_PATH=... --gin.INFER_OUTPUT_DIR=...) plus --shard-id/--num-shards."""
    from instructrec_jax import gin_flags

    parser = argparse.ArgumentParser(prog="instructrec infer", description=main.__doc__)
    gin_flags.add_gin_arguments(parser)
    parser.add_argument("--shard-id", type=int, default=0, help="this shard's index (0-based)")
    parser.add_argument("--num-shards", type=int, default=1, help="how many shards split the examples")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(gin_flags.rewrite_gin_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    try:
        gin.clear_config()
        gin_flags.configure_gin(gin_flags.gin_flags_from_args(args))
        infer(shard_id=args.shard_id, num_shards=args.num_shards)
    except (ValueError, KeyError, FileNotFoundError, DataFormatError) as error:
        print(f"instructrec infer: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the imported module's main: gin registers `instructrec_jax.infer.infer`, not `__main__.infer`.
    from instructrec_jax.infer import main as _main

    sys.exit(_main())
