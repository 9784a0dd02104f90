"""Multi-host start-up: join one JAX job across processes before any JAX computation runs.

The trainer calls `maybe_initialize(flags)` first thing. Three ways a job can be multi-process:

1. explicit flags, as T5X's GPU runs (`--coordinator_address=host:port --process_count=N
   --process_index=i`, optionally `--multiprocess_gpu` and `--local_device_ids`): every process is
   started by the user with the same coordinator and its own index;
2. a cluster JAX recognises by itself (Cloud TPU VM slices, GKE TPU pods, Slurm `srun` steps,
   Open MPI `mpirun`, Kubernetes indexed Jobs / JobSets): `jax.distributed.initialize()` is called
   without arguments and JAX reads the coordinator, the process count and the index from the
   environment or the TPU metadata server;
3. otherwise the run is one process and nothing is initialised.

`--distributed_init=always` forces the argument-free call (a cluster this module does not
recognise but JAX does); `--distributed_init=never` turns the detection off.

The decision is a pure function of the flags and the environment (`plan_initialization`), so it
is tested without starting anything; only `maybe_initialize` calls JAX.
"""

from __future__ import annotations

import argparse
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

INIT_MODES = ("auto", "always", "never")

# Google's PCI vendor id and the device ids of its TPU chips (the same check JAX's own Cloud TPU
# start-up makes): a TPU VM is recognised without querying the metadata server.
_GOOGLE_PCI_VENDOR = "0x1ae0"
_TPU_PCI_DEVICES = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f", "0x0076"}

# Variables JAX's Slurm detection needs; an `salloc` shell without an `srun` step lacks the STEP ones.
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


class DistributedConfigError(ValueError):
    """Flags or environment that cannot describe a multi-process job; the message says what to fix."""


@dataclass(frozen=True)
class InitPlan:
    """How this process will join the job: `kwargs` for `jax.distributed.initialize`, or none."""

    kind: str  # 'single', 'explicit', or the detected cluster: 'cloud-tpu', 'gke-tpu', 'slurm', ...
    reason: str  # one line for the log, e.g. "Slurm job 123 step with 4 tasks"
    initialize: bool
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DistributedSetup:
    """What `maybe_initialize` did, for the trainer's log and `model-info.txt`."""

    kind: str
    reason: str
    process_index: int
    process_count: int


def add_distributed_flags(target: Any = None) -> Any:
    """Defines the multi-host flags on an argparse parser, absl's `flags` module or a FlagValues.

    The names are T5X's (`--multiprocess_gpu`, `--coordinator_address`, `--process_count`,
    `--process_index`) plus `--local_device_ids` and `--distributed_init`. Returns `target`.
    """
    if isinstance(target, argparse.ArgumentParser):
        group = target.add_argument_group("multi-host (jax.distributed)")
        group.add_argument("--multiprocess_gpu", action="store_true",
                           help="start jax.distributed with the coordinator flags (T5X's GPU switch)")
        group.add_argument("--coordinator_address", default=None,
                           help="host:port of process 0's coordinator service")
        group.add_argument("--process_count", type=int, default=None, help="number of processes")
        group.add_argument("--process_index", type=int, default=None, help="this process's index")
        group.add_argument("--local_device_ids", default=None,
                           help="comma-separated local device ids this process uses (GPU)")
        group.add_argument("--distributed_init", choices=INIT_MODES, default="auto",
                           help="auto: detect clusters; always: argument-free initialize; never: off")
        return target
    from absl import flags as absl_flags

    if target is None or target is absl_flags:
        flag_values = absl_flags.FLAGS
    elif isinstance(target, absl_flags.FlagValues):
        flag_values = target
    else:
        raise TypeError(f"add_distributed_flags: expected an argparse parser, absl.flags or a FlagValues, "
                        f"got {type(target).__name__}")
    absl_flags.DEFINE_bool("multiprocess_gpu", False,
                           "start jax.distributed with the coordinator flags (T5X's GPU switch)",
                           flag_values=flag_values)
    absl_flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator service",
                             flag_values=flag_values)
    absl_flags.DEFINE_integer("process_count", None, "number of processes", flag_values=flag_values)
    absl_flags.DEFINE_integer("process_index", None, "this process's index", flag_values=flag_values)
    absl_flags.DEFINE_string("local_device_ids", None,
                             "comma-separated local device ids this process uses (GPU)",
                             flag_values=flag_values)
    absl_flags.DEFINE_enum("distributed_init", "auto", list(INIT_MODES),
                           "auto: detect clusters; always: argument-free initialize; never: off",
                           flag_values=flag_values)
    return target


def _flag(flags: Any, name: str, default: Any = None) -> Any:
    if flags is None:
        return default
    if isinstance(flags, Mapping):
        return flags.get(name, default)
    return getattr(flags, name, default)


def _parse_local_device_ids(value: Any) -> list[int] | None:
    if value in (None, "", []):
        return None
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    try:
        return [int(part) for part in str(value).split(",") if part.strip()]
    except ValueError:
        raise DistributedConfigError(
            f"--local_device_ids={value!r}: expected comma-separated integers, e.g. 0,1") from None


def _int_env(environ: Mapping[str, str], name: str) -> int | None:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        return None


def has_tpu_chips(pci_root: str | os.PathLike = "/sys/bus/pci/devices") -> bool:
    """True on a Cloud TPU VM: a Google TPU chip is attached through PCI."""
    for vendor_path in glob.glob(os.path.join(os.fspath(pci_root), "*", "vendor")):
        try:
            if Path(vendor_path).read_text().strip() != _GOOGLE_PCI_VENDOR:
                continue
            device = (Path(vendor_path).parent / "device").read_text().strip()
        except OSError:
            continue
        if device in _TPU_PCI_DEVICES:
            return True
    return False


def detect_cluster(environ: Mapping[str, str] | None = None,
                   pci_root: str | os.PathLike = "/sys/bus/pci/devices") -> tuple[str, str] | None:
    """Names the multi-process environment JAX can configure itself in, as (kind, reason), or None.

    Mirrors what `jax.distributed.initialize()` keys on (jax/_src/clusters), but only reports an
    environment with more than one process where the count is visible, so a one-task Slurm
    allocation or a laptop stays a plain single-process run.
    """
    env = os.environ if environ is None else environ
    # Open MPI's launcher: JAX reads the rank and size from these.
    if "OMPI_MCA_orte_hnp_uri" in env and (_int_env(env, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
        return "open-mpi", f"Open MPI job with {env['OMPI_COMM_WORLD_SIZE']} ranks"
    if all(name in env for name in _SLURM_VARS):
        tasks = _int_env(env, "SLURM_NTASKS") or 1
        if tasks > 1:
            return "slurm", f"Slurm job {env['SLURM_JOB_ID']} step with {tasks} tasks"
    # GKE TPU pods list every worker of the slice; multislice jobs add a megascale coordinator.
    hosts = env.get("TPU_PROCESS_ADDRESSES") or env.get("TPU_WORKER_HOSTNAMES")
    if hosts and len([h for h in hosts.split(",") if h.strip()]) > 1:
        return "gke-tpu", f"TPU slice with {len(hosts.split(','))} workers (TPU_WORKER_HOSTNAMES)"
    if env.get("MEGASCALE_COORDINATOR_ADDRESS") and (_int_env(env, "MEGASCALE_NUM_SLICES") or 1) > 1:
        return "gke-tpu", f"TPU multislice job with {env['MEGASCALE_NUM_SLICES']} slices"
    # Kubernetes indexed Jobs and JobSets: JAX finds the peers through the API (`jax[k8s]` extra).
    if "KUBERNETES_SERVICE_HOST" in env and ("JOBSET_NAME" in env or "JOB_COMPLETION_INDEX" in env):
        name = env.get("JOBSET_NAME") or "indexed Job"
        return "kubernetes", f"Kubernetes {name} (pod index {env.get('JOB_COMPLETION_INDEX', '?')})"
    # A Cloud TPU VM (one host or a slice): JAX reads the worker list from the metadata server.
    # On one host this forms a one-process job, which is harmless and keeps one code path.
    if "TPU_SKIP_MDS_QUERY" not in env and has_tpu_chips(pci_root):
        return "cloud-tpu", "Cloud TPU VM (worker list from the TPU metadata server)"
    return None


def plan_initialization(flags: Any = None, environ: Mapping[str, str] | None = None,
                        pci_root: str | os.PathLike = "/sys/bus/pci/devices") -> InitPlan:
    """Decides, without side effects, whether and how to call `jax.distributed.initialize`."""
    env = os.environ if environ is None else environ
    mode = _flag(flags, "distributed_init", "auto") or "auto"
    if mode not in INIT_MODES:
        raise DistributedConfigError(f"--distributed_init={mode!r}: expected one of {', '.join(INIT_MODES)}")
    coordinator = _flag(flags, "coordinator_address")
    count = _flag(flags, "process_count")
    index = _flag(flags, "process_index")
    local_ids = _parse_local_device_ids(_flag(flags, "local_device_ids"))
    multiprocess_gpu = bool(_flag(flags, "multiprocess_gpu", False))

    if mode == "never":
        if coordinator or multiprocess_gpu:
            raise DistributedConfigError(
                "--distributed_init=never contradicts --coordinator_address/--multiprocess_gpu; drop one")
        return InitPlan("single", "multi-host start-up disabled (--distributed_init=never)", False)

    given = [name for name, value in (("--coordinator_address", coordinator),
                                      ("--process_count", count),
                                      ("--process_index", index)) if value is not None]
    if given and len(given) < 3:
        missing = [n for n in ("--coordinator_address", "--process_count", "--process_index") if n not in given]
        raise DistributedConfigError(
            f"{', '.join(given)} given without {', '.join(missing)}: a multi-process job needs all three "
            "(the same --coordinator_address=host:port and --process_count on every process, and each "
            "process's own --process_index)")
    if len(given) == 3:
        host, sep, port = str(coordinator).rpartition(":")
        if not sep or not host or not port.isdigit():
            raise DistributedConfigError(
                f"--coordinator_address={coordinator!r}: expected host:port, e.g. 10.0.0.1:1234")
        if int(count) < 1 or not 0 <= int(index) < int(count):
            raise DistributedConfigError(
                f"--process_index={index} with --process_count={count}: expected 0 <= index < count")
        kwargs: dict[str, Any] = {"coordinator_address": str(coordinator),
                                  "num_processes": int(count), "process_id": int(index)}
        if local_ids is not None:
            kwargs["local_device_ids"] = local_ids
        return InitPlan("explicit", f"process {index} of {count}, coordinator {coordinator}", True, kwargs)

    kwargs = {"local_device_ids": local_ids} if local_ids is not None else {}
    if multiprocess_gpu or mode == "always":
        switch = "--multiprocess_gpu" if multiprocess_gpu else "--distributed_init=always"
        detected = detect_cluster(env, pci_root)
        reason = detected[1] if detected else "environment left to JAX's own detection"
        return InitPlan(detected[0] if detected else "forced", f"{reason} ({switch})", True, kwargs)

    detected = detect_cluster(env, pci_root)
    if detected is None:
        return InitPlan("single", "single process (no cluster environment or coordinator flags)", False)
    return InitPlan(detected[0], detected[1], True, kwargs)


def maybe_initialize(flags: Any = None, *, environ: Mapping[str, str] | None = None) -> DistributedSetup:
    """Joins the multi-process job described by `flags` / the environment; a no-op for one process.

    `flags` is an argparse Namespace, absl's FLAGS, a dict, or None (environment only). Must run
    before anything touches a JAX backend (device lists, arrays, jit). Safe to call twice.
    """
    import jax

    plan = plan_initialization(flags, environ)
    if plan.initialize and not jax.distributed.is_initialized():
        if plan.kind == "kubernetes":
            try:
                import kubernetes  # noqa: F401  (JAX's Kubernetes detection needs it)
            except ImportError:
                raise DistributedConfigError(
                    "Kubernetes JobSet detected but the `kubernetes` package is missing: install "
                    "`jax[k8s]`, or pass --coordinator_address/--process_count/--process_index") from None
        jax.distributed.initialize(**plan.kwargs)
    if not jax.distributed.is_initialized():
        # Asking JAX for the process index would start the backend; one process is index 0 of 1.
        return DistributedSetup(plan.kind, plan.reason, 0, 1)
    return DistributedSetup(plan.kind, plan.reason, jax.process_index(), jax.process_count())
