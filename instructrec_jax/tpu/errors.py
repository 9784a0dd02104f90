"""The two ways `instructrec tpu` refuses to start: bad arguments, or no Google Cloud CLI."""

from __future__ import annotations


class TpuUsageError(ValueError):
    """An argument that cannot work (caught before any gcloud command runs); the message says why."""


class GcloudNotFound(RuntimeError):
    """No `gcloud` executable on PATH."""

    def __init__(self) -> None:
        super().__init__(
            "gcloud not found on PATH; install the Google Cloud CLI "
            "(https://cloud.google.com/sdk/docs/install), run `gcloud auth login`, and retry "
            "(or add --dry-run to print the commands without running them)")
