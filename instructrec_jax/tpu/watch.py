"""Watch mode: keep a run going through preemptions until every worker reports it finished.

Each poll asks `describe` for the VM's state and, when it is READY, asks every worker (one ssh
probe) whether the run is running, exited (with which status) or missing. Then:

- VM PREEMPTED / TERMINATED / STOPPED: delete it, create it again, set it up, launch the run;
- VM gone: create, set up, launch;
- VM READY but the run missing or failed on some worker (a restart, a crash, a worker that
  died and took the job down): stop what is left, launch again;
- every worker exited 0: the run is done, watch exits 0.

A re-launched trainer resumes from the latest checkpoint in MODEL_DIR by itself, so recovery is
just the same launch command. Recoveries are capped by `max_restarts`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from instructrec_jax.tpu.deployment import DescribeError, Deployment, Step, VmState, parse_describe
from instructrec_jax.tpu.gcloud import Gcloud
from instructrec_jax.tpu.remote import WorkerRunState, parse_probe_output

# VM states that need a new VM, and states that will turn into READY (or into one of those) by
# themselves. Anything else unknown is waited on.
DEAD_STATES = frozenset({"PREEMPTED", "TERMINATED", "STOPPED", "HIDDEN"})
SETTLING_STATES = frozenset({"CREATING", "STARTING", "RESTARTING", "REIMAGING", "REPAIRING",
                             "STOPPING", "DELETING", "HIDING", "UNHIDING"})


@dataclass(frozen=True)
class Decision:
    """What to do after one poll, and why (printed)."""

    action: str  # 'wait', 'done', 'recreate', 'create', 'relaunch', 'unreachable'
    reason: str


def decide(vm: VmState, workers: list[WorkerRunState] | None, expected_workers: int) -> Decision:
    """The watch loop's rule, as a pure function of one poll."""
    if vm.state is None:
        return Decision("create", "the TPU VM does not exist")
    if vm.state in DEAD_STATES:
        return Decision("recreate", f"the TPU VM is {vm.state}")
    if vm.state != "READY":
        return Decision("wait", f"the TPU VM is {vm.state}")
    if workers is None or len(workers) < expected_workers:
        answered = 0 if workers is None else len(workers)
        return Decision("unreachable", f"{answered} of {expected_workers} workers answered the probe")
    exited = [w for w in workers if w.state == "exited"]
    missing = [w for w in workers if w.state == "missing"]
    failed = [w for w in exited if w.exit_code != 0]
    if len(exited) == len(workers) and not failed:
        return Decision("done", f"the run exited 0 on all {len(workers)} workers")
    if failed or missing:
        what = [f"{w.host} exited {w.exit_code}" for w in failed] + [f"{w.host} not running" for w in missing]
        return Decision("relaunch", "; ".join(what))
    running = sum(w.state == "running" for w in workers)
    return Decision("wait", f"running on {running} of {len(workers)} workers")


def recovery_steps(deployment: Deployment, action: str) -> list[Step]:
    """The commands that bring the run back after `decide` returned `action`."""
    if action == "recreate":
        return (deployment.delete_steps() + deployment.create_steps() + deployment.setup_steps()
                + deployment.launch_steps())
    if action == "create":
        return deployment.create_steps() + deployment.setup_steps() + deployment.launch_steps()
    if action == "relaunch":
        return deployment.stop_steps() + deployment.launch_steps()
    raise ValueError(f"no recovery for {action!r}")


def watch(deployment: Deployment, gcloud: Gcloud, *, poll_interval: float, max_restarts: int,
          max_failures: int = 5, sleep: Callable[[float], None] = time.sleep) -> int:
    """Polls until the run is done (returns 0) or cannot be kept alive (returns 1)."""
    restarts = failures = 0
    last_reason = None
    while True:
        try:
            vm = parse_describe(gcloud.capture(deployment.vm.describe(), timeout=300))
        except DescribeError as error:
            failures += 1
            gcloud.note(f"watch: describe failed ({failures}/{max_failures}): {error}")
            if failures >= max_failures:
                gcloud.note("watch: giving up, gcloud keeps failing (check `gcloud auth list` and the zone)")
                return 1
            sleep(poll_interval)
            continue
        workers = None
        if vm.state == "READY":
            probe = gcloud.capture(deployment.probe_argv(), timeout=300)
            if probe.returncode == 0:
                workers = parse_probe_output(probe.stdout)
        decision = decide(vm, workers, deployment.expected_workers())
        if decision.reason != last_reason:
            health = f", health {vm.health}" if vm.health else ""
            gcloud.note(f"watch {time.strftime('%H:%M:%S')}: {decision.reason}{health}")
            last_reason = decision.reason
        if decision.action == "done":
            return 0
        if decision.action == "unreachable":
            failures += 1
            if failures < max_failures:
                sleep(poll_interval)
                continue
            decision = Decision("recreate", f"workers unreachable for {failures} polls")
        elif decision.action == "wait":
            failures = 0
            sleep(poll_interval)
            continue
        if restarts >= max_restarts:
            gcloud.note(f"watch: giving up after {restarts} restarts ({decision.reason}); "
                        f"see `instructrec tpu logs` and `instructrec tpu status`")
            return 1
        restarts += 1
        failures = 0
        last_reason = None
        gcloud.note(f"watch: {decision.action} (restart {restarts} of {max_restarts})")
        for step, argv in recovery_steps(deployment, decision.action):
            status = gcloud.run(argv, step)
            if status != 0:
                gcloud.note(f"watch: step failed with exit status {status}; will look again")
                break
        sleep(poll_interval)
