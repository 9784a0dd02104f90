"""T5X-style training: `python -m instructrec_jax.train --gin_file=… --gin.MODEL_DIR=…` (`instructrec train`).

`train(...)` is one gin-configurable function whose arguments are the model, the dataset configs,
the partitioner, the optimiser and the checkpoint config; the run file gin/runs/finetune.gin binds
them from T5X's macros. The hot loop is visible in `train`: next batch → jitted step (state
donated) → lagged finiteness check, periodic log/summaries, train-eval and checkpoints.

A run writes into MODEL_DIR: `config.gin` (operative gin config), `model-info.txt` (every parameter's
shape, dtype, logical axes and mesh partitioning), TensorBoard summaries under `train/` and
`training_eval/`, and Orbax checkpoints under `checkpoints/`. A restarted run resumes from the
newest complete checkpoint, data position included. SIGTERM (a preemptible VM about to go) makes
the run save at the next step and exit with status 3 (`PREEMPTED_EXIT_CODE`); 0 means finished,
1 a configuration or data error (printed without a traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import signal
import sys
import time
from typing import Any, Mapping, Sequence

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from instructrec_jax import data_pipeline, gin_flags, optimizers, partitioning, train_state
from instructrec_jax.checkpoints import CheckpointFormatError
from instructrec_jax.checkpoints import manager as checkpoints
from instructrec_jax.data_pipeline import DatasetConfig
from instructrec_jax.partitioning import Partitioner

log = logging.getLogger("instructrec_jax.train")

# Metrics whose TensorBoard names T5X users look for.
_SUMMARY_NAMES = {
    "loss": "loss",
    "accuracy": "accuracy",
    "z_loss": "z_loss",
    "cross_ent_loss": "cross_ent_loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
}


# Exit status of a run stopped by SIGTERM after saving (a relauncher resumes it; 0 means done).
PREEMPTED_EXIT_CODE = 3

# Below this size the initial state is made on one device and then placed (cheaper to compile).
SINGLE_DEVICE_INIT_BYTES = 2**30


class NonFiniteLossError(FloatingPointError):
    """The loss or the parameters became NaN/inf; the message names the step and the checkpoint kept."""


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What a finished (or preempted) run reports back."""

    model_dir: str
    start_step: int
    final_step: int
    resumed_from: int | None
    last_metrics: dict[str, float]
    losses: tuple[tuple[int, float], ...]  # (step, loss) of every step this run took
    state: Any = None  # the final TrainState (arrays in their shardings)
    preempted: bool = False


@gin.configurable
def train(
    *,
    model: Any = gin.REQUIRED,
    train_dataset_cfg: DatasetConfig = gin.REQUIRED,
    partitioner: Partitioner = gin.REQUIRED,
    optimizer: optimizers.Optimizer = gin.REQUIRED,
    model_dir: str = gin.REQUIRED,
    total_steps: int = gin.REQUIRED,
    checkpoint_cfg: checkpoints.CheckpointConfig = checkpoints.CheckpointConfig(),
    train_eval_dataset_cfg: DatasetConfig | None = None,
    eval_period: int = 1000,
    eval_steps: int = 20,
    log_every: int = 100,
    random_seed: int | None = 0,
    num_microbatches: int = 1,
    write_summaries: bool = True,
    param_initializers: Sequence[Any] = (),
) -> TrainSummary:
    """Trains `model` on `train_dataset_cfg` up to the absolute step `total_steps`.

    Resumes from MODEL_DIR's newest complete checkpoint if there is one; otherwise starts from
    `checkpoint_cfg.initial_checkpoint_path` (Orbax, HF or T5X) or from a random initialisation,
    which `param_initializers` (callables params -> params, e.g. item_init.CooccurrenceItemInit)
    then adjust in order. They run once, at step 0: a resumed run restores what they produced.
    """
    is_chief = jax.process_index() == 0
    model_dir = str(model_dir)
    out_dir = epath.Path(model_dir)
    if is_chief:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed = _agreed_seed(random_seed)

    provider = data_pipeline.get_mixture_or_task(
        train_dataset_cfg.mixture_or_task_name, train_dataset_cfg.module
    )
    data_pipeline.check_vocabulary(provider, model.config.vocab_size)
    lengths = dict(train_dataset_cfg.task_feature_lengths)

    # -- state layout: logical axes -> shardings, without allocating anything ----------------
    init_rng = jax.random.PRNGKey(seed)
    layout = state_layout(model, optimizer, partitioner, lengths)
    state_shardings, abstract_state = layout.shardings, layout.abstract_state
    init_shapes = layout.init_shapes

    # -- where to start: MODEL_DIR checkpoint, initial checkpoint, or scratch -----------------
    checkpointer = checkpoints.TrainCheckpointer(
        model_dir, keep=checkpoint_cfg.keep, async_save=checkpoint_cfg.async_save
    )
    data_state: dict[str, Any] = {}
    resumed_from = checkpointer.latest_step()
    if resumed_from is not None:
        state, data_state, metadata = checkpointer.restore(resumed_from, abstract_state)
        log.info("resumed from %s/%d (data position %s)", checkpointer.directory, resumed_from,
                 data_state.get("batches_consumed"))
    else:
        state = _initial_state(model, optimizer, partitioner, init_rng, init_shapes,
                               state_shardings, abstract_state, checkpoint_cfg)
        if param_initializers and checkpoint_cfg.initial_checkpoint_path:
            log.warning("param_initializers are not applied: the run starts from the initial "
                        "checkpoint %s", checkpoint_cfg.initial_checkpoint_path)
        elif param_initializers:
            if jax.process_count() > 1:
                raise ValueError("param_initializers pass the parameters through one host's memory; "
                                 "run them in a single process and start from that checkpoint")
            params = jax.device_get(state.params)
            for initializer in param_initializers:
                params = initializer(params)
            state = state.replace(params=jax.device_put(params, state_shardings.params))
    start_step = int(jax.device_get(state.step))
    if data_state and (data_state.get("global_batch_size") != train_dataset_cfg.batch_size
                       or data_state.get("mixture_or_task_name")
                       != train_dataset_cfg.mixture_or_task_name):
        log.warning("the checkpoint's data position was taken with %s; this run reads %s with "
                    "batch %d: the data order after resuming differs from an uninterrupted run",
                    data_state, train_dataset_cfg.mixture_or_task_name, train_dataset_cfg.batch_size)
    data_seed = data_state.get("seed", train_dataset_cfg.seed if train_dataset_cfg.seed is not None
                               else seed)
    batches = data_pipeline.TrainBatchIterator(
        train_dataset_cfg, partitioner, seed=int(data_seed),
        position=int(data_state.get("batches_consumed", 0)),
    )

    if is_chief:
        write_model_info(out_dir / "model-info.txt", layout, partitioner, model)
        _write_config(out_dir)

    # -- the compiled step ----------------------------------------------------------------------
    batch_shardings = {
        name: partitioner.batch_sharding(len(shape))
        for name, shape in data_pipeline.batch_shapes(train_dataset_cfg).items()
    }
    step_fn = partitioner.jit(
        train_state.make_train_step(
            model.loss_fn, optimizer, dropout_seed=seed, num_microbatches=num_microbatches,
            loss_normalizing_factor=getattr(model, "loss_normalizing_factor", None),
        ),
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, partitioner.replicated),
        donate_argnums=(0,),
    )
    eval_fn = None
    if train_eval_dataset_cfg is not None and eval_period:
        eval_fn = _make_train_eval(model, partitioner, state_shardings.params,
                                   train_eval_dataset_cfg, eval_steps)

    writer = _SummaryWriter(out_dir / "train") if (is_chief and write_summaries) else None
    eval_writer = _SummaryWriter(out_dir / "training_eval") if (is_chief and write_summaries
                                                                  and eval_fn) else None
    padded_tokens = train_dataset_cfg.batch_size * (lengths["inputs"] + lengths["targets"])
    meta = {"mixture_or_task_name": train_dataset_cfg.mixture_or_task_name,
            "mesh": f"{partitioner.data_axis_size}x{partitioner.num_partitions}",
            "gin_config": gin.config_str()}

    preempted = _PreemptionFlag()
    last_metrics: dict[str, float] = {}
    history: list[tuple[int, float]] = []
    pending: list[tuple[int, Any]] = []  # (step number the metrics belong to, device metrics)
    window = _ThroughputWindow()
    step = start_step
    if start_step >= total_steps:
        log.warning("nothing to train: the state is at step %d and TRAIN_STEPS is %d (TRAIN_STEPS "
                    "is absolute and counts the initial checkpoint's steps)", start_step, total_steps)
    log.info("training %s from step %d to %d on a %s mesh (batch %d, lengths %s)",
             train_dataset_cfg.mixture_or_task_name, start_step, total_steps,
             meta["mesh"], train_dataset_cfg.batch_size, lengths)
    try:
        while step < total_steps:
            batch = next(batches)
            state, metrics = step_fn(state, batch)
            step += 1
            pending.append((step, metrics))
            if step == start_step + 1:
                last_metrics = _check_and_collect(pending.pop(), checkpointer, window, history)
                window.restart()  # keep compilation out of the throughput figures
            # Check the previous step's loss while this one runs: exact step, no pipeline stall.
            while len(pending) > 1:
                last_metrics = _check_and_collect(pending.pop(0), checkpointer, window, history)
            stop = step == total_steps or preempted.is_set()
            if step % log_every == 0 or stop or step % checkpoint_cfg.period == 0:
                while pending:
                    last_metrics = _check_and_collect(pending.pop(0), checkpointer, window, history)
            if step % log_every == 0 or step == total_steps:
                rates = window.rates(padded_tokens)
                _log_line(step, total_steps, last_metrics, rates)
                if writer:
                    writer.write(step, {**{_SUMMARY_NAMES.get(k, k): v for k, v in last_metrics.items()
                                           if k in _SUMMARY_NAMES}, **rates})
                window.restart()
            if step % checkpoint_cfg.period == 0 or stop:
                _save(checkpointer, step, state, batches, {**meta, "metrics": last_metrics})
            if eval_fn is not None and step % eval_period == 0:
                eval_metrics = eval_fn(state.params)
                log.info("train_eval step %d: %s", step, _format_metrics(eval_metrics))
                if eval_writer:
                    eval_writer.write(step, eval_metrics)
                window.restart()
            if stop:
                break
    finally:
        checkpointer.wait_until_finished()
        checkpointer.close()
        preempted.restore()
        if writer:
            writer.close()
        if eval_writer:
            eval_writer.close()
    if is_chief:
        _write_config(out_dir)  # the operative config is complete once everything has run
    return TrainSummary(model_dir, start_step, step, resumed_from, last_metrics,
                        tuple(history), state, preempted=preempted.is_set())


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Where every array of the train state lives, computed without allocating any of them."""

    boxed_params: Any  # ShapeDtypeStructs boxed with logical axes (nn.Partitioned)
    logical_specs: Any  # logical PartitionSpec per parameter
    shardings: train_state.TrainState  # NamedSharding per array of the state
    abstract_state: train_state.TrainState  # ShapeDtypeStructs carrying those shardings
    init_shapes: dict[str, tuple[int, int]]


def state_layout(model, optimizer: optimizers.Optimizer, partitioner: Partitioner,
                 lengths: Mapping[str, int]) -> StateLayout:
    """The train state's shapes and shardings: parameters by their logical axes, optimiser slots
    like their parameter (factored statistics replicated), the step replicated."""
    init_shapes = {
        "encoder_input_tokens": (1, int(lengths["inputs"])),
        "decoder_input_tokens": (1, int(lengths["targets"])),
    }
    boxed = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), init_shapes))
    logical_specs = partitioner.logical_specs(boxed)
    param_shardings = partitioner.param_shardings(logical_specs)
    abstract_params = nn.unbox(boxed)
    abstract_opt_state = jax.eval_shape(optimizer.transform.init, abstract_params)
    opt_shardings = partitioner.optimizer_state_shardings(
        optimizer.transform, abstract_opt_state, abstract_params, param_shardings
    )
    shardings = train_state.TrainState(
        step=partitioner.replicated, params=param_shardings, opt_state=opt_shardings
    )
    abstract_state = checkpoints.sharded_abstract(
        train_state.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                               opt_state=abstract_opt_state),
        shardings,
    )
    return StateLayout(boxed, logical_specs, shardings, abstract_state, init_shapes)


def _initial_state(model, optimizer, partitioner, rng, init_shapes, state_shardings, abstract_state,
                   checkpoint_cfg) -> train_state.TrainState:
    """A fresh state: random parameters made directly in their shardings, or initial weights."""
    path = checkpoint_cfg.initial_checkpoint_path
    if path:
        loaded = checkpoints.load_weights(path, abstract_state.params,
                                          strict=checkpoint_cfg.initial_checkpoint_strict)
        step = 0 if checkpoint_cfg.reset_initial_step else loaded.step
        log.info("initial weights from %s checkpoint %s (step %d)", loaded.kind, loaded.path, step)
        params = loaded.params
        if loaded.missing:
            log.warning("%d parameters are not in the initial checkpoint and start from their random "
                        "initialisation: %s", len(loaded.missing), ", ".join(loaded.missing))
            fresh = partitioner.jit(lambda: nn.unbox(model.init_params(rng, init_shapes)),
                                    in_shardings=(), out_shardings=state_shardings.params)()
            params = checkpoints.merge_params(fresh, loaded.params)
        init_opt = partitioner.jit(
            lambda params: train_state.init_train_state(params, optimizer, step),
            in_shardings=(state_shardings.params,), out_shardings=state_shardings,
        )
        return init_opt(params)

    def init():
        params = nn.unbox(model.init_params(rng, init_shapes))
        return train_state.init_train_state(params, optimizer, 0)

    state_bytes = partitioning.array_bytes(abstract_state)
    if jax.process_count() == 1 and state_bytes < SINGLE_DEVICE_INIT_BYTES:
        # Small models: one single-device program (compiled once, whatever the mesh), then
        # placed. Random values do not depend on the sharding, so both paths give the same state.
        return jax.device_put(jax.jit(init)(), state_shardings)
    # Large models: each device creates only its own shards.
    return partitioner.jit(init, in_shardings=(), out_shardings=state_shardings)()


def _check_and_collect(entry, checkpointer, window, history) -> dict[str, float]:
    step, metrics = entry
    values = {name: float(value) for name, value in jax.device_get(metrics).items()}
    loss = values.get("loss", float("nan"))
    if not math.isfinite(loss):
        kept = checkpointer.last_saved_step
        raise NonFiniteLossError(
            f"the training loss is {loss} at step {step}; stopping. The last good checkpoint "
            f"({'none' if kept is None else f'step {kept}'}) in {checkpointer.directory} is kept. "
            "Lower the learning rate, check the data, or restart from that checkpoint."
        )
    window.add(values)
    history.append((step, loss))
    return values


def _save(checkpointer, step, state, batches, meta) -> None:
    """Saves after checking that the parameters are finite (a NaN state never replaces a good one)."""
    if not bool(jax.device_get(_all_finite(state.params))):
        kept = checkpointer.last_saved_step
        raise NonFiniteLossError(
            f"the parameters hold NaN or inf after step {step}; not saving. The last good "
            f"checkpoint ({'none' if kept is None else f'step {kept}'}) in "
            f"{checkpointer.directory} is kept."
        )
    checkpointer.save(step, state, batches.state(), meta)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _make_train_eval(model, partitioner, param_shardings, cfg: DatasetConfig, eval_steps: int):
    """Mean loss/accuracy over the first `eval_steps` batches of the eval split, fixed order."""
    provider = data_pipeline.get_mixture_or_task(cfg.mixture_or_task_name, cfg.module)
    if cfg.split not in provider.splits:
        log.warning("train_eval disabled: %s has no %r split (splits: %s)",
                    cfg.mixture_or_task_name, cfg.split, ", ".join(provider.splits))
        return None
    shapes = data_pipeline.batch_shapes(cfg)
    eval_step = partitioner.jit(
        train_state.make_eval_step(model.loss_fn),
        in_shardings=(param_shardings,
                      {name: partitioner.batch_sharding(len(s)) for name, s in shapes.items()}),
        out_shardings=partitioner.replicated,
    )
    layout = partitioner.data_layout(cfg.batch_size)

    def run(params) -> dict[str, float]:
        totals: dict[str, float] = {}
        tokens = 0.0
        dataset = data_pipeline.local_batches(cfg, layout, num_epochs=None).take(eval_steps)
        for local in dataset.as_numpy_iterator():
            batch = data_pipeline.to_global_batch(local, partitioner, cfg.batch_size)
            values = {k: float(v) for k, v in jax.device_get(eval_step(params, batch)).items()}
            weight = values.get("num_target_tokens", 1.0)
            tokens += weight
            for name, value in values.items():
                counted = train_state.is_count_metric(name)
                totals[name] = totals.get(name, 0.0) + (value if counted else value * weight)
        return {k: (v if train_state.is_count_metric(k) else v / max(tokens, 1.0))
                for k, v in totals.items()}

    return run


class _ThroughputWindow:
    """Steps and tokens since the last log line, for steps/s, tokens/s and ETA."""

    def __init__(self):
        self.restart()

    def restart(self):
        self.start = time.perf_counter()
        self.steps = 0
        self.real_tokens = 0.0

    def add(self, values: Mapping[str, float]):
        self.steps += 1
        self.real_tokens += values.get("num_real_tokens", 0.0)

    def rates(self, padded_tokens_per_step: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rates = {
            "steps_per_second": self.steps / elapsed,
            "tokens_per_second": self.steps * padded_tokens_per_step / elapsed,
        }
        if self.real_tokens:
            rates["real_tokens_per_second"] = self.real_tokens / elapsed
        return rates


def _log_line(step: int, total: int, metrics: Mapping[str, float], rates: Mapping[str, float]):
    steps_per_second = rates.get("steps_per_second", 0.0)
    eta = (total - step) / steps_per_second if steps_per_second > 0 else float("nan")
    parts = [f"step {step}/{total}", f"loss {metrics.get('loss', float('nan')):.4f}"]
    if "accuracy" in metrics:
        parts.append(f"accuracy {metrics['accuracy']:.4f}")
    parts.append(f"lr {metrics.get('learning_rate', float('nan')):.2e}")
    parts.append(f"tokens/s {rates.get('tokens_per_second', 0):,.0f}")
    if "real_tokens_per_second" in rates:
        parts.append(f"(real {rates['real_tokens_per_second']:,.0f})")
    parts.append(f"steps/s {steps_per_second:.3f}")
    parts.append(f"ETA {_format_duration(eta)}")
    log.info("  ".join(parts))


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_metrics(metrics: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items()))


class _SummaryWriter:
    """TensorBoard scalars (T5X's `train/` and `training_eval/` folders).

    Written as classic `simple_value` summaries through TensorFlow's raw-proto writer, which
    TensorBoard reads as scalars and which works without the tensorboard package installed.
    """

    def __init__(self, directory: epath.Path):
        import tensorflow as tf

        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(directory))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        tf = self._tf
        values = [tf.compat.v1.Summary.Value(tag=name, simple_value=float(value))
                  for name, value in scalars.items()]
        proto = tf.compat.v1.Summary(value=values).SerializeToString()
        with self._writer.as_default():
            tf.summary.experimental.write_raw_pb(proto, step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class _PreemptionFlag:
    """SIGTERM (a spot/preemptible VM about to go) asks the loop to save and stop cleanly."""

    def __init__(self):
        self._set = False
        self._previous = None
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None

    def _handle(self, signum, frame):
        log.warning("SIGTERM received: saving a checkpoint and stopping")
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def restore(self):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _agreed_seed(random_seed: int | None) -> int:
    """RANDOM_SEED, or (None) a fresh seed that every process agrees on."""
    if random_seed is not None:
        return int(random_seed)
    fresh = np.int64(int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        fresh = multihost_utils.broadcast_one_to_all(fresh)
    return int(fresh)


def _write_config(out_dir: epath.Path) -> None:
    from instructrec_jax.atomic import write_text_atomic

    text = gin.operative_config_str()
    if str(out_dir).startswith(("gs://", "s3://")):
        (out_dir / "config.gin").write_text(text)
    else:
        write_text_atomic(str(out_dir / "config.gin"), text)


# -- model-info.txt --------------------------------------------------------------------------


def write_model_info(path: epath.Path, layout: StateLayout, partitioner: Partitioner,
                     model=None) -> str:
    """Writes (and returns) one line per parameter plus totals, as T5X's model-info.txt."""
    text = model_info(layout, partitioner, model)
    if str(path).startswith(("gs://", "s3://")):
        path.write_text(text)
    else:
        from instructrec_jax.atomic import write_text_atomic

        write_text_atomic(str(path), text)
    return text


def model_info(layout: StateLayout, partitioner: Partitioner, model=None) -> str:
    """Every parameter's name, size, shape by logical axis, dtype, logical axes and mesh spec."""
    flat_params = checkpoints.named_leaves(layout.abstract_state.params)
    flat_logical = _flat_specs(layout.logical_specs)
    flat_shardings = _flat_specs(jax.tree_util.tree_map(
        lambda s: s.spec, layout.shardings.params,
        is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)))
    width = max(len(name) for name, _ in flat_params)
    lines = []
    total = 0
    for name, leaf in flat_params:
        size = math.prod(leaf.shape)
        total += size
        axes = flat_logical.get(name)
        shape = ", ".join(
            f"{axis}={dim}" if axes else str(dim)
            for axis, dim in zip(axes or [None] * len(leaf.shape), leaf.shape)
        )
        lines.append(
            f"Variable {name.ljust(width)}  size {size:>14,}  shape ({shape})  dtype "
            f"{np.dtype(leaf.dtype).name}  logical {tuple(axes) if axes else None}  "
            f"partition {flat_shardings.get(name)}"
        )
    opt_state = layout.abstract_state.opt_state
    opt_bytes = partitioning.array_bytes(opt_state)
    param_bytes = partitioning.array_bytes(layout.abstract_state.params)
    lines.append("")
    lines.append(f"Total number of parameters: {total:,} ({param_bytes / 2**20:,.1f} MiB)")
    lines.append(f"Optimizer state: {opt_bytes:,} bytes ({opt_bytes / 2**20:,.1f} MiB) in "
                 f"{len(jax.tree_util.tree_leaves(opt_state))} arrays")
    lines.append(f"Mesh: {dict(partitioner.mesh.shape)} (data x model), fsdp={partitioner.fsdp}")
    lines.append(f"Logical axis rules: {partitioner.logical_axis_rules}")
    if model is not None and hasattr(model, "config"):
        lines.append(f"Model config: {model.config}")
    return "\n".join(lines) + "\n"


def _flat_specs(tree) -> dict[str, tuple | None]:
    is_leaf = lambda x: x is None or isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {checkpoints.path_name(path): (tuple(spec) if spec is not None else None)
            for path, spec in leaves}


# -- command line ----------------------------------------------------------------------------

_USER_ERRORS = (
    CheckpointFormatError,
    data_pipeline.UnknownTaskError,
    data_pipeline.VocabularyMismatchError,
    checkpoints.CheckpointError,
    gin_flags.GinConfigError,
    NonFiniteLossError,
)


def main(argv: Sequence[str] | None = None) -> int:
    """`instructrec train` / `python -m instructrec_jax.train`: parse gin flags, join the job, train."""
    from instructrec_jax import distributed

    parser = argparse.ArgumentParser(
        prog="instructrec train",
        description="T5X-style gin-configured training, e.g. --gin_file=gin/models/flan_t5_tiny.gin "
        "--gin_file=gin/runs/finetune.gin --gin.MODEL_DIR=\\\"/tmp/run\\\" "
        "--gin.MIXTURE_OR_TASK_NAME=\\\"instructrec_ml100k_all\\\"",
    )
    gin_flags.add_gin_arguments(parser)
    distributed.add_distributed_flags(parser)
    parser.add_argument("--log_level", default="INFO")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(gin_flags.rewrite_gin_args(argv))
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stdout, force=True)
    if args.log_level.upper() != "DEBUG":
        # Orbax logs every array transfer at INFO through absl; keep the run log readable.
        logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        setup = distributed.maybe_initialize(args)
        log.info("process %d of %d (%s)", setup.process_index, setup.process_count, setup.reason)
        gin.clear_config()  # a second main() in one process starts from a clean configuration
        gin_flags.configure_gin(gin_flags.gin_flags_from_args(args))
        summary = train()
    except _USER_ERRORS as error:
        # gin appends "In call to configurable 'train' (...)": not news to the user.
        message = str(error).split("\n  In call to configurable")[0]
        print(f"instructrec train: {message}", file=sys.stderr)
        return 1
    if summary.preempted:
        log.warning("stopped by SIGTERM at step %d with a checkpoint saved; run the same command "
                    "again to resume", summary.final_step)
        return PREEMPTED_EXIT_CODE
    log.info("done: step %d", summary.final_step)
    return 0


if __name__ == "__main__":
    # Run the imported module's main: gin registered `instructrec_jax.train.train`, not `__main__.train`.
    from instructrec_jax.train import main as _main

    sys.exit(_main())
