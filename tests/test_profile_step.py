"""tools/profile_step.py: the per-thunk profile of an XLA:CPU trace."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import profile_step  # noqa: E402


def test_kind_strips_the_instruction_number():
    assert profile_step.kind("ynn_fusion.34") == "ynn_fusion"
    assert profile_step.kind("copy_bitcast_fusion.2") == "copy_bitcast_fusion"
    assert profile_step.kind("dot") == "dot"
    assert profile_step.kind("wrapped_reduce-window") == "wrapped_reduce-window"


def test_thunk_times_reads_the_executed_operations_of_a_trace(tmp_path):
    f = jax.jit(lambda a: jnp.tanh(a @ a).sum(axis=0))
    a = jnp.ones((256, 256))
    f(a).block_until_ready()
    jax.profiler.start_trace(str(tmp_path))
    for _ in range(3):
        f(a).block_until_ready()
    jax.profiler.stop_trace()
    totals = profile_step.thunk_times(str(tmp_path))
    assert totals and all(ns >= 0 for ns in totals.values())
    assert sum(totals.values()) > 0
    # Only executed HLO instructions: no compiler or scheduler events.
    assert not any(skip in name for name in totals for skip in profile_step._SKIP)


def test_missing_trace_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="xplane"):
        profile_step.thunk_times(str(tmp_path))


def test_without_train_arguments_it_prints_usage(capsys):
    assert profile_step.main(["--steps", "2"]) == 2
    assert "python tools/profile_step.py" in capsys.readouterr().err


def test_a_run_shorter_than_the_window_reports_it_and_closes_the_trace(monkeypatch, tmp_path, capsys):
    from instructrec_jax import train as train_lib

    # Drive the real wrapper: a "trainer" that jits a function named train_step and calls it twice.
    from instructrec_jax import partitioning

    def train_step(x):
        return x + 1

    def short_run(argv):
        partitioner = partitioning.Partitioner()
        step = partitioner.jit(train_step, in_shardings=(partitioner.replicated,),
                               out_shardings=partitioner.replicated)
        for _ in range(2):
            step(jnp.ones(3))
        return 0

    monkeypatch.setattr(train_lib, "main", short_run)
    code = profile_step.main(["--skip", "1", "--steps", "5", "--trace-dir", str(tmp_path), "--", "x"])
    assert code == 1
    assert "made 2 steps" in capsys.readouterr().err
    # The profiler was stopped: a new trace can start.
    jax.profiler.start_trace(str(tmp_path / "again"))
    jax.profiler.stop_trace()
