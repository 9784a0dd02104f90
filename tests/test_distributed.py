"""Multi-host start-up: which environments start jax.distributed, how, and that two CPU processes form one job."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from instructrec_jax.distributed import (
    DistributedConfigError,
    add_distributed_flags,
    detect_cluster,
    has_tpu_chips,
    maybe_initialize,
    plan_initialization,
)

REPO = Path(__file__).resolve().parents[1]
NO_PCI = "/nonexistent-pci-root"


def parse(argv: list[str]) -> argparse.Namespace:
    return add_distributed_flags(argparse.ArgumentParser()).parse_args(argv)


def plan(argv: list[str], environ: dict[str, str] | None = None, pci_root: str = NO_PCI):
    return plan_initialization(parse(argv), environ or {}, pci_root)


def test_single_process_without_flags_or_cluster_does_not_initialize():
    result = plan([])
    assert (result.kind, result.initialize, result.kwargs) == ("single", False, {})


def test_explicit_coordinator_flags_become_initialize_arguments():
    result = plan(["--coordinator_address=10.0.0.1:1234", "--process_count=4", "--process_index=2",
                   "--local_device_ids=0,1"])
    assert result.kind == "explicit" and result.initialize
    assert result.kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                             "process_id": 2, "local_device_ids": [0, 1]}


def test_t5x_multiprocess_gpu_flag_with_coordinator_is_explicit():
    result = plan(["--multiprocess_gpu", "--coordinator_address=h:1", "--process_count=2",
                   "--process_index=0"])
    assert result.kind == "explicit"
    assert result.kwargs["num_processes"] == 2


def test_partial_coordinator_flags_name_the_missing_ones():
    with pytest.raises(DistributedConfigError, match="without --process_count, --process_index"):
        plan(["--coordinator_address=h:1234"])


def test_coordinator_without_port_is_rejected():
    with pytest.raises(DistributedConfigError, match="expected host:port"):
        plan(["--coordinator_address=h", "--process_count=2", "--process_index=0"])


def test_process_index_out_of_range_is_rejected():
    with pytest.raises(DistributedConfigError, match="0 <= index < count"):
        plan(["--coordinator_address=h:1", "--process_count=2", "--process_index=2"])


def test_bad_local_device_ids_are_rejected():
    with pytest.raises(DistributedConfigError, match="comma-separated integers"):
        plan(["--local_device_ids=a,b"])


SLURM = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


def test_slurm_step_with_several_tasks_initializes_without_arguments():
    result = plan([], SLURM)
    assert (result.kind, result.initialize, result.kwargs) == ("slurm", True, {})
    assert "Slurm job 77" in result.reason and "2 tasks" in result.reason


def test_slurm_with_one_task_stays_single_process():
    assert plan([], {**SLURM, "SLURM_NTASKS": "1"}).initialize is False


def test_slurm_allocation_without_a_step_stays_single_process():
    env = {k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}
    assert plan([], env).initialize is False


def test_gke_tpu_worker_list_initializes():
    result = plan([], {"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3", "TPU_WORKER_ID": "1"})
    assert (result.kind, result.initialize) == ("gke-tpu", True)
    assert "4 workers" in result.reason


def test_gke_tpu_single_worker_list_stays_single_process():
    assert plan([], {"TPU_WORKER_HOSTNAMES": "w0"}).initialize is False


def test_megascale_multislice_initializes():
    result = plan([], {"MEGASCALE_COORDINATOR_ADDRESS": "c:8080", "MEGASCALE_NUM_SLICES": "2"})
    assert (result.kind, result.initialize) == ("gke-tpu", True)


def test_open_mpi_with_several_ranks_initializes():
    result = plan([], {"OMPI_MCA_orte_hnp_uri": "1.0;tcp://10.0.0.1:3", "OMPI_COMM_WORLD_SIZE": "8"})
    assert (result.kind, result.initialize) == ("open-mpi", True)


def test_kubernetes_jobset_initializes():
    result = plan([], {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOBSET_NAME": "train",
                       "JOB_COMPLETION_INDEX": "3"})
    assert (result.kind, result.initialize) == ("kubernetes", True)
    assert "train" in result.reason and "3" in result.reason


def test_plain_kubernetes_pod_stays_single_process():
    assert plan([], {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}).initialize is False


def fake_pci(root: Path, vendor: str, device: str) -> Path:
    slot = root / "0000:00:05.0"
    slot.mkdir(parents=True)
    (slot / "vendor").write_text(vendor + "\n")
    (slot / "device").write_text(device + "\n")
    return root


def test_cloud_tpu_vm_is_recognised_by_its_pci_chips(tmp_path):
    root = fake_pci(tmp_path / "pci", "0x1ae0", "0x005e")  # a TPU v4 chip
    assert has_tpu_chips(root)
    result = plan([], {}, str(root))
    assert (result.kind, result.initialize, result.kwargs) == ("cloud-tpu", True, {})


def test_other_pci_devices_are_not_a_tpu(tmp_path):
    root = fake_pci(tmp_path / "pci", "0x10de", "0x2330")  # an NVIDIA GPU
    assert not has_tpu_chips(root)
    assert plan([], {}, str(root)).initialize is False


def test_tpu_skip_metadata_query_disables_tpu_detection(tmp_path):
    root = fake_pci(tmp_path / "pci", "0x1ae0", "0x005e")
    assert detect_cluster({"TPU_SKIP_MDS_QUERY": "1"}, root) is None


def test_explicit_flags_win_over_a_detected_cluster():
    result = plan(["--coordinator_address=h:9", "--process_count=2", "--process_index=1"], SLURM)
    assert result.kind == "explicit"


def test_never_disables_detection_and_always_forces_it():
    assert plan(["--distributed_init=never"], SLURM).initialize is False
    forced = plan(["--distributed_init=always"], {})
    assert (forced.kind, forced.initialize, forced.kwargs) == ("forced", True, {})


def test_never_with_coordinator_flags_is_a_contradiction():
    with pytest.raises(DistributedConfigError, match="contradicts"):
        plan(["--distributed_init=never", "--multiprocess_gpu"])


def test_absl_flags_parse_the_same_names():
    from absl import flags as absl_flags

    flag_values = absl_flags.FlagValues()
    add_distributed_flags(flag_values)
    flag_values(["prog", "--coordinator_address=localhost:5", "--process_count=2",
                 "--process_index=1", "--multiprocess_gpu"])
    result = plan_initialization(flag_values, {}, NO_PCI)
    assert result.kwargs == {"coordinator_address": "localhost:5", "num_processes": 2, "process_id": 1}


def test_maybe_initialize_is_a_no_op_for_one_process():
    setup = maybe_initialize(parse([]), environ={})
    assert (setup.kind, setup.process_index, setup.process_count) == ("single", 0, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


# One process of a two-process job: joins through maybe_initialize and the trainer's flags, feeds
# its half of a global array, and prints the cross-process results.
WORKER = textwrap.dedent("""
    import argparse, json, sys
    import numpy as np
    from instructrec_jax.distributed import add_distributed_flags, maybe_initialize
    args = add_distributed_flags(argparse.ArgumentParser()).parse_args(sys.argv[1:])
    setup = maybe_initialize(args, environ={})
    import jax, jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()).reshape(2, 2), ("data", "model"))
    rows = np.arange(8 * 6, dtype=np.float32).reshape(8, 6) / 10
    per_process = 8 // jax.process_count()
    mine = rows[jax.process_index() * per_process:(jax.process_index() + 1) * per_process]
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data", None)), mine, (8, 6))
    w = jax.device_put(np.linspace(-1, 1, 6 * 4, dtype=np.float32).reshape(6, 4),
                       NamedSharding(mesh, P(None, "model")))
    loss = jax.jit(lambda x, w: jnp.mean(jnp.tanh(x @ w) ** 2),
                   out_shardings=NamedSharding(mesh, P()))(x, w)
    print(json.dumps({"kind": setup.kind, "index": setup.process_index, "count": setup.process_count,
                      "devices": jax.device_count(), "local": jax.local_device_count(),
                      "loss": float(loss)}), flush=True)
""")


def run_workers(device_count: int, argvs: list[list[str]]) -> list[dict]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={device_count}"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *argv], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for argv in argvs]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_two_cpu_processes_form_one_job_with_the_same_result_as_one_process():
    port = free_port()
    flags = [f"--coordinator_address=localhost:{port}", "--process_count=2"]
    pair = run_workers(2, [flags + ["--process_index=0"], flags + ["--process_index=1"]])
    (alone,) = run_workers(4, [[]])
    assert [(r["kind"], r["index"], r["count"], r["devices"], r["local"]) for r in pair] == [
        ("explicit", 0, 2, 4, 2), ("explicit", 1, 2, 4, 2)]
    assert (alone["kind"], alone["count"], alone["devices"]) == ("single", 1, 4)
    assert pair[0]["loss"] == pair[1]["loss"]
    assert pair[0]["loss"] == pytest.approx(alone["loss"], rel=1e-6)
