"""The train state and the pure train/eval step functions that `train.py` compiles once.

`TrainState` holds the absolute step, the (unboxed) parameters and the optimiser state. The step
computes gradients (accumulated over microbatches when asked), applies the optimiser direction
times the scheduled learning rate, and returns scalar metrics; it is jitted by the partitioner
with the state donated.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp

from instructrec_jax import optimizers
from instructrec_jax.model import losses

Batch = Mapping[str, jax.Array]
LossFn = Callable[[Any, Batch, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]

@flax.struct.dataclass
class TrainState:
    """Absolute step, parameters and optimiser state: everything a checkpoint restores."""

    step: jax.Array
    params: Any
    opt_state: Any


def init_train_state(params: Any, optimizer: optimizers.Optimizer, step: int = 0) -> TrainState:
    return TrainState(
        step=jnp.asarray(step, jnp.int32), params=params, opt_state=optimizer.transform.init(params)
    )


def loss_normalizer(option: Any, batch: Batch) -> jax.Array:
    """How much of the whole batch's normalising factor a batch (or microbatch) carries.

    Used to combine microbatch losses into exactly the loss of the whole batch: a fixed or absent
    factor makes losses add up; the special factors ('NUM_REAL_TARGET_TOKENS', 'AVERAGE_PER_SEQUENCE',
    …) weigh each microbatch by its own factor, resolved as the model's loss resolves it.
    """
    if option is None or not isinstance(option, str):
        return jnp.asarray(1.0, jnp.float32)
    factor, _ = losses.loss_normalizing_factor_and_weights(option, batch)
    return jnp.asarray(factor, jnp.float32)


def is_count_metric(name: str) -> bool:
    """Counts add up over microbatches and eval batches; other metrics are averaged."""
    return name.startswith("num_") or name == "weight_sum"


def split_microbatches(batch: Batch, num_microbatches: int) -> dict[str, jax.Array]:
    """[B, …] -> [M, B/M, …], microbatch m holding rows m, m+M, m+2M, …

    Strided rather than contiguous slices, so that with rows sharded over 'data' every device
    contributes equally to every microbatch and the reshape moves no data.
    """
    out = {}
    for name, value in batch.items():
        rows = value.shape[0]
        if rows % num_microbatches:
            raise ValueError(
                f"batch of {rows} rows cannot be split into {num_microbatches} microbatches"
            )
        value = value.reshape(rows // num_microbatches, num_microbatches, *value.shape[1:])
        out[name] = jnp.swapaxes(value, 0, 1)
    return out


def loss_and_grads(
    loss_fn: LossFn,
    params: Any,
    batch: Batch,
    rng: jax.Array,
    *,
    num_microbatches: int = 1,
    loss_normalizing_factor: Any = None,
) -> tuple[jax.Array, Any, dict[str, jax.Array]]:
    """Loss, gradients and metrics of the batch; with microbatches, accumulated to the same values.

    Each microbatch's loss is normalised by the model over that microbatch; weighing it by its
    share of the batch's normaliser gives the loss (and gradients) of the whole batch, up to
    float rounding. Metrics other than counts are weighed by real target tokens.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if num_microbatches <= 1:
        (loss, metrics), grads = grad_fn(params, batch, rng)
        return loss, grads, dict(metrics)

    micro = split_microbatches(batch, num_microbatches)
    total_norm = loss_normalizer(loss_normalizing_factor, batch)
    total_tokens = jnp.maximum(jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32)), 1.0)

    def one(index, microbatch):
        micro_rng = None if rng is None else jax.random.fold_in(rng, index)
        (loss, metrics), grads = grad_fn(params, microbatch, micro_rng)
        share = loss_normalizer(loss_normalizing_factor, microbatch) / total_norm
        token_share = jnp.sum(microbatch["decoder_loss_weights"].astype(jnp.float32)) / total_tokens
        grads = jax.tree_util.tree_map(lambda g: g * share.astype(g.dtype), grads)
        weighted = {}
        for name, value in metrics.items():
            if is_count_metric(name):
                weighted[name] = value
            elif "loss" in name:
                weighted[name] = value * share
            else:
                weighted[name] = value * token_share
        return loss * share, grads, weighted

    def body(carry, xs):
        index, microbatch = xs
        loss, grads, metrics = one(index, microbatch)
        acc_loss, acc_grads, acc_metrics = carry
        return (
            acc_loss + loss,
            jax.tree_util.tree_map(jnp.add, acc_grads, grads),
            jax.tree_util.tree_map(jnp.add, acc_metrics, metrics),
        ), None

    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    rest = jax.tree_util.tree_map(lambda x: x[1:], micro)
    init = one(0, first)
    (loss, grads, metrics), _ = jax.lax.scan(
        body, init, (jnp.arange(1, num_microbatches), rest)
    )
    return loss, grads, metrics


def make_train_step(
    loss_fn: LossFn,
    optimizer: optimizers.Optimizer,
    *,
    dropout_seed: int = 0,
    num_microbatches: int = 1,
    loss_normalizing_factor: Any = None,
) -> Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure function (state, batch) -> (new state, metrics) for one optimiser step."""

    def train_step(state: TrainState, batch: Batch):
        # Dropout randomness is a function of the absolute step: resumed runs repeat it exactly.
        rng = jax.random.fold_in(jax.random.PRNGKey(dropout_seed), state.step)
        loss, grads, metrics = loss_and_grads(
            loss_fn, state.params, batch, rng,
            num_microbatches=num_microbatches, loss_normalizing_factor=loss_normalizing_factor,
        )
        direction, opt_state = optimizer.transform.update(grads, state.opt_state, state.params)
        learning_rate = optimizer.learning_rate(state.step)
        params = optimizers.apply_updates(state.params, direction, learning_rate)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["learning_rate"] = learning_rate
        metrics["grad_norm"] = _global_norm(grads)
        metrics["num_target_tokens"] = jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32))
        metrics["num_real_tokens"] = (jnp.sum(batch["encoder_input_tokens"] > 0)
                                      + jnp.sum(batch["decoder_target_tokens"] > 0)).astype(jnp.float32)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """The pure function (params, batch) -> metrics without dropout (for train_eval)."""

    def eval_step(params, batch):
        loss, metrics = loss_fn(params, batch, None)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["num_target_tokens"] = jnp.sum(batch["decoder_loss_weights"].astype(jnp.float32))
        return metrics

    return eval_step


def _global_norm(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
