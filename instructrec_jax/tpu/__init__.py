"""Cloud TPU VM control for `instructrec tpu`: gcloud commands, worker set-up, launches, watch mode.

`main(argv)` is the command line (see `command_line.py`); the other modules hold the accelerator
table, the gcloud command lines, the shell commands run on the workers and the watch loop.
"""

from instructrec_jax.tpu.command_line import main

__all__ = ["main"]
