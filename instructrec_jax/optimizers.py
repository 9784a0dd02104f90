"""Optimisers and learning-rate schedules for training, selectable in gin (T5X's defaults).

An `Optimizer` pairs an optax transformation that yields the update *direction* (sign included,
learning rate excluded) with a schedule of the absolute train step. The train step multiplies
the direction by `learning_rate(step)`, so a run started from a checkpoint at step 1,138,000
follows the schedule from there (T5X semantics: TRAIN_STEPS and schedules count the initial
checkpoint's steps), and the logged rate is exactly the applied one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import gin
import jax
import jax.numpy as jnp
import optax

Schedule = Callable[[jax.Array], jax.Array]

SCHEDULE_FACTORS = (
    "constant",
    "linear_warmup",
    "rsqrt_decay",
    "rsqrt_normalized_decay",
    "decay_every",
    "cosine_decay",
    "linear_decay",
)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An update direction (optax, no learning rate) and a learning-rate schedule of the step."""

    transform: optax.GradientTransformation
    learning_rate: Schedule
    name: str = "optimizer"


@gin.configurable
def learning_rate_schedule(
    factors: str = "constant",
    base_learning_rate: float = 1e-3,
    warmup_steps: int = 1000,
    decay_factor: float = 0.5,
    steps_per_decay: int = 20000,
    steps_per_cycle: int = 100000,
    total_steps: int | None = None,
    min_learning_rate: float = 0.0,
) -> Schedule:
    """A product of named factors of the step, spelt as T5X spells them ('constant * rsqrt_decay').

    constant: base_learning_rate. linear_warmup: min(1, step / warmup_steps).
    rsqrt_decay: 1 / sqrt(max(step, warmup_steps)). rsqrt_normalized_decay: the same times
    sqrt(warmup_steps). decay_every: decay_factor ** (step // steps_per_decay).
    cosine_decay: half-cosine over steps_per_cycle after warm-up, repeating.
    linear_decay: from 1 after warm-up down to 0 at total_steps.
    The result is floored at min_learning_rate.
    """
    names = [name.strip() for name in factors.split("*")]
    for name in names:
        if name not in SCHEDULE_FACTORS:
            raise ValueError(
                f"unknown learning-rate factor {name!r} in {factors!r}; known: {', '.join(SCHEDULE_FACTORS)}"
            )
    if "linear_decay" in names and not total_steps:
        raise ValueError("the linear_decay factor needs total_steps (e.g. %TRAIN_STEPS)")

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        rate = jnp.asarray(1.0, jnp.float32)
        for name in names:
            if name == "constant":
                rate = rate * base_learning_rate
            elif name == "linear_warmup":
                rate = rate * jnp.minimum(1.0, step / max(warmup_steps, 1))
            elif name == "rsqrt_decay":
                rate = rate / jnp.sqrt(jnp.maximum(step, float(warmup_steps)))
            elif name == "rsqrt_normalized_decay":
                rate = rate * math.sqrt(warmup_steps) / jnp.sqrt(jnp.maximum(step, float(warmup_steps)))
            elif name == "decay_every":
                rate = rate * decay_factor ** jnp.floor(step / steps_per_decay)
            elif name == "cosine_decay":
                progress = jnp.maximum(0.0, (step - warmup_steps) / steps_per_cycle)
                rate = rate * 0.5 * (1.0 + jnp.cos(jnp.pi * (progress % 1.0)))
            elif name == "linear_decay":
                span = max(total_steps - warmup_steps, 1)
                rate = rate * jnp.clip((total_steps - step) / span, 0.0, 1.0)
        return jnp.maximum(rate, min_learning_rate)

    return schedule


@gin.configurable
def adafactor(
    learning_rate: Schedule | float = 1e-3,
    *,
    decay_rate: float = 0.8,
    step_offset: int = 0,
    min_dim_size_to_factor: int = 128,
    epsilon1: float = 1e-30,
    epsilon2: float = 1e-3,
    clipping_threshold: float | None = 1.0,
    multiply_by_parameter_scale: bool = True,
    momentum: float | None = None,
    weight_decay_rate: float | None = None,
    factored: bool = True,
) -> Optimizer:
    """Adafactor with T5X's defaults (factored second moments, β2ₜ = 1 − (t+1)^−0.8, no momentum).

    The second-moment statistics are factored into row and column means for dims ≥ 128; the
    update is clipped to RMS `clipping_threshold` and scaled by max(epsilon2, RMS(param)).
    `weight_decay_rate`, when set, is decoupled and multiplied by the learning rate.
    """
    chain = [
        optax.scale_by_factored_rms(
            factored=factored,
            decay_rate=decay_rate,
            step_offset=step_offset,
            min_dim_size_to_factor=min_dim_size_to_factor,
            epsilon=epsilon1,
        )
    ]
    if clipping_threshold is not None:
        chain.append(optax.clip_by_block_rms(clipping_threshold))
    if multiply_by_parameter_scale:
        chain.append(optax.scale_by_param_block_rms(min_scale=epsilon2))
    if momentum is not None:
        chain.append(optax.ema(momentum, debias=False))
    if weight_decay_rate is not None:
        chain.append(optax.add_decayed_weights(weight_decay_rate))
    chain.append(optax.scale(-1.0))
    return Optimizer(optax.chain(*chain), _as_schedule(learning_rate), "adafactor")


@gin.configurable
def adamw(
    learning_rate: Schedule | float = 1e-3,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    global_norm_clip: float | None = None,
) -> Optimizer:
    """AdamW (decoupled weight decay, scaled by the learning rate), optional global-norm clipping."""
    chain = []
    if global_norm_clip is not None:
        chain.append(optax.clip_by_global_norm(global_norm_clip))
    chain.append(optax.scale_by_adam(b1=b1, b2=b2, eps=eps))
    if weight_decay:
        chain.append(optax.add_decayed_weights(weight_decay))
    chain.append(optax.scale(-1.0))
    return Optimizer(optax.chain(*chain), _as_schedule(learning_rate), "adamw")


def _as_schedule(learning_rate: Schedule | float) -> Schedule:
    if callable(learning_rate):
        return learning_rate
    value = float(learning_rate)
    return lambda step: jnp.asarray(value, jnp.float32)


def apply_updates(params, direction, learning_rate: jax.Array):
    """params + learning_rate · direction, keeping each parameter's dtype."""
    return jax.tree_util.tree_map(
        lambda p, d: (p + learning_rate.astype(jnp.float32) * d.astype(jnp.float32)).astype(p.dtype),
        params,
        direction,
    )
