"""InstructRec-JAX: recommendation as instruction following with Flan-T5 on a T5X-style stack."""

__version__ = "0.1.0"
