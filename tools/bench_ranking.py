"""Benchmark of likelihood ranking: shared-encoder scoring vs one full encoder-decoder pass per
candidate, same model, same run; and the wall time of a whole ml-100k test split.

    python tools/bench_ranking.py --dataset ml100k [--checkpoint DIR [--gin_file=MODEL.gin]]

Without --checkpoint the model is the tiny preset with random weights (speed does not depend on
the weights). Prints a markdown table and one JSON line; --output also writes the JSON atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from instructrec_jax import ranking  # noqa: E402


def _model(vocab_size: int, checkpoint: str | None, gin_files: list[str], bindings: list[str]):
    """The checkpoint's model (gin files optional), else the tiny preset with random weights."""
    if checkpoint:
        from instructrec_jax.recommend import load_model

        return load_model(checkpoint, gin_files, bindings)
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    model = EncoderDecoderModel(T5Config.preset("tiny", vocab_size=vocab_size, dtype="float32", dropout_rate=0.0))
    return model, jax.jit(model.init_params)(jax.random.PRNGKey(0))


def _matmul_gflops() -> float:
    """This machine's float32 matmul rate right now (shared machines vary; MACHINE.md)."""
    a = jax.numpy.ones((2048, 2048), jax.numpy.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def main(argv=None) -> int:
    from instructrec_jax.evaluate import load_records, resolve_dataset
    from instructrec_jax.instructions.storage import read_manifest
    from instructrec_jax.vocabulary import load_vocabulary

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml100k")
    parser.add_argument("--checkpoint")
    parser.add_argument("--gin_file", action="append", default=[])
    parser.add_argument("--gin_bindings", action="append", default=[])
    parser.add_argument("--type", default="p1_i0_t3", help="instruction type (default: sequential)")
    parser.add_argument("--template", default=None, help="one template id (default: the type's first)")
    parser.add_argument("--batch-size", type=int, default=16, help="instructions per shared-encoder call")
    parser.add_argument("--full-pass-instructions", type=int, default=48,
                        help="instructions scored the slow way (each candidate a full pass)")
    parser.add_argument("--shared-path", default="packed_candidates", choices=sorted(ranking.SHARED_PATHS))
    parser.add_argument("--limit", type=int, default=None, help="only the first N instructions (quick runs)")
    parser.add_argument("--output", help="also write the JSON result here (atomically)")
    args = parser.parse_args(argv)

    path, _ = resolve_dataset(args.dataset, None)
    tokenizer = load_vocabulary(path / read_manifest(path).get("vocabulary", "spiece.model"))
    vocab_size = -(-tokenizer.vocab_size // 128) * 128
    records = load_records(path, args.type, "test")
    template = args.template or sorted({r.template_id for r in records})[0]
    records = [r for r in records if r.template_id == template][: args.limit]
    model, params = _model(vocab_size, args.checkpoint, args.gin_file, args.gin_bindings)
    config = ranking.ScoringConfig(batch_size=args.batch_size, shared_path=args.shared_path)
    scorer = ranking.CandidateScorer(model, params, tokenizer, config)
    inputs = [r.inputs for r in records]
    targets = [r.candidate_targets for r in records]
    num_candidates = sum(len(t) for t in targets)

    gflops_before = _matmul_gflops()
    # Shared encoder, whole split: first pass compiles (timed apart), second is the steady state.
    t0 = time.perf_counter()
    scorer.log_likelihoods(inputs, targets)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = scorer.log_likelihoods(inputs, targets)
    steady = time.perf_counter() - t0

    # Full pass per candidate on a subset (same model, same run), compile excluded the same way;
    # its (input, candidate) pairs fill batches of batch_size x candidates decoder rows.
    n = min(args.full_pass_instructions, len(records))
    sub_inputs, sub_targets = inputs[:n], targets[:n]
    pair_batch = args.batch_size * len(targets[0])
    scorer.log_likelihoods_full_pass(sub_inputs[:2], sub_targets[:2], batch_size=pair_batch)
    t0 = time.perf_counter()
    full = scorer.log_likelihoods_full_pass(sub_inputs, sub_targets, batch_size=pair_batch)
    full_seconds = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(s[0] - f))) for s, f in zip(shared[:n], full))
    gflops_after = _matmul_gflops()

    sub_candidates = sum(len(t) for t in sub_targets)
    result = {
        "device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
        "model": {k: getattr(model.config, k) for k in ("vocab_size", "d_model", "d_ff", "num_heads",
                                                        "num_encoder_layers", "num_decoder_layers", "dtype")},
        "dataset": str(path), "type": args.type, "template": template, "shared_path": args.shared_path,
        "instructions": len(records), "candidates": num_candidates,
        "whole_split_seconds_first_run": round(first, 2), "whole_split_seconds": round(steady, 2),
        "shared_candidates_per_s": round(num_candidates / steady, 1),
        "full_pass_candidates_per_s": round(sub_candidates / full_seconds, 1),
        "speedup": round((num_candidates / steady) / (sub_candidates / full_seconds), 2),
        "matmul_gflops_before_after": [round(gflops_before, 1), round(gflops_after, 1)],
        "max_abs_difference": diff, "compiled_shapes": sorted(scorer.compiled_shapes),
    }
    print("| measure | value |\n|---|---:|")
    print(f"| whole test split ({len(records)} instructions × {num_candidates // len(records)} candidates), "
          f"steady state | {steady:.1f} s |")
    print(f"| same, first run (includes compiling {len(scorer.compiled_shapes)} shapes) | {first:.1f} s |")
    print(f"| shared encoder, candidates/s | {result['shared_candidates_per_s']} |")
    print(f"| full pass per candidate, candidates/s | {result['full_pass_candidates_per_s']} |")
    print(f"| speed-up | {result['speedup']}× |")
    print(f"| max |shared − full| log-likelihood | {diff:.2e} |")
    print(f"| float32 matmul GFLOP/s of this machine, before / after | {gflops_before:.0f} / {gflops_after:.0f} |")
    print(json.dumps(result))
    if args.output:
        from instructrec_jax.atomic import write_text_atomic

        write_text_atomic(args.output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
