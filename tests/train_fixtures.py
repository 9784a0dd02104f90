"""Small things the trainer's tests share: a synthetic SeqIO task, a very small T5, a gin model file.

The task maps "history: a b c" to "next: d" over byte-level tokens (seqio.ByteVocabulary, 259
ids), so nothing has to be trained or downloaded; 320 train and 64 validation examples.
Importing this module registers the task (a gin file can `import train_fixtures`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import seqio
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TASK = "trainer_test_next_number"
VOCAB_SIZE = 384  # >= ByteVocabulary's 259 ids, a multiple of 128 like Flan-T5's 32128
LENGTHS = {"inputs": 24, "targets": 8}

# A T5 small enough that 20 steps compile and run in seconds; float32 for exact comparisons.
TINY_CONFIG = dict(vocab_size=VOCAB_SIZE, d_model=32, d_ff=64, num_heads=4, d_kv=8,
                   num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
                   dtype="float32")


def _examples(split: str) -> dict[str, list[str]]:
    count, offset = (320, 0) if split == "train" else (64, 1000)
    inputs, targets = [], []
    for i in range(offset, offset + count):
        a, step = i % 97, 1 + i % 5
        inputs.append(f"history: {a} {a + step} {a + 2 * step}")
        targets.append(f"next: {a + 3 * step}")
    return {"inputs": inputs, "targets": targets}


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del shuffle_files, seed
    return tf.data.Dataset.from_tensor_slices(_examples(split))


def register_task(name: str = TASK) -> str:
    if name not in seqio.TaskRegistry.names():
        vocabulary = seqio.ByteVocabulary()
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(_dataset_fn, splits=("train", "validation")),
            preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
            output_features={
                "inputs": seqio.Feature(vocabulary, add_eos=True),
                "targets": seqio.Feature(vocabulary, add_eos=True),
            },
        )
    return name


register_task()


def tiny_model(**overrides):
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.encoder_decoder import EncoderDecoderModel

    loss_options = {k: overrides.pop(k) for k in ("z_loss", "label_smoothing",
                                                  "loss_normalizing_factor") if k in overrides}
    return EncoderDecoderModel(T5Config(**{**TINY_CONFIG, **overrides}), **loss_options)


MODEL_GIN = """
from __gin__ import dynamic_registration
import train_fixtures
from instructrec_jax.model import config
from instructrec_jax.model import encoder_decoder

MODEL = @encoder_decoder.EncoderDecoderModel()
encoder_decoder.EncoderDecoderModel.config = @config.T5Config()
encoder_decoder.EncoderDecoderModel.z_loss = %Z_LOSS
encoder_decoder.EncoderDecoderModel.label_smoothing = %LABEL_SMOOTHING
encoder_decoder.EncoderDecoderModel.loss_normalizing_factor = %LOSS_NORMALIZING_FACTOR
config.T5Config.vocab_size = %NUM_EMBEDDINGS
config.T5Config.dropout_rate = %DROPOUT_RATE
config.T5Config.d_model = 32
config.T5Config.d_ff = 64
config.T5Config.num_heads = 4
config.T5Config.d_kv = 8
config.T5Config.num_encoder_layers = 2
config.T5Config.num_decoder_layers = 2
config.T5Config.dtype = 'float32'
NUM_EMBEDDINGS = 384
Z_LOSS = 1e-4
LABEL_SMOOTHING = 0.0
LOSS_NORMALIZING_FACTOR = None
DROPOUT_RATE = 0.0
"""


class MarkEmbedding:
    """A trainer `param_initializer` for tests: sets the token embedding to `value` and appends a
    line to `record` each time it runs (a resumed run must not run it again)."""

    def __init__(self, value: float, record: str):
        self.value, self.record = value, record

    def __call__(self, params):
        import numpy as np

        with open(self.record, "a", encoding="utf-8") as f:
            f.write("ran\n")
        embedding = np.full_like(np.asarray(params["token_embedder"]["embedding"]), self.value)
        return {**params, "token_embedder": {**params["token_embedder"], "embedding": embedding}}


def param_init_gin(directory: Path, value: float, record: Path) -> Path:
    """A gin file adding MarkEmbedding(value, record) to the trainer's param_initializers."""
    path = Path(directory) / "param_init.gin"
    path.write_text(
        "from __gin__ import dynamic_registration\n"
        "import train_fixtures\n"
        "from instructrec_jax import train as train_lib\n"
        "train_lib.train.param_initializers = [@train_fixtures.MarkEmbedding()]\n"
        f"train_fixtures.MarkEmbedding.value = {value!r}\n"
        f"train_fixtures.MarkEmbedding.record = {str(record)!r}\n")
    return path


def write_model_gin(directory: Path) -> Path:
    path = Path(directory) / "test_model.gin"
    path.write_text(MODEL_GIN)
    return path


def train_command(model_gin: Path, model_dir: Path, *extra: str, steps: int = 20,
                  batch_size: int = 8) -> list[str]:
    """The documented command line, with the test model and task."""
    return [
        sys.executable, "-m", "instructrec_jax.train",
        f"--gin_file={model_gin}",
        "--gin_file=gin/runs/finetune.gin",
        f'--gin.MODEL_DIR="{model_dir}"',
        f'--gin.MIXTURE_OR_TASK_NAME="{TASK}"',
        f"--gin.TASK_FEATURE_LENGTHS={LENGTHS}",
        f"--gin.TRAIN_STEPS={steps}",
        f"--gin.BATCH_SIZE={batch_size}",
        *extra,
    ]


# Compiled train steps are kept between the test processes (and test sessions): the same step
# compiles once instead of once per process. Cache entries are keyed by the exact computation.
XLA_CACHE = Path(tempfile.gettempdir()) / "instructrec_jax_test_xla_cache"


def subprocess_env(devices: int = 1) -> dict[str, str]:
    """Environment for a trainer subprocess: CPU, `devices` host devices, the shared XLA cache."""
    env = dict(os.environ)
    env["JAX_COMPILATION_CACHE_DIR"] = str(XLA_CACHE)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # Optimisation level 0 compiles the test steps ~2x faster; the tests compare runs made
    # with the same flags, never against hard-coded numbers of an optimised build.
    env["XLA_FLAGS"] = (f"--xla_force_host_platform_device_count={devices} "
                        "--xla_backend_optimization_level=0")
    return env


def run_worker(group: str, workdir: Path, *, devices: int = 1, timeout: int = 900) -> dict:
    """Runs a `train_worker.py` group in a fresh process and returns its JSON observations."""
    out = Path(workdir) / f"{group}.json"
    proc = subprocess.run(
        [sys.executable, str(TESTS / "train_worker.py"), group, str(out), str(Path(workdir) / group)],
        cwd=REPO, env=subprocess_env(devices), capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"train_worker {group} failed ({proc.returncode}):\n{proc.stderr[-5000:]}")
    return json.loads(out.read_text())
