"""tools/ablate.py: the table row it prints, and resumed runs kept out of the CPU budget."""

from __future__ import annotations

import importlib.util

import train_fixtures as fx

spec = importlib.util.spec_from_file_location("ablate", fx.REPO / "tools" / "ablate.py")
ablate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablate)


def _row(seed, hr, ndcg, cpu, resumed=None):
    metrics = {"HR@1": hr, "NDCG@5": ndcg}
    return {"row": "lever", "seed": seed, "train_steps": 100, "batch_size": 32, "examples_seen": 3200,
            "train_cpu_s": cpu, "resumed_from_step": resumed,
            "scenarios": {"sequential": {"test_best": metrics, "test_no_prior": {"HR@1": hr - 0.1, "NDCG@5": ndcg - 0.1}}}}


def test_row_gives_mean_and_sample_std_over_seeds_and_the_cpu_budget():
    line = ablate.summarise([_row(0, 0.5, 0.7, 600.0), _row(1, 0.6, 0.8, 720.0)], "sequential")
    assert line == ("| lever | 100 steps × 32 (11.0 CPU-min) | 3,200 | 0.5500 ± 0.0707 | 0.7500 ± 0.0707 | "
                    "0.4500 ± 0.0707 | 0.6500 ± 0.0707 | 0,1 |")


def test_a_resumed_seed_counts_in_the_metrics_but_not_in_the_cpu_budget():
    line = ablate.summarise([_row(0, 0.5, 0.7, 600.0), _row(1, 0.6, 0.8, 60.0, resumed=4000)], "sequential")
    assert "(10.0 CPU-min; seed 1 resumed at step 4000)" in line
    assert "0.5500 ± 0.0707" in line
    only = ablate.summarise([_row(1, 0.6, 0.8, 60.0, resumed=4000)], "sequential")
    assert "(CPU time unknown; seed 1 resumed at step 4000)" in only


def test_latest_checkpoint_step_reads_orbax_step_folders(tmp_path):
    assert ablate.latest_checkpoint_step(tmp_path / "missing") is None
    for name in ("2000", "4000", "6000.orbax-checkpoint-tmp-1", "notes"):
        (tmp_path / name).mkdir()
    assert ablate.latest_checkpoint_step(tmp_path) == 4000
