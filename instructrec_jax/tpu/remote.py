"""The shell commands `instructrec tpu` runs on every TPU VM worker (through `gcloud … ssh --command`).

Each function returns one command line for the worker's login shell (bash on the TPU images).
Paths live under the worker's $HOME; user-supplied words are quoted with `shlex.quote`, so a
binding such as `--gin.MODEL_DIR="gs://b/run"` reaches the trainer with its double quotes.

A run leaves three files in the log folder, which is how `logs`, `status` and the watch loop see it:
`<run>.log` (stdout+stderr of every launch, appended), `<run>.pid` (the trainer's process id; the
trainer leads its own session, so the whole group can be signalled) and `<run>.exit` (its exit
status, written when it ends; absent while it runs or if the VM went down under it).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from instructrec_jax.tpu.errors import TpuUsageError

LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
# Each worker prints one line of this form from `probe_command`: `<marker> <host> <state> [<code>]`.
RUN_STATE_MARKER = "instructrec-run-state"
REMOTE_SDIST = "instructrec-src.tar.gz"

_SAFE_RELATIVE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9@%+=:,./_-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class RemoteLayout:
    """Where things live on a worker, relative to its $HOME, and which Python builds the venv."""

    project_dir: str = "instructrec-jax"
    venv: str = "instructrec-venv"
    log_dir: str = "instructrec-logs"
    python: str = "python3.11"

    def __post_init__(self) -> None:
        for field, value in (("--remote-dir", self.project_dir), ("--venv", self.venv),
                             ("--log-dir", self.log_dir)):
            if not _SAFE_RELATIVE.match(value) or ".." in value.split("/"):
                raise TpuUsageError(f"{field}={value!r}: expected a path relative to the worker's home "
                                    "made of letters, digits, '.', '_', '-' and '/'")
        if not re.match(r"^python3(\.[0-9]+)?$", self.python):
            raise TpuUsageError(f"--python={self.python!r}: expected python3 or python3.N")

    def home(self, relative: str) -> str:
        return f'"$HOME/{relative}"'

    @property
    def venv_python(self) -> str:
        return self.home(f"{self.venv}/bin/python")

    def run_file(self, run: str, suffix: str) -> str:
        return self.home(f"{self.log_dir}/{run}.{suffix}")


@dataclass(frozen=True)
class InstallSource:
    """Where the workers get the project from: a git URL (and branch) or an uploaded sdist."""

    git_url: str | None = None
    branch: str | None = None
    sdist: str | None = None  # local path; uploaded to ~/REMOTE_SDIST before setup runs


@dataclass(frozen=True)
class RunSpec:
    """One program launched on every worker: `python -m <module> <args>` with extra environment."""

    name: str
    module: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not _RUN_NAME.match(self.name):
            raise TpuUsageError(f"--run={self.name!r}: expected letters, digits, '.', '_' and '-'")
        for key, _ in self.env:
            if not _ENV_NAME.match(key):
                raise TpuUsageError(f"--env {key!r}: expected NAME=VALUE with NAME a shell variable name")


def remote_quote(word: str) -> str:
    """Quotes one word for the worker's shell, keeping T5X's `--gin.X=\\"gs://…\\"` spelling readable."""
    if _PLAIN_WORD.match(word):
        return word
    if _PLAIN_WORD.match(word.replace('"', "")):
        return word.replace('"', '\\"')
    if not any(c in word for c in '"$`\\!\n'):
        return f'"{word}"'
    return shlex.quote(word)


def setup_command(layout: RemoteLayout, source: InstallSource, jax_version: str, after_setup: str = "") -> str:
    """Installs Python, the project (editable) and `jax[tpu]` from the libtpu index on a worker.

    `after_setup` (e.g. preparing the dataset, which every host reads locally) then runs in the
    project folder with the virtualenv's `bin` first on PATH.
    """
    if not re.match(r"^[0-9][0-9A-Za-z.+-]*$", jax_version):
        raise TpuUsageError(f"--jax-version={jax_version!r}: expected a version such as 0.10.2")
    project = layout.home(layout.project_dir)
    python = layout.python
    steps = [
        "set -e",
        # The TPU images (Ubuntu 22.04) ship Python 3.10; the project needs 3.11.
        f"command -v {python} >/dev/null 2>&1 || {{ sudo apt-get update -qq && "
        f"sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {python} {python}-venv; }}",
    ]
    if source.git_url:
        ref = remote_quote(source.branch) if source.branch else "HEAD"
        clone = ["git", "clone", "--depth", "1"]
        if source.branch:
            clone += ["--branch", remote_quote(source.branch)]
        steps.append(
            f"if [ -d {layout.home(layout.project_dir + '/.git')} ]; then "
            f"git -C {project} fetch -q --depth 1 origin {ref} && git -C {project} checkout -q -f FETCH_HEAD; "
            f"else rm -rf {project} && {' '.join(clone)} {remote_quote(source.git_url)} {project}; fi")
    else:
        steps.append(f"rm -rf {project} && mkdir -p {project} && "
                     f"tar -xzf {layout.home(REMOTE_SDIST)} -C {project} --strip-components=1")
    steps += [
        f"[ -x {layout.venv_python} ] || {python} -m venv {layout.home(layout.venv)}",
        f"{layout.venv_python} -m pip install -q --upgrade pip",
        f"{layout.venv_python} -m pip install -q -e {project} "
        f"\"jax[tpu]=={jax_version}\" -f {LIBTPU_INDEX}",
    ]
    if after_setup:
        steps.append(f"cd {project} && export PATH={layout.home(layout.venv + '/bin')}:\"$PATH\" && {after_setup}")
    return "; ".join(steps)


def _alive_test(layout: RemoteLayout, run: str) -> str:
    # A pid file alone can outlive a reboot and name some other process: check its command line.
    pid = layout.run_file(run, "pid")
    return f"[ -f {pid} ] && grep -q instructrec_jax /proc/$(cat {pid})/cmdline 2>/dev/null"


def launch_command(layout: RemoteLayout, spec: RunSpec) -> str:
    """Starts the program in the background on a worker, detached from the ssh session.

    Refuses (exit 3) if the same run is still alive there; otherwise clears the previous exit
    status, appends a launch header to the log and returns at once.
    """
    log, pid, status = (layout.run_file(spec.name, s) for s in ("log", "pid", "exit"))
    env = "".join(f"{key}={remote_quote(value)} " for key, value in spec.env)
    program = " ".join([layout.venv_python, "-m", spec.module, *map(remote_quote, spec.args)])
    return "; ".join([
        f"if {_alive_test(layout, spec.name)}; then "
        f"echo \"run {spec.name} is already running on $(hostname)\" >&2; exit 3; fi",
        f"mkdir -p {layout.home(layout.log_dir)} && cd {layout.home(layout.project_dir)} && rm -f {status}",
        f"echo \"=== launch {spec.name} on $(hostname) at $(date -u +%FT%TZ)\" >> {log}",
        # setsid: the trainer leads its own process group (stop signals all of it); the braces
        # wait for it and record its exit status; nothing stays attached to the ssh channel.
        f"{{ setsid nohup env {env}{program} >> {log} 2>&1 < /dev/null & echo $! > {pid}; "
        f"wait $!; echo $? > {status}; }} > /dev/null 2>&1 < /dev/null &",
    ])


def stop_command(layout: RemoteLayout, run: str, grace_seconds: int = 30) -> str:
    """Stops the run on a worker (SIGTERM to its process group, SIGKILL after the grace period)."""
    pid = layout.run_file(run, "pid")
    return (f"if {_alive_test(layout, run)}; then p=$(cat {pid}); kill -TERM -- -$p 2>/dev/null; "
            f"for i in $(seq {grace_seconds}); do kill -0 $p 2>/dev/null || break; sleep 1; done; "
            f"kill -KILL -- -$p 2>/dev/null; fi; true")


def probe_command(layout: RemoteLayout, run: str) -> str:
    """Prints one RUN_STATE_MARKER line per worker: running, exited <code>, or missing."""
    status = layout.run_file(run, "exit")
    head = f"{RUN_STATE_MARKER} $(hostname)"
    return (f"if [ -f {status} ]; then echo \"{head} exited $(cat {status})\"; "
            f"elif {_alive_test(layout, run)}; then echo \"{head} running\"; "
            f"else echo \"{head} missing\"; fi")


def logs_command(layout: RemoteLayout, run: str, lines: int, follow: bool) -> str:
    """Tails a run's log on a worker."""
    return f"tail -n {int(lines)}{' -F' if follow else ''} {layout.run_file(run, 'log')}"


@dataclass(frozen=True)
class WorkerRunState:
    """What one worker's probe line said."""

    host: str
    state: str  # 'running', 'exited', 'missing'
    exit_code: int | None = None


def parse_probe_output(text: str) -> list[WorkerRunState]:
    """The RUN_STATE_MARKER lines of `gcloud … ssh --worker=all` output (other lines ignored)."""
    states = []
    for line in text.splitlines():
        parts = line.split()
        if RUN_STATE_MARKER not in parts:
            continue
        parts = parts[parts.index(RUN_STATE_MARKER) + 1:]
        if len(parts) >= 2 and parts[1] in ("running", "missing"):
            states.append(WorkerRunState(parts[0], parts[1]))
        elif len(parts) >= 3 and parts[1] == "exited" and parts[2].lstrip("-").isdigit():
            states.append(WorkerRunState(parts[0], "exited", int(parts[2])))
    return states
