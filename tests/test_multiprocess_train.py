"""Two processes on this machine (CPU, 2 devices each) form one JAX job through the trainer's
coordinator flags, train the tiny model with the same per-step losses as one process with 4
devices, and both resume from the same checkpoint after one of them is killed.

The mesh is 2x2 (data x model): the model axis stays inside a process, the data axis spans both,
so each process loads its own half of every global batch (seqio shard 0 or 1 of 2). Batches are
unshuffled and unpacked, so a global batch holds the same examples in both set-ups (only the row
order differs) and the losses agree to float rounding.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import multiprocess_fixtures
import train_fixtures

REPO = Path(__file__).resolve().parents[1]
STEPS, SAVE_PERIOD, STALL_FROM_EXAMPLE = 10, 5, 56  # examples >= 56 belong to steps 8+ (batch 8)
TIMEOUT = 600


def model_gin(directory: Path) -> Path:
    header = "from __gin__ import dynamic_registration\n"
    assert header in train_fixtures.MODEL_GIN
    path = directory / "multiprocess_model.gin"
    path.write_text(train_fixtures.MODEL_GIN.replace(header, header + "import multiprocess_fixtures\n", 1))
    return path


def train_argv(gin_file: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "instructrec_jax.train",
        f"--gin_file={gin_file}", "--gin_file=gin/runs/finetune.gin",
        f'--gin.MODEL_DIR="{model_dir}"',
        f'--gin.MIXTURE_OR_TASK_NAME="{multiprocess_fixtures.TASK}"',
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 24, 'targets': 8}",
        f"--gin.TRAIN_STEPS={STEPS}", "--gin.BATCH_SIZE=8", "--gin.LOG_EVERY=1",
        f"--gin.SAVE_PERIOD={SAVE_PERIOD}", "--gin.EVAL_PERIOD=0", "--gin.PACK=False",
        "--gin.RANDOM_SEED=0", "--gin_bindings=train/data_pipeline.DatasetConfig.shuffle = False",
        "--gin.partitioning.Partitioner.num_partitions=2",
        *extra,
    ]


def start(argv: list[str], devices: int, log: Path, **env: str) -> subprocess.Popen:
    environment = {**train_fixtures.subprocess_env(devices), **env}
    environment.pop(multiprocess_fixtures.STALL_ENV, None)
    environment.update(env)
    return subprocess.Popen(argv, cwd=REPO, env=environment, stdout=log.open("w"), stderr=subprocess.STDOUT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def start_pair(gin_file: Path, model_dir: Path, logs: Path, tag: str, **env: str) -> list[subprocess.Popen]:
    flags = [f"--coordinator_address=localhost:{free_port()}", "--process_count=2"]
    return [start(train_argv(gin_file, model_dir, *flags, f"--process_index={index}"), 2,
                  logs / f"{tag}-{index}.log", **env) for index in (0, 1)]


def finish(procs: list[subprocess.Popen], logs: list[Path]) -> list[str]:
    outputs = []
    for proc, log in zip(procs, logs):
        try:
            proc.wait(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
        text = log.read_text()
        assert proc.returncode == 0, text[-4000:]
        outputs.append(text)
    return outputs


def losses_by_step(model_dir: Path) -> dict[int, float]:
    """The loss of every step, from the chief's TensorBoard event files (later files win)."""
    import tensorflow as tf

    losses: dict[int, float] = {}
    for events in sorted((model_dir / "train").glob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == "loss":
                    has_tensor = value.HasField("tensor") and value.tensor.dtype
                    losses[event.step] = float(tf.make_ndarray(value.tensor) if has_tensor
                                               else value.simple_value)
    return losses


def complete_checkpoints(model_dir: Path) -> set[int]:
    folder = model_dir / "checkpoints"
    return {int(p.name) for p in folder.iterdir() if p.name.isdigit()} if folder.exists() else set()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with 4 devices; two processes killed after step 5's checkpoint; the pair resumed."""
    root = tmp_path_factory.mktemp("multiprocess")
    gin_file = model_gin(root)
    single_dir, pair_dir = root / "single", root / "pair"

    single = start(train_argv(gin_file, single_dir), 4, root / "single.log")
    # The pair's data stalls from step 8 on, so it is certainly mid-run after checkpoint 5.
    doomed = start_pair(gin_file, pair_dir, root, "killed",
                        **{multiprocess_fixtures.STALL_ENV: str(STALL_FROM_EXAMPLE)})
    try:
        deadline = time.monotonic() + TIMEOUT
        while SAVE_PERIOD not in complete_checkpoints(pair_dir):
            assert time.monotonic() < deadline, "no checkpoint 5:\n" + (root / "killed-0.log").read_text()[-4000:]
            assert all(p.poll() is None for p in doomed), (root / "killed-1.log").read_text()[-4000:]
            time.sleep(0.2)
        doomed[1].send_signal(signal.SIGKILL)
        doomed[1].wait(timeout=60)
        # The survivor cannot go on without its peer (it would wait on the next collective);
        # a scheduler or `instructrec tpu watch` restarts the whole job, so stop it too.
        doomed[0].send_signal(signal.SIGKILL)
        doomed[0].wait(timeout=60)
    finally:
        for proc in doomed:
            if proc.poll() is None:
                proc.kill()
    checkpoints_after_kill = complete_checkpoints(pair_dir)
    killed_logs = [(root / f"killed-{i}.log").read_text() for i in (0, 1)]

    resumed = start_pair(gin_file, pair_dir, root, "resumed")
    resumed_logs = finish(resumed, [root / "resumed-0.log", root / "resumed-1.log"])
    single_log = finish([single], [root / "single.log"])[0]
    return {
        "single": losses_by_step(single_dir), "pair": losses_by_step(pair_dir),
        "single_log": single_log, "killed_logs": killed_logs, "resumed_logs": resumed_logs,
        "checkpoints_after_kill": checkpoints_after_kill,
        "checkpoints_at_end": complete_checkpoints(pair_dir),
    }


def test_two_processes_join_one_job_through_the_coordinator_flags(runs):
    for index, log in enumerate(runs["killed_logs"]):
        assert f"process {index} of 2 (process {index} of 2, coordinator localhost:" in log
    assert "process 0 of 1 (single process" in runs["single_log"]


def test_two_processes_train_to_the_same_losses_as_one_process_with_four_devices(runs):
    single, pair = runs["single"], runs["pair"]
    assert sorted(single) == list(range(1, STEPS + 1))
    assert sorted(pair) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        assert pair[step] == pytest.approx(single[step], rel=1e-5), f"step {step}"
    assert len({round(loss, 3) for loss in single.values()}) == STEPS  # each step saw new data


def test_both_processes_resume_from_the_checkpoint_saved_before_the_kill(runs):
    assert runs["checkpoints_after_kill"] == {SAVE_PERIOD}
    for log in runs["resumed_logs"]:
        resumed = re.findall(r"resumed from \S+/(\d+) ", log)
        assert resumed == [str(SAVE_PERIOD)], log[-3000:]
        assert f"done: step {STEPS}" in log
    assert runs["checkpoints_at_end"] == {SAVE_PERIOD, STEPS}


def test_the_resumed_pair_ends_with_the_loss_of_the_uninterrupted_run(runs):
    assert runs["pair"][STEPS] == pytest.approx(runs["single"][STEPS], rel=1e-5)
    for step in range(SAVE_PERIOD + 1, STEPS + 1):  # logged by the resumed processes
        assert runs["pair"][step] == pytest.approx(runs["single"][step], rel=1e-5)
