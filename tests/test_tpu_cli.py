"""`instructrec tpu`: the gcloud command lines it composes, its argument checks, and watch mode.

A fake `gcloud` (tests/fake_gcloud) is put first on PATH: it records every call and answers
from a script, so preemptions and finished runs are simulated without a cloud account.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

import instructrec_jax.gin_flags as gin_flags
from instructrec_jax import cli
from instructrec_jax.tpu import main
from instructrec_jax.tpu.accelerators import parse_accelerator_type
from instructrec_jax.tpu.deployment import VmState
from instructrec_jax.tpu.errors import TpuUsageError
from instructrec_jax.tpu.remote import (
    RemoteLayout,
    RunSpec,
    WorkerRunState,
    launch_command,
    parse_probe_output,
    probe_command,
    stop_command,
)
from instructrec_jax.tpu.watch import decide

REPO = Path(__file__).resolve().parents[1]
BASE = ["compute", "tpus", "tpu-vm"]
VM = ["--name=flan-xl", "--zone=us-central2-b"]
GIN = ["--gin_file=gin/models/flan_t5_xl.gin", "--gin_file=gin/runs/finetune.gin",
       '--gin.MODEL_DIR="gs://bucket/runs/xl"']
TRAIN = ["train", *VM, "--accelerator-type=v4-32", *GIN]
GIT = ["--git=https://github.com/example/instructrec-jax.git"]

SETUP_GIT = (
    'set -e; command -v python3.11 >/dev/null 2>&1 || { sudo apt-get update -qq && '
    'sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv; }; '
    'if [ -d "$HOME/instructrec-jax/.git" ]; then git -C "$HOME/instructrec-jax" fetch -q --depth 1 '
    'origin HEAD && git -C "$HOME/instructrec-jax" checkout -q -f FETCH_HEAD; else rm -rf '
    '"$HOME/instructrec-jax" && git clone --depth 1 https://github.com/example/instructrec-jax.git '
    '"$HOME/instructrec-jax"; fi; [ -x "$HOME/instructrec-venv/bin/python" ] || python3.11 -m venv '
    '"$HOME/instructrec-venv"; "$HOME/instructrec-venv/bin/python" -m pip install -q --upgrade pip; '
    '"$HOME/instructrec-venv/bin/python" -m pip install -q -e "$HOME/instructrec-jax" '
    '"jax[tpu]==0.10.2" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html')

LAUNCH_XL = (
    'if [ -f "$HOME/instructrec-logs/xl.pid" ] && grep -q instructrec_jax '
    '/proc/$(cat "$HOME/instructrec-logs/xl.pid")/cmdline 2>/dev/null; then '
    'echo "run xl is already running on $(hostname)" >&2; exit 3; fi; '
    'mkdir -p "$HOME/instructrec-logs" && cd "$HOME/instructrec-jax" && rm -f "$HOME/instructrec-logs/xl.exit"; '
    'echo "=== launch xl on $(hostname) at $(date -u +%FT%TZ)" >> "$HOME/instructrec-logs/xl.log"; '
    '{ setsid nohup env "$HOME/instructrec-venv/bin/python" -m instructrec_jax.train '
    '--gin_file=gin/models/flan_t5_xl.gin --gin_file=gin/runs/finetune.gin '
    '--gin.MODEL_DIR=\\"gs://bucket/runs/xl\\" >> "$HOME/instructrec-logs/xl.log" 2>&1 < /dev/null & '
    'echo $! > "$HOME/instructrec-logs/xl.pid"; wait $!; echo $? > "$HOME/instructrec-logs/xl.exit"; } '
    '> /dev/null 2>&1 < /dev/null &')


class FakeGcloud:
    """The recorded calls and the scripted answers of tests/fake_gcloud."""

    def __init__(self, log: Path, state: Path) -> None:
        self.log, self.state = log, state

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def verbs(self) -> list[str]:
        """create/delete/describe/scp/ssh per call, ssh split into probe, setup, launch, stop."""
        names = []
        for argv in self.calls():
            verb = argv[3]
            if verb == "ssh" and "--command" in argv:
                command = argv[argv.index("--command") + 1]
                verb = ("probe" if "instructrec-run-state" in command else
                        "setup" if "pip install" in command else
                        "launch" if "setsid nohup" in command else
                        "stop" if "kill -TERM" in command else "ssh")
            names.append(verb)
        return names

    def script(self, **responses: list[dict]) -> None:
        self.state.write_text(json.dumps({"responses": responses}))


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeGcloud:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -S {shlex.quote(str(REPO / "tests" / "fake_gcloud"))} "$@"\n')
    gcloud.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GCLOUD_LOG", str(tmp_path / "gcloud-calls.jsonl"))
    monkeypatch.setenv("FAKE_GCLOUD_STATE", str(tmp_path / "gcloud-answers.json"))
    for name in ("CLOUDSDK_COMPUTE_ZONE", "INSTRUCTREC_TPU_NAME"):
        monkeypatch.delenv(name, raising=False)
    return FakeGcloud(tmp_path / "gcloud-calls.jsonl", tmp_path / "gcloud-answers.json")


@pytest.fixture(autouse=True)
def checkout(tmp_path, monkeypatch) -> Path:
    """A project checkout holding the gin files the commands name; the working directory."""
    root = tmp_path / "checkout"
    for name in ("gin/models/flan_t5_xl.gin", "gin/runs/finetune.gin", "gin/runs/eval.gin"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("# test gin file\n")
    monkeypatch.setattr(gin_flags, "CHECKOUT_ROOT", root)
    monkeypatch.chdir(root)
    return root


def tpu(argv: list[str]) -> int:
    return main(argv)


def describe(state: str, **extra) -> dict:
    return {"stdout": json.dumps({"state": state, "health": "HEALTHY", "acceleratorType": "v4-32", **extra})}


def probe(*states: str) -> dict:
    return {"stdout": "".join(f"instructrec-run-state t1v-w-{i} {s}\n" for i, s in enumerate(states))}


NOT_FOUND = {"rc": 1, "stderr": "ERROR: (gcloud.compute.tpus.tpu-vm.describe) NOT_FOUND: Resource not found\n"}


# --- command lines ---------------------------------------------------------------------------

def test_create_composes_the_gcloud_create_command(fake):
    assert tpu(["create", *VM, "--accelerator-type=v4-32", "--spot", "--project=my-proj"]) == 0
    assert fake.calls() == [[*BASE, "create", "flan-xl", "--zone=us-central2-b", "--project=my-proj",
                             "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]]


def test_create_uses_the_generations_runtime_and_preemptible_flag(fake):
    assert tpu(["create", *VM, "--accelerator-type=v5litepod-16", "--preemptible"]) == 0
    assert tpu(["create", *VM, "--accelerator-type=v4-8", "--version=tpu-vm-v4-base"]) == 0
    assert fake.calls() == [
        [*BASE, "create", "flan-xl", "--zone=us-central2-b", "--accelerator-type=v5litepod-16",
         "--version=v2-alpha-tpuv5-lite", "--preemptible"],
        [*BASE, "create", "flan-xl", "--zone=us-central2-b", "--accelerator-type=v4-8",
         "--version=tpu-vm-v4-base"]]


def test_delete_lets_gcloud_confirm_unless_yes(fake):
    assert tpu(["delete", *VM]) == 0
    assert tpu(["delete", *VM, "--yes"]) == 0
    assert fake.calls() == [[*BASE, "delete", "flan-xl", "--zone=us-central2-b"],
                            [*BASE, "delete", "flan-xl", "--zone=us-central2-b", "--quiet"]]


def test_setup_from_git_installs_on_every_worker_with_one_command(fake):
    assert tpu(["setup", *VM, *GIT]) == 0
    assert fake.calls() == [[*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all",
                             "--command", SETUP_GIT]]


def test_setup_pins_jax_tpu_to_the_requested_version_and_branch(fake):
    assert tpu(["setup", *VM, *GIT, "--branch=v1.2", "--jax-version=0.10.1"]) == 0
    (argv,) = fake.calls()
    command = argv[-1]
    assert "git clone --depth 1 --branch v1.2 https://github.com/example/instructrec-jax.git" in command
    assert "fetch -q --depth 1 origin v1.2" in command
    assert '"jax[tpu]==0.10.1" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html' in command


def test_setup_runs_the_after_setup_command_in_the_project_with_the_venv_on_path(fake):
    assert tpu(["setup", *VM, *GIT, "--after-setup=instructrec prepare --source=embedded-ml-100k"]) == 0
    (argv,) = fake.calls()
    assert argv[-1] == (SETUP_GIT + '; cd "$HOME/instructrec-jax" && export PATH="$HOME/instructrec-venv/bin":'
                        '"$PATH" && instructrec prepare --source=embedded-ml-100k')


def test_setup_from_sdist_uploads_then_unpacks_and_installs(fake, tmp_path):
    sdist = tmp_path / "instructrec-jax-0.1.0.tar.gz"
    sdist.write_bytes(b"not really a tarball")
    assert tpu(["setup", *VM, f"--sdist={sdist}"]) == 0
    upload, install = fake.calls()
    assert upload == [*BASE, "scp", str(sdist), "flan-xl:instructrec-src.tar.gz", "--zone=us-central2-b",
                      "--worker=all"]
    assert install[:7] == [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all"]
    assert ('rm -rf "$HOME/instructrec-jax" && mkdir -p "$HOME/instructrec-jax" && tar -xzf '
            '"$HOME/instructrec-src.tar.gz" -C "$HOME/instructrec-jax" --strip-components=1') in install[-1]
    assert "git" not in install[-1]


def test_train_launches_the_gin_command_in_the_background_on_every_worker(fake):
    assert tpu(TRAIN) == 0
    assert fake.calls() == [[*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all",
                             "--command", LAUNCH_XL]]


def test_train_with_create_and_git_runs_create_then_setup_then_launch(fake):
    assert tpu([*TRAIN, "--create", "--spot", *GIT]) == 0
    assert fake.verbs() == ["create", "setup", "launch"]
    assert fake.calls()[0] == [*BASE, "create", "flan-xl", "--zone=us-central2-b",
                               "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"]
    assert fake.calls()[2][-1] == LAUNCH_XL


def test_train_setup_installs_before_launching_and_git_alone_does_not(fake):
    assert tpu([*TRAIN, *GIT]) == 0
    assert tpu([*TRAIN, *GIT, "--setup"]) == 0
    assert fake.verbs() == ["launch", "setup", "launch"]


def test_train_passes_env_run_name_and_trailing_program_arguments(fake):
    assert tpu([*TRAIN, "--run=try-2", "--env", "TF_CPP_MIN_LOG_LEVEL=3", "--worker=0",
                "--gin.TRAIN_STEPS=1140000", "--", "--distributed_init=always"]) == 0
    (argv,) = fake.calls()
    assert argv[6:8] == ["--worker=0", "--command"]
    assert ('setsid nohup env TF_CPP_MIN_LOG_LEVEL=3 "$HOME/instructrec-venv/bin/python" -m '
            'instructrec_jax.train --gin_file=gin/models/flan_t5_xl.gin --gin_file=gin/runs/finetune.gin '
            '--gin.MODEL_DIR=\\"gs://bucket/runs/xl\\" --gin.TRAIN_STEPS=1140000 --distributed_init=always '
            '>> "$HOME/instructrec-logs/try-2.log"') in argv[-1]


def test_eval_launches_the_evaluator_with_a_run_named_after_its_output(fake):
    assert tpu(["eval", *VM, "--accelerator-type=v4-8", "--gin_file=gin/runs/eval.gin",
                '--gin.CHECKPOINT_PATH="gs://bucket/runs/xl/checkpoints/1140000"',
                '--gin.EVAL_OUTPUT_DIR="gs://bucket/runs/xl/eval-test"']) == 0
    (argv,) = fake.calls()
    assert ('"$HOME/instructrec-venv/bin/python" -m instructrec_jax.evaluate --gin_file=gin/runs/eval.gin '
            '--gin.CHECKPOINT_PATH=\\"gs://bucket/runs/xl/checkpoints/1140000\\" '
            '--gin.EVAL_OUTPUT_DIR=\\"gs://bucket/runs/xl/eval-test\\" >> '
            '"$HOME/instructrec-logs/eval-eval-test.log"') in argv[-1]


def test_logs_tails_the_run_log_on_one_worker_or_all(fake):
    assert tpu(["logs", *VM, "--run=xl"]) == 0
    assert tpu(["logs", *VM, "--run=xl", "--worker=all", "--lines=20", "--follow"]) == 0
    assert fake.calls() == [
        [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=0", "--command",
         'tail -n 100 "$HOME/instructrec-logs/xl.log"'],
        [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all", "--command",
         'tail -n 20 -F "$HOME/instructrec-logs/xl.log"']]


def test_ssh_runs_a_command_or_opens_a_shell_with_extra_gcloud_arguments(fake):
    assert tpu(["ssh", *VM, "--worker=all", "--command=nproc"]) == 0
    assert tpu(["ssh", *VM, "--", "--ssh-flag=-L6006:localhost:6006"]) == 0
    assert fake.calls() == [
        [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all", "--command", "nproc"],
        [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=0", "--ssh-flag=-L6006:localhost:6006"]]


def test_scp_uploads_to_all_workers_and_downloads_from_one(fake, tmp_path):
    data = tmp_path / "data.tar.gz"
    data.write_bytes(b"x")
    assert tpu(["scp", *VM, str(data), ":data.tar.gz"]) == 0
    assert tpu(["scp", *VM, "--recurse", "flan-xl:instructrec-logs", str(tmp_path)]) == 0
    assert fake.calls() == [
        [*BASE, "scp", str(data), "flan-xl:data.tar.gz", "--zone=us-central2-b", "--worker=all"],
        [*BASE, "scp", "flan-xl:instructrec-logs", str(tmp_path), "--zone=us-central2-b", "--worker=0",
         "--recurse"]]


def test_stop_signals_the_runs_process_group_on_every_worker(fake):
    assert tpu(["stop", *VM, "--run=xl"]) == 0
    (argv,) = fake.calls()
    assert argv[:7] == [*BASE, "ssh", "flan-xl", "--zone=us-central2-b", "--worker=all"]
    assert 'p=$(cat "$HOME/instructrec-logs/xl.pid"); kill -TERM -- -$p' in argv[-1]


def test_status_reports_state_health_and_preemption(fake, capsys):
    fake.script(describe=[describe("PREEMPTED", health="UNHEALTHY_MAINTENANCE",
                                   schedulingConfig={"spot": True})])
    assert tpu(["status", *VM, "--run=xl"]) == 0
    assert capsys.readouterr().out == (
        "flan-xl: state PREEMPTED, health UNHEALTHY_MAINTENANCE, v4-32 spot, preempted: yes\n")
    assert fake.verbs() == ["describe"]  # no probe of a preempted VM
    assert fake.calls()[0] == [*BASE, "describe", "flan-xl", "--zone=us-central2-b", "--format=json"]


def test_status_with_a_run_reports_each_worker(fake, capsys):
    fake.script(describe=[describe("READY")], probe=[probe("running", "exited 1")])
    assert tpu(["status", *VM, "--run=xl"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "flan-xl: state READY, health HEALTHY, v4-32 on-demand, preempted: no",
        "run xl on t1v-w-0: running",
        "run xl on t1v-w-1: exited 1"]


def test_status_of_a_missing_vm_exits_1(fake, capsys):
    fake.script(describe=[NOT_FOUND])
    assert tpu(["status", *VM]) == 1
    assert "flan-xl: not found in us-central2-b" in capsys.readouterr().out


def test_the_instructrec_command_dispatches_tpu(fake):
    assert cli.main(["tpu", "delete", *VM, "--yes"]) == 0
    assert fake.verbs() == ["delete"]


# --- dry run ---------------------------------------------------------------------------------

def test_dry_run_prints_exactly_the_commands_a_real_run_executes(fake, capsys):
    argv = [*TRAIN, "--create", "--spot", *GIT, "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 64}"]
    assert tpu([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert fake.calls() == []
    commands = [shlex.split(line) for line in printed if not line.startswith("#")]
    assert [line for line in printed if line.startswith("#")] == [
        "# create the spot TPU VM flan-xl (v4-32, 4 hosts)",
        "# install instructrec-jax and jax[tpu]==0.10.2 on every worker",
        "# launch run xl on every worker (log: ~/instructrec-logs/xl.log)"]
    for command in commands:  # what the workers run is valid shell
        if "--command" in command:
            remote = command[command.index("--command") + 1]
            assert subprocess.run(["bash", "-n", "-c", remote], capture_output=True).returncode == 0, remote
    assert tpu(argv) == 0
    assert [["gcloud", *call] for call in fake.calls()] == commands


def test_dry_run_needs_no_gcloud_and_shows_the_watch_plan(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert tpu([*TRAIN, "--spot", *GIT, "--watch", "--poll-interval=30", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# watch: every 30 s, ask for the VM state" in out
    assert "gcloud compute tpus tpu-vm describe flan-xl --zone=us-central2-b --format=json" in out
    assert "gcloud compute tpus tpu-vm delete flan-xl --zone=us-central2-b --quiet" in out
    assert fake.calls() == []


# --- argument errors: caught before anything runs ----------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["create", *VM, "--accelerator-type=v4_32"], "unknown accelerator type 'v4_32'"),
    (["create", *VM, "--accelerator-type=v9-32"], "unknown accelerator type 'v9-32'"),
    (["create", *VM, "--accelerator-type=v4-12"], "v4 sizes are multiples of 8"),
    (["create", *VM, "--accelerator-type=v5litepod-6"], "one-host v5litepod sizes are 1, 4 or 8"),
    (["create", *VM], "--accelerator-type is required"),
    (["create", "--name=flan-xl", "--accelerator-type=v4-8"], "--zone is required"),
    (["create", "--name=flan-xl", "--zone=uscentral2", "--accelerator-type=v4-8"], "expected a zone such as"),
    (["create", "--zone=us-central2-b", "--accelerator-type=v4-8"], "--name is required"),
    (["create", "--name=Flan_XL", "--zone=us-central2-b", "--accelerator-type=v4-8"], "expected a TPU name"),
    (["train", *VM, "--accelerator-type=v4-32", "--gin_file=gin/models/missing.gin",
      '--gin.MODEL_DIR="gs://b/r"'], "gin file not found: gin/models/missing.gin"),
    (["train", *VM, "--accelerator-type=v4-32", "--gin_file=gin/runs/finetune.gin",
      '--gin.MODEL_DIR="/tmp/xl"'], "MODEL_DIR='/tmp/xl' is not on gs://: a v4-32 slice has 4 hosts"),
    (["train", *VM, "--accelerator-type=v4-8", "--spot", "--watch", *GIT, "--gin_file=gin/runs/finetune.gin",
      "--gin.MODEL_DIR='/tmp/xl'"], "a preempted spot VM is deleted with its disk"),
    (["train", *VM, "--accelerator-type=v4-32", "--gin_file=gin/runs/finetune.gin"], "MODEL_DIR"),
    (["train", *VM, "--accelerator-type=v4-32", '--gin.MODEL_DIR="gs://b/r"'], "--gin_file is required"),
    (["train", *VM, "--accelerator-type=v4-32", *GIN, "--gin.TRAIN_STEPS"], "expected --gin.NAME=VALUE"),
    ([*TRAIN, "--watch"], "say where the workers get the project"),
    ([*TRAIN, "--create"], "say where the workers get the project"),
    ([*TRAIN, "--setup"], "say where the workers get the project"),
    (["watch", *VM, "--accelerator-type=v4-32", *GIN], "say where the workers get the project"),
    ([*TRAIN, "--git=../instructrec-jax"], "expected a URL the workers can clone"),
    ([*TRAIN, "--sdist=dist/missing.tar.gz"], "no such file"),
    ([*TRAIN, "--run=my run"], "--run='my run'"),
    ([*TRAIN, "--env", "1X=2"], "NAME a shell variable name"),
    ([*TRAIN, "--worker=first"], "--worker='first'"),
    (["eval", *VM, "--accelerator-type=v4-8", "--gin_file=gin/runs/eval.gin"], "--run is required"),
    (["setup", *VM], "--git=URL"),
    (["setup", *VM, "--after-setup=true"], "--after-setup runs after installing"),
    (["setup", *VM, *GIT, "--jax-version=latest; rm -rf /"], "--jax-version="),
    (["setup", *VM, *GIT, "--remote-dir=../etc"], "--remote-dir='../etc'"),
    (["scp", *VM, "missing.txt", ":x"], "missing.txt: no such file"),
    (["scp", *VM, ":a", ":b"], "only one side may be remote"),
    (["scp", *VM, "--worker=all", ":a", "."], "downloads come from one worker"),
    (["logs", *VM, "--run=xl", "--worker=one"], "--worker='one'"),
    (["delete", *VM, "--gin.X=1"], "only applies to train, eval and watch"),
])
def test_argument_errors_stop_before_any_gcloud_call(fake, capsys, argv, message):
    assert tpu(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("instructrec tpu: error: ")
    assert message in err
    assert fake.calls() == []


def test_a_gin_file_outside_the_checkout_is_refused(fake, tmp_path, capsys):
    outside = tmp_path / "mine.gin"
    outside.write_text("")
    assert tpu(["train", *VM, "--accelerator-type=v4-32", f"--gin_file={outside}",
                '--gin.MODEL_DIR="gs://b/r"']) == 2
    assert "outside the project checkout" in capsys.readouterr().err
    assert fake.calls() == []


def test_unknown_options_are_argparse_errors(fake, capsys):
    assert tpu(["create", *VM, "--accelerator-type=v4-8", "--spot", "--preemptible"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert fake.calls() == []


def test_missing_gcloud_gives_a_clear_message(fake, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert tpu(["create", *VM, "--accelerator-type=v4-8"]) == 127
    assert ("gcloud not found on PATH; install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
            in capsys.readouterr().err)


# --- the commands the workers run, executed by a real shell ---------------------------------------

def test_launch_probe_and_stop_work_in_a_real_shell(tmp_path):
    home = tmp_path / "home"
    (home / "instructrec-jax").mkdir(parents=True)
    python = home / "instructrec-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    # Stands in for the trainer: records its arguments and environment, runs, exits with $CODE.
    python.write_text('#!/bin/bash\nprintf "%s\\n" "$PWD" "$@" > "$HOME/args.txt"\necho "LEVEL=$LEVEL"\n'
                      'sleep "$PAUSE"\nexit "$CODE"\n')
    python.chmod(0o755)
    layout = RemoteLayout()
    args = ("--gin_file=gin/models/flan_t5_xl.gin", '--gin.MODEL_DIR="gs://b/run 1"',
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 64}", '--gin.X="$HOME"')
    spec = RunSpec("r1", "instructrec_jax.train", args, (("LEVEL", "a b"), ("PAUSE", "30"), ("CODE", "7")))
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}

    def shell(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)

    started = time.monotonic()
    assert shell(launch_command(layout, spec)).returncode == 0
    assert time.monotonic() - started < 10  # returned without waiting for the program
    deadline = time.monotonic() + 10
    while not (home / "args.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (home / "args.txt").read_text().splitlines() == [
        str(home / "instructrec-jax"), "-m", "instructrec_jax.train", *args]
    assert parse_probe_output(shell(probe_command(layout, "r1")).stdout)[0].state == "running"
    refused = shell(launch_command(layout, spec))
    assert refused.returncode == 3 and "run r1 is already running" in refused.stderr

    assert shell(stop_command(layout, "r1", grace_seconds=5)).returncode == 0
    (state,) = parse_probe_output(shell(probe_command(layout, "r1")).stdout)
    assert (state.state, state.exit_code) == ("exited", 143)  # 128 + SIGTERM

    quick = RunSpec("r1", "instructrec_jax.train", args, (("PAUSE", "0"), ("CODE", "7")))
    assert shell(launch_command(layout, quick)).returncode == 0
    deadline = time.monotonic() + 10
    while not (home / "instructrec-logs" / "r1.exit").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (state,) = parse_probe_output(shell(probe_command(layout, "r1")).stdout)
    assert (state.state, state.exit_code) == ("exited", 7)
    log = (home / "instructrec-logs" / "r1.log").read_text()
    assert log.count("=== launch r1 on ") == 2 and "LEVEL=a b" in log


def test_a_stale_pid_file_after_a_reboot_reads_as_missing(tmp_path):
    home = tmp_path / "home"
    (home / "instructrec-logs").mkdir(parents=True)
    (home / "instructrec-logs" / "r1.pid").write_text(f"{os.getpid()}\n")  # alive, but not a trainer
    out = subprocess.run(["bash", "-c", probe_command(RemoteLayout(), "r1")], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "HOME": str(home)}, check=True).stdout
    assert [s.state for s in parse_probe_output(out)] == ["missing"]


# --- watch mode ------------------------------------------------------------------------------

WATCH = [*TRAIN, "--spot", *GIT, "--watch", "--poll-interval=0"]


def test_watch_recreates_a_preempted_spot_vm_and_exits_when_the_run_is_done(fake):
    fake.script(describe=[describe("READY"), describe("PREEMPTED"), describe("CREATING"), describe("READY")],
                probe=[probe("running", "running", "running", "running"),
                       probe(*["exited 0"] * 4)])
    assert tpu(WATCH) == 0
    assert fake.verbs() == ["launch",
                            "describe", "probe",  # running
                            "describe", "delete", "create", "setup", "launch",  # preempted
                            "describe",  # creating
                            "describe", "probe"]  # done
    calls = fake.calls()
    assert calls[5] == [*BASE, "create", "flan-xl", "--zone=us-central2-b", "--accelerator-type=v4-32",
                        "--version=tpu-ubuntu2204-base", "--spot"]
    assert calls[0] == calls[7]  # the same launch command, resumed by the trainer from MODEL_DIR
    assert calls[0][-1] == LAUNCH_XL


def test_watch_relaunches_a_run_missing_on_one_worker_without_recreating(fake):
    fake.script(describe=[describe("READY")],
                probe=[probe("running", "running", "missing", "running"), probe(*["exited 0"] * 4)])
    assert tpu(["watch", *VM, "--accelerator-type=v4-32", *GIN, *GIT, "--poll-interval=0"]) == 0
    assert fake.verbs() == ["describe", "probe", "stop", "launch", "describe", "probe"]


def test_watch_relaunches_after_a_worker_fails_and_creates_a_deleted_vm(fake):
    fake.script(describe=[describe("READY"), NOT_FOUND, describe("READY")],
                probe=[probe("exited 1", "exited 0", "running", "running"), probe(*["exited 0"] * 4)])
    assert tpu(["watch", *VM, "--accelerator-type=v4-32", *GIN, *GIT, "--poll-interval=0"]) == 0
    assert fake.verbs() == ["describe", "probe", "stop", "launch",
                            "describe", "create", "setup", "launch",
                            "describe", "probe"]


def test_watch_gives_up_after_max_restarts(fake, capsys):
    fake.script(describe=[describe("PREEMPTED")])
    assert tpu([*WATCH, "--max-restarts=2"]) == 1
    assert fake.verbs().count("create") == 2
    assert fake.verbs()[-1] == "describe"
    assert "giving up after 2 restarts (the TPU VM is PREEMPTED)" in capsys.readouterr().out


def test_watch_stops_when_gcloud_keeps_failing(fake, capsys):
    fake.script(describe=[{"rc": 1, "stderr": "ERROR: (gcloud) You do not currently have an active account"}])
    assert tpu(["watch", *VM, "--accelerator-type=v4-8", *GIN, *GIT, "--poll-interval=0"]) == 1
    assert fake.verbs() == ["describe"] * 5
    assert "active account" in capsys.readouterr().out


def test_watch_treats_workers_that_stay_unreachable_as_a_lost_vm(fake):
    fake.script(describe=[describe("READY")],
                probe=[probe("running", "running")] * 5 + [probe(*["exited 0"] * 4)])
    assert tpu(["watch", *VM, "--accelerator-type=v4-32", *GIN, *GIT, "--poll-interval=0"]) == 0
    assert fake.verbs() == (["describe", "probe"] * 5 + ["delete", "create", "setup", "launch"]
                            + ["describe", "probe"])


@pytest.mark.parametrize("vm, workers, action", [
    (VmState("READY"), [WorkerRunState("a", "exited", 0), WorkerRunState("b", "running")], "wait"),
    (VmState("READY"), [WorkerRunState("a", "exited", 0), WorkerRunState("b", "exited", 0)], "done"),
    (VmState("READY"), [WorkerRunState("a", "exited", 0), WorkerRunState("b", "missing")], "relaunch"),
    (VmState("READY"), [WorkerRunState("a", "running")], "unreachable"),
    (VmState("READY"), None, "unreachable"),
    (VmState("RESTARTING"), None, "wait"),
    (VmState("TERMINATED"), None, "recreate"),
    (VmState("STOPPED"), None, "recreate"),
    (VmState(None), None, "create"),
])
def test_watch_decisions(vm, workers, action):
    assert decide(vm, workers, expected_workers=2).action == action


# --- accelerator types -----------------------------------------------------------------------

@pytest.mark.parametrize("name, hosts", [("v2-8", 1), ("v3-32", 4), ("v4-8", 1), ("v4-32", 4), ("v4-128", 16),
                                         ("v5p-8", 1), ("v5p-64", 8), ("v5litepod-8", 1),
                                         ("v5litepod-16", 4), ("v6e-4", 1), ("v6e-256", 64)])
def test_accelerator_types_know_their_host_count(name, hosts):
    assert parse_accelerator_type(name).hosts == hosts


def test_unknown_accelerator_type_names_the_expected_forms():
    with pytest.raises(TpuUsageError, match="e.g. v4-32, v5p-8, v5litepod-16, v6e-8"):
        parse_accelerator_type("tpu-v4-32")
