"""The XLA:CPU defaults: added once, never over a user's flag, accepted by the pinned jaxlib."""

import os
import subprocess
import sys

from instructrec_jax import xla_flags


def test_adds_the_defaults_after_the_users_flags():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    added = xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2")
    assert added == ["--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT"]
    assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                                "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT")
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2") == []  # idempotent


def test_a_users_setting_wins_and_the_switch_turns_it_off():
    env = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE"}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2") == []
    assert env["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_REDUCE"
    env = {"INSTRUCTREC_XLA_DEFAULTS": "0"}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.10.2") == []
    assert "XLA_FLAGS" not in env


def test_unknown_jaxlib_gets_nothing():
    env = {}
    assert xla_flags.apply_cpu_defaults(env, jaxlib_version="0.11.0") == []
    assert env == {}


def test_the_installed_jaxlib_accepts_the_flags_and_the_package_sets_them():
    # XLA aborts the process on an unknown flag, so run a real computation in a child process.
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "INSTRUCTREC_XLA_DEFAULTS")}
    code = ("import os, instructrec_jax, jax.numpy as jnp; "
            "print(os.environ['XLA_FLAGS']); print(float((jnp.ones((64, 64)) @ jnp.ones((64, 64))).sum()))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT" in lines[0]
    assert lines[1] == str(64.0 ** 3)
