"""InstructRec-JAX: recommendation as instruction following with Flan-T5 on a T5X-style stack."""

from instructrec_jax import xla_flags as _xla_flags

__version__ = "0.1.0"

# Before JAX starts a backend (it reads XLA_FLAGS once); see xla_flags.py.
_xla_flags.apply_cpu_defaults()
