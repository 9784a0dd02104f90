"""Checkpoint formats: Hugging Face safetensors (`hf`), T5X's legacy msgpack + TensorStore (`t5x_legacy`),
conversion between them and our Orbax params (`convert`), and the training checkpoint manager.

Nothing here unpickles: safetensors, msgpack and zarr hold plain arrays only.
"""


class CheckpointFormatError(ValueError):
    """A checkpoint file or directory that does not hold what its format promises."""

    def __init__(self, path: object, message: str):
        self.path = str(path)
        super().__init__(f"{path}: {message}")
