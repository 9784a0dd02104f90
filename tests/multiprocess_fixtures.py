"""A SeqIO task for the two-process training test whose data can be made to stall on request.

"count from a by s" -> the next three numbers, byte-level tokens, read through a Python
generator in a fixed order. With
$MULTIPROCESS_TEST_STALL_FROM=N every example from index N on takes a minute to arrive, so a run
stops making progress at a known step and can be killed after its checkpoint, without any race
against the training loop. The examples (and so the losses) do not depend on the variable.
Importing this module registers the task (the test's gin file does `import multiprocess_fixtures`).
"""

from __future__ import annotations

import os
import time

import seqio
import tensorflow as tf

TASK = "multiprocess_test_counting"
STALL_ENV = "MULTIPROCESS_TEST_STALL_FROM"


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    count, offset = (160, 0) if split == "train" else (32, 500)
    stall_from = int(os.environ.get(STALL_ENV, "-1"))

    def generate():
        for index in range(count):
            if 0 <= stall_from <= index:
                time.sleep(60)
            start, step = (offset + index) % 89, 1 + index % 4
            yield {"inputs": f"count from {start} by {step}",
                   "targets": " ".join(str(start + k * step) for k in (1, 2, 3))}

    spec = tf.TensorSpec((), tf.string)
    return tf.data.Dataset.from_generator(generate, output_signature={"inputs": spec, "targets": spec})


if TASK not in seqio.TaskRegistry.names():
    vocabulary = seqio.ByteVocabulary()
    seqio.TaskRegistry.add(
        TASK,
        source=seqio.FunctionDataSource(_dataset_fn, splits=("train", "validation")),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
        output_features={
            "inputs": seqio.Feature(vocabulary, add_eos=True),
            "targets": seqio.Feature(vocabulary, add_eos=True),
        },
    )
