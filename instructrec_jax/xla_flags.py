"""XLA:CPU defaults that make our training and scoring steps faster (measured in BENCHMARKS.md).

jaxlib 0.10's XLA:CPU hands dots, element-wise ops and reductions to YNNPACK fusions. Its
reductions and element-wise fusions are slow for the transformer's backward pass (the relative
position bias gradient, a [heads, q, k] sum over the batch, took ~10% of the demo's step by
itself); keeping YNNPACK for the dots only makes the demo model's step 1.3x and Flan-T5-small's
1.1x faster with the same losses. XLA reads XLA_FLAGS once, when JAX first starts a backend, so
`apply_cpu_defaults` runs on import of the package; a flag the user set in XLA_FLAGS wins.
Set INSTRUCTREC_XLA_DEFAULTS=0 to leave XLA_FLAGS untouched.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# flag name -> value; only added where jaxlib is a version known to accept the flag (XLA aborts on
# an unknown one).
CPU_DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
_KNOWN_JAXLIB_PREFIXES = ("0.10.",)


def apply_cpu_defaults(environ: MutableMapping[str, str] | None = None,
                       jaxlib_version: str | None = None) -> list[str]:
    """Appends CPU_DEFAULTS to environ['XLA_FLAGS'] where not already set; returns what it added."""
    environ = os.environ if environ is None else environ
    if environ.get("INSTRUCTREC_XLA_DEFAULTS", "1") == "0":
        return []
    if jaxlib_version is None:
        try:
            from jaxlib import version as jaxlib_version_module  # does not start a backend
        except ImportError:
            return []
        jaxlib_version = jaxlib_version_module.__version__
    if not jaxlib_version.startswith(_KNOWN_JAXLIB_PREFIXES):
        return []
    current = environ.get("XLA_FLAGS", "")
    added = [f"--{name}={value}" for name, value in CPU_DEFAULTS.items()
             if f"--{name}=" not in current]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
