"""`gcloud compute tpus tpu-vm …` command lines, and the runner that prints or executes them.

Commands are argument lists (never a local shell string); the command for the workers is one
string passed as `--command=…`. `Gcloud` either prints them shell-quoted, ready to copy into a
terminal (`--dry-run`), or runs them with the `gcloud` found on PATH.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import TextIO

from instructrec_jax.tpu.errors import GcloudNotFound, TpuUsageError

_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_ZONE = re.compile(r"^[a-z]+-[a-z]+[0-9]+-[a-z]$")
_WORKER = re.compile(r"^(all|[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)$")
_BASE = ("gcloud", "compute", "tpus", "tpu-vm")


@dataclass(frozen=True)
class TpuVm:
    """One TPU VM (a slice of one or more hosts) addressed by name, zone and optional project."""

    name: str
    zone: str
    project: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not _NAME.match(self.name):
            raise TpuUsageError(f"--name={self.name!r}: expected a TPU name of lowercase letters, digits "
                                "and '-', starting with a letter (at most 63 characters)")
        if not self.zone:
            raise TpuUsageError("--zone is required (e.g. --zone=us-central2-b), or set CLOUDSDK_COMPUTE_ZONE")
        if not _ZONE.match(self.zone):
            raise TpuUsageError(f"--zone={self.zone!r}: expected a zone such as us-central2-b or europe-west4-a")

    def _scoped(self, verb: str, *rest: str) -> list[str]:
        argv = [*_BASE, verb, *rest, f"--zone={self.zone}"]
        if self.project:
            argv.append(f"--project={self.project}")
        return argv

    def create(self, accelerator_type: str, version: str, *, spot: bool = False,
               preemptible: bool = False) -> list[str]:
        argv = self._scoped("create", self.name)
        argv += [f"--accelerator-type={accelerator_type}", f"--version={version}"]
        if spot:
            argv.append("--spot")
        if preemptible:
            argv.append("--preemptible")
        return argv

    def delete(self, *, quiet: bool) -> list[str]:
        return self._scoped("delete", self.name) + (["--quiet"] if quiet else [])

    def describe(self) -> list[str]:
        return self._scoped("describe", self.name) + ["--format=json"]

    def ssh(self, worker: str, command: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
        check_worker(worker)
        argv = self._scoped("ssh", self.name) + [f"--worker={worker}"]
        if command is not None:
            # Two words, so that a printed command quotes only the remote command itself.
            argv += ["--command", command]
        return argv + list(extra)

    def scp(self, sources: list[str], destination: str, worker: str, *, recurse: bool = False) -> list[str]:
        check_worker(worker)
        argv = self._scoped("scp", *sources, destination) + [f"--worker={worker}"]
        return argv + (["--recurse"] if recurse else [])


def check_worker(worker: str) -> str:
    if not _WORKER.match(worker):
        raise TpuUsageError(f"--worker={worker!r}: expected 'all', a worker index such as 0, or a list like 0,2-3")
    return worker


@dataclass
class Completed:
    """Exit status and output of one gcloud call."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


class Gcloud:
    """Prints (dry run) or runs gcloud command lines, each under a `# step` comment."""

    def __init__(self, *, dry_run: bool, out: TextIO | None = None, executable: str | None = None) -> None:
        self.dry_run = dry_run
        self.out = out or sys.stdout
        self.executable = executable
        if not dry_run and executable is None:
            self.executable = shutil.which("gcloud")
            if self.executable is None:
                raise GcloudNotFound()

    def note(self, text: str) -> None:
        print(f"# {text}", file=self.out, flush=True)

    def run(self, argv: list[str], step: str | None = None) -> int:
        """Runs a command with the terminal attached (or prints it); returns its exit status."""
        if step:
            self.note(step)
        print(shlex.join(argv) if self.dry_run else f"+ {shlex.join(argv)}", file=self.out, flush=True)
        if self.dry_run:
            return 0
        return subprocess.run([self.executable, *argv[1:]], check=False).returncode

    def capture(self, argv: list[str], timeout: float = 600) -> Completed:
        """Runs a command and returns its output (never called in a dry run)."""
        assert not self.dry_run, "capture() has no meaningful answer in a dry run"
        try:
            done = subprocess.run([self.executable, *argv[1:]], capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return Completed(124, "", f"timed out after {timeout:.0f}s: {shlex.join(argv)}")
        return Completed(done.returncode, done.stdout, done.stderr)
