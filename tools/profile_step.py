"""Where the compiled training step spends its time on XLA:CPU: a per-operation profile.

    python tools/profile_step.py --skip 20 --steps 5 -- \
        --gin_file=gin/experiments/ml100k_demo.gin --gin.MODEL_DIR="'/tmp/profile'" \
        --gin.TRAIN_STEPS=26

Runs the trainer exactly as `python -m instructrec_jax.train ARGS` would (everything after `--`),
synchronising after every step, and records a JAX profiler trace of `--steps` steps after the
first `--skip`. It then sums the trace's XLA:CPU thunk events (fusions, dots, copies; one event
per executed HLO instruction) by name and prints the heaviest, with their HLO kind summed too.
Times are per step, summed over the worker threads (so they can add up to more than the step's
wall time). Match a name to its HLO with XLA_FLAGS="--xla_dump_to=DIR --xla_dump_hlo_as_text".
"""

from __future__ import annotations

import argparse
import collections
import glob
import sys
import tempfile

_SKIP = ("ThunkExecutor", "Await", "Region", "TaskDispatcher", "Compile", "HLO", "Codegen")


def thunk_times(trace_dir: str) -> collections.Counter:
    """Nanoseconds per thunk name over the trace's XLA:CPU worker-thread events."""
    from jax.profiler import ProfileData

    paths = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))
    if not paths:
        raise FileNotFoundError(f"no profiler trace (*.xplane.pb) under {trace_dir}")
    totals: collections.Counter = collections.Counter()
    for plane in ProfileData.from_file(paths[-1]).planes:
        for line in plane.lines:
            if not line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
                continue
            for event in line.events:
                if not any(s in event.name for s in _SKIP):
                    totals[event.name] += event.duration_ns
    return totals


def kind(name: str) -> str:
    """'ynn_fusion.34' -> 'ynn_fusion'."""
    head, _, tail = name.rpartition(".")
    return head if head and tail.isdigit() else name


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip", type=int, default=20, help="steps before the trace starts")
    parser.add_argument("--steps", type=int, default=5, help="steps traced")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace-dir", default=None)
    args = parser.parse_args(argv[:split])
    train_args = argv[split + 1:]

    import jax

    from instructrec_jax import partitioning
    from instructrec_jax import train as train_lib

    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="instructrec-profile-")
    calls = {"train_step": 0, "wall": []}
    original_jit = partitioning.Partitioner.jit

    def traced_jit(self, fn, **kwargs):
        compiled = original_jit(self, fn, **kwargs)
        if getattr(fn, "__name__", "") != "train_step":
            return compiled

        def step(*step_args):
            calls["train_step"] += 1
            n = calls["train_step"]
            if n == args.skip + 1:
                jax.profiler.start_trace(trace_dir)
            out = jax.block_until_ready(compiled(*step_args))
            if n == args.skip + args.steps:
                jax.profiler.stop_trace()
            return out
        return step

    partitioning.Partitioner.jit = traced_jit
    try:
        code = train_lib.main(train_args)
    finally:
        partitioning.Partitioner.jit = original_jit
        if args.skip < calls["train_step"] < args.skip + args.steps:
            jax.profiler.stop_trace()  # the run ended inside the traced window
    if code:
        return code
    if calls["train_step"] < args.skip + args.steps:
        print(f"the run made {calls['train_step']} steps; --skip + --steps needs "
              f"{args.skip + args.steps} (raise TRAIN_STEPS)", file=sys.stderr)
        return 1
    totals = thunk_times(trace_dir)
    per_step = 1e6 * args.steps
    kinds: collections.Counter = collections.Counter()
    for name, ns in totals.items():
        kinds[kind(name)] += ns
    print(f"trace: {trace_dir}; thunk time per step, summed over threads: "
          f"{sum(totals.values()) / per_step:.1f} ms")
    print("by kind: " + ", ".join(f"{k} {v / per_step:.1f} ms" for k, v in kinds.most_common(12)))
    for name, ns in totals.most_common(args.top):
        print(f"{ns / per_step:9.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
