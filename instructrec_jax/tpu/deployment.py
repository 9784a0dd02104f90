"""A run on a TPU VM, as the command steps that create the VM, install the project and launch it.

`Deployment` holds everything needed to bring a run back from nothing (for the watch loop after a
preemption), so every step is derived from one object and printed or run identically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from instructrec_jax.tpu.accelerators import AcceleratorType
from instructrec_jax.tpu.gcloud import Completed, TpuVm
from instructrec_jax.tpu.remote import (
    REMOTE_SDIST,
    InstallSource,
    RemoteLayout,
    RunSpec,
    launch_command,
    probe_command,
    setup_command,
    stop_command,
)

Step = tuple[str, list[str]]  # (what it does, gcloud argv)


@dataclass(frozen=True)
class Deployment:
    """A TPU VM, how to (re)create and set it up, and the run launched on all its workers."""

    vm: TpuVm
    accelerator: AcceleratorType | None = None  # needed to create the VM and to count its workers
    runtime_version: str = ""
    spot: bool = False
    preemptible: bool = False
    layout: RemoteLayout = RemoteLayout()
    source: InstallSource | None = None
    jax_version: str = ""
    after_setup: str = ""  # shell command run on every worker after installing
    run: RunSpec | None = None
    run_worker: str = "all"

    def create_steps(self) -> list[Step]:
        accelerator = self._accelerator()
        kind = " spot" if self.spot else " preemptible" if self.preemptible else ""
        return [(f"create the{kind} TPU VM {self.vm.name} ({accelerator.name}, "
                 f"{accelerator.hosts} host{'s' if accelerator.hosts > 1 else ''})",
                 self.vm.create(accelerator.name, self.runtime_version or accelerator.default_runtime,
                                spot=self.spot, preemptible=self.preemptible))]

    def delete_steps(self) -> list[Step]:
        return [(f"delete the TPU VM {self.vm.name}", self.vm.delete(quiet=True))]

    def setup_steps(self) -> list[Step]:
        if self.source is None:
            return []
        steps: list[Step] = []
        if self.source.sdist:
            steps.append(("upload the source distribution to every worker",
                          self.vm.scp([self.source.sdist], f"{self.vm.name}:{REMOTE_SDIST}", "all")))
        steps.append((f"install instructrec-jax and jax[tpu]=={self.jax_version} on every worker",
                      self.vm.ssh("all", setup_command(self.layout, self.source, self.jax_version,
                                                       self.after_setup))))
        return steps

    def launch_steps(self) -> list[Step]:
        run = self._run()
        where = "every worker" if self.run_worker == "all" else f"worker {self.run_worker}"
        return [(f"launch run {run.name} on {where} (log: ~/{self.layout.log_dir}/{run.name}.log)",
                 self.vm.ssh(self.run_worker, launch_command(self.layout, run)))]

    def stop_steps(self) -> list[Step]:
        run = self._run()
        return [(f"stop what is left of run {run.name}",
                 self.vm.ssh(self.run_worker, stop_command(self.layout, run.name)))]

    def probe_argv(self) -> list[str]:
        return self.vm.ssh(self.run_worker, probe_command(self.layout, self._run().name))

    def expected_workers(self) -> int:
        if self.run_worker == "all":
            return self._accelerator().hosts
        return len(expand_workers(self.run_worker))

    def _accelerator(self) -> AcceleratorType:
        if self.accelerator is None:
            raise ValueError("this deployment has no accelerator type")
        return self.accelerator

    def _run(self) -> RunSpec:
        if self.run is None:
            raise ValueError("this deployment has no run")
        return self.run


def expand_workers(spec: str) -> list[int]:
    """Worker indices of a `--worker` list such as 0,2-3."""
    indices: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        indices.extend(range(int(low), int(high or low) + 1))
    return indices


@dataclass(frozen=True)
class VmState:
    """What `describe` said: None state means the VM does not exist."""

    state: str | None
    health: str = ""
    accelerator_type: str = ""
    spot: bool = False
    preemptible: bool = False


class DescribeError(RuntimeError):
    """`describe` failed for a reason other than a missing VM (auth, network, quota...)."""


def parse_describe(result: Completed) -> VmState:
    """Reads `gcloud … describe --format=json`; a NOT_FOUND error means the VM is gone."""
    if result.returncode != 0:
        if "NOT_FOUND" in result.stderr or "not found" in result.stderr.lower():
            return VmState(None)
        raise DescribeError(result.stderr.strip() or f"describe exited with {result.returncode}")
    try:
        data = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise DescribeError(f"describe printed something that is not JSON: {error}") from None
    scheduling = data.get("schedulingConfig") or {}
    return VmState(state=str(data.get("state", "STATE_UNSPECIFIED")), health=str(data.get("health", "")),
                   accelerator_type=str(data.get("acceleratorType", "")),
                   spot=bool(scheduling.get("spot")), preemptible=bool(scheduling.get("preemptible")))
