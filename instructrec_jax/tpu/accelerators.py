"""Cloud TPU accelerator types: how many hosts a slice has, and the runtime image it boots."""

from __future__ import annotations

import re
from dataclasses import dataclass

from instructrec_jax.tpu.errors import TpuUsageError

# family -> (how the size counts, units per host in a multi-host slice, largest one-host size,
#            default runtime version for `gcloud ... create --version`).
# v2/v3/v4/v5p sizes count TensorCores (8 per host); v5e (v5litepod) and v6e count chips, and
# their one-host machines hold up to 8 chips while multi-host slices have 4 chips per host.
_FAMILIES: dict[str, tuple[int, int, str]] = {
    "v2": (8, 8, "tpu-ubuntu2204-base"),
    "v3": (8, 8, "tpu-ubuntu2204-base"),
    "v4": (8, 8, "tpu-ubuntu2204-base"),
    "v5p": (8, 8, "v2-alpha-tpuv5"),
    "v5litepod": (4, 8, "v2-alpha-tpuv5-lite"),
    "v6e": (4, 8, "v2-alpha-tpuv6e"),
}

_PATTERN = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<size>[1-9][0-9]*)$")


@dataclass(frozen=True)
class AcceleratorType:
    """One `--accelerator-type`, e.g. v4-32: 4 hosts of 4 chips."""

    name: str
    family: str
    size: int
    hosts: int
    default_runtime: str


def parse_accelerator_type(text: str) -> AcceleratorType:
    """Parses and checks an accelerator type; raises TpuUsageError naming the expected forms."""
    expected = (f"expected <generation>-<size> with generation one of {', '.join(_FAMILIES)}, "
                "e.g. v4-32, v5p-8, v5litepod-16, v6e-8")
    match = _PATTERN.match(text or "")
    if not match or match["family"] not in _FAMILIES:
        raise TpuUsageError(f"unknown accelerator type {text!r}: {expected}")
    family, size = match["family"], int(match["size"])
    per_host, one_host_max, runtime = _FAMILIES[family]
    if per_host == 8:
        if size % 8:
            raise TpuUsageError(f"accelerator type {text!r}: {family} sizes are multiples of 8 "
                                f"(TensorCores), e.g. {family}-8, {family}-32")
        hosts = size // 8
    elif size <= one_host_max:
        if size not in (1, 4, 8):
            raise TpuUsageError(f"accelerator type {text!r}: one-host {family} sizes are 1, 4 or 8 chips")
        hosts = 1
    else:
        if size % 4:
            raise TpuUsageError(f"accelerator type {text!r}: multi-host {family} sizes are multiples of 4 chips")
        hosts = size // per_host
    return AcceleratorType(text, family, size, hosts, runtime)
