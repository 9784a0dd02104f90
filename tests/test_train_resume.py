"""A training job killed with SIGKILL, restarted, stopped with SIGTERM (preemption notice) and
restarted again with the same command ends bitwise like one that was never interrupted:
parameters, final loss and data position (CPU, dropout on)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np
import orbax.checkpoint as ocp

import train_fixtures as fx

STEPS, PERIOD = 120, 30
EXTRA = [f"--gin.SAVE_PERIOD={PERIOD}", "--gin.LOG_EVERY=50", "--gin.EVAL_PERIOD=0",
         "--gin.DROPOUT_RATE=0.1"]


def _command(tmp_path, name):
    return fx.train_command(fx.write_model_gin(tmp_path), tmp_path / name, *EXTRA, steps=STEPS)


def _final(model_dir):
    step_dir = model_dir / "checkpoints" / str(STEPS)
    params = ocp.StandardCheckpointer().restore(step_dir / "params")
    flat = {"/".join(map(str, k)): np.asarray(v) for k, v in _flatten(params)}
    metadata = json.loads((step_dir / "metadata" / "metadata").read_text())
    data = json.loads((step_dir / "data" / "metadata").read_text())
    return flat, metadata, data


def _flatten(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _flatten(value, prefix + (key,))
    else:
        yield prefix, tree


def test_killed_then_preempted_run_resumed_by_the_same_command_matches_an_uninterrupted_run_bitwise(tmp_path):
    env = fx.subprocess_env()
    # The uninterrupted reference runs alongside the job that gets killed.
    reference_log = open(tmp_path / "reference.log", "w")
    reference = subprocess.Popen(_command(tmp_path, "reference"), cwd=fx.REPO, env=env,
                                 stdout=reference_log, stderr=subprocess.STDOUT)

    killed_dir = tmp_path / "killed"

    def run_until_checkpoint(step, signum, log_name):
        """Starts the command, sends `signum` once checkpoint `step` is complete; (code, was running)."""
        mark = killed_dir / "checkpoints" / str(step) / "commit_success.txt"
        with open(tmp_path / log_name, "w") as log:
            job = subprocess.Popen(_command(tmp_path, "killed"), cwd=fx.REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
            deadline = time.time() + 600
            while not mark.exists() and job.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            running = job.poll() is None
            job.send_signal(signum)
            return job.wait(timeout=600), running

    code, running = run_until_checkpoint(PERIOD, signal.SIGKILL, "killed.log")
    assert running, "the job finished before it could be killed mid-training"
    assert code == -signal.SIGKILL
    assert not (killed_dir / "checkpoints" / str(STEPS)).exists()

    code, running = run_until_checkpoint(2 * PERIOD, signal.SIGTERM, "terminated.log")
    terminated_log = (tmp_path / "terminated.log").read_text()
    assert running, "the restarted job finished before SIGTERM"
    assert "resumed from" in terminated_log
    assert code == 3, terminated_log[-3000:]  # preempted: saved, resume later
    stopped_at = max(int(p.name) for p in (killed_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert 2 * PERIOD <= stopped_at < STEPS
    assert f"stopped by SIGTERM at step {stopped_at}" in terminated_log

    restarted = subprocess.run(_command(tmp_path, "killed"), cwd=fx.REPO, env=env,
                               capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    reference.wait(timeout=600)
    reference_log.close()
    assert reference.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    assert f"/checkpoints/{stopped_at} (data position {stopped_at})" in restarted.stdout

    ref_params, ref_meta, ref_data = _final(tmp_path / "reference")
    params, meta, data = _final(killed_dir)
    assert sorted(params) == sorted(ref_params)
    for name in ref_params:
        assert np.array_equal(params[name], ref_params[name]), name
    assert meta["metrics"]["loss"] == ref_meta["metrics"]["loss"]
    assert data == ref_data and data["batches_consumed"] == STEPS
