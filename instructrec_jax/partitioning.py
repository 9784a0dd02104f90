"""Mesh and logical-axis partitioning: where every parameter, optimiser slot and batch row lives.

T5X's model of sharding on today's JAX: a 2-D `Mesh` with axes ('data', 'model'), parameters and
activations that carry *logical* axis names (set by the model with `nn.with_logical_partitioning` /
`nn.with_logical_constraint`), and a rule list mapping logical names to mesh axes. The train step
is compiled with `jax.jit(in_shardings=…, out_shardings=…, donate_argnums=…)` under
`jax.set_mesh(mesh)` and `nn.logical_axis_rules(rules)` (the contexts replace pjit's `with mesh:`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import gin
import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"

LogicalRules = tuple[tuple[str, str | None], ...]


def standard_logical_axis_rules(*, parameter_partitioning_dims: int = 1) -> LogicalRules:
    """T5X's default rules: 1-D model parallelism, or with 2 dims, `embed` sharded over 'data'.

    With 2-D parameter partitioning (FSDP-like) the embedding dimension of every parameter is
    split over the data axis too; activations keep batch on 'data', and flax gives a mesh axis to
    the first logical axis that asks for it, so an activation's `embed` stays unsharded.
    """
    if parameter_partitioning_dims not in (1, 2):
        raise ValueError(f"parameter_partitioning_dims must be 1 or 2, got {parameter_partitioning_dims}")
    rules: list[tuple[str, str | None]] = [
        ("batch", DATA_AXIS),
        ("vocab", MODEL_AXIS),
        ("mlp", MODEL_AXIS),
        ("heads", MODEL_AXIS),
        ("joined_kv", MODEL_AXIS),
        ("kv", None),
        ("embed", DATA_AXIS if parameter_partitioning_dims == 2 else None),
        ("relpos_buckets", None),
        ("abspos_buckets", None),
        ("length", None),
        ("layers", None),
        ("stack", None),
        ("mlp_activations", None),
    ]
    if parameter_partitioning_dims == 2:
        # Activations: once batch took 'data', embed falls back to unsharded.
        rules.append(("embed", None))
    return tuple(rules)


@dataclasses.dataclass(frozen=True)
class DataLayout:
    """Which slice of every global batch this process loads (T5X's per-host data layout)."""

    global_batch_size: int
    shard_id: int
    num_shards: int

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.num_shards


@gin.configurable
class Partitioner:
    """Builds the device mesh and turns logical axis names into `NamedSharding`s.

    `num_partitions` is the size of the 'model' axis; the 'data' axis takes the remaining devices
    (`data_axis_size` may pin it, e.g. to use fewer devices than present). `fsdp=True` switches to
    2-D parameter partitioning (embed→data). `logical_axis_rules` overrides the standard rules.
    """

    def __init__(
        self,
        num_partitions: int = 1,
        *,
        data_axis_size: int | None = None,
        fsdp: bool = False,
        logical_axis_rules: Sequence[tuple[str, str | None]] | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        devices = list(jax.devices() if devices is None else devices)
        if num_partitions < 1:
            raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
        if data_axis_size is None:
            if len(devices) % num_partitions:
                raise ValueError(
                    f"num_partitions={num_partitions} does not divide the {len(devices)} devices"
                )
            data_axis_size = len(devices) // num_partitions
        needed = data_axis_size * num_partitions
        if needed > len(devices):
            raise ValueError(
                f"mesh {data_axis_size}x{num_partitions} (data x model) needs {needed} devices, "
                f"only {len(devices)} present"
            )
        self.num_partitions = num_partitions
        self.data_axis_size = data_axis_size
        self.fsdp = fsdp
        if logical_axis_rules is None:
            logical_axis_rules = standard_logical_axis_rules(
                parameter_partitioning_dims=2 if fsdp else 1
            )
        self.logical_axis_rules: LogicalRules = tuple(
            (str(name), None if axis is None else str(axis)) for name, axis in logical_axis_rules
        )
        if needed == len(jax.devices()) and devices == list(jax.devices()):
            # make_mesh orders devices along the physical topology (TPU ICI rings, GPU NVLink).
            self.mesh = jax.make_mesh(
                (data_axis_size, num_partitions),
                (DATA_AXIS, MODEL_AXIS),
                axis_types=(AxisType.Auto, AxisType.Auto),
            )
        else:
            grid = np.asarray(devices[:needed], dtype=object).reshape(data_axis_size, num_partitions)
            self.mesh = Mesh(grid, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))

    def __repr__(self) -> str:
        return (
            f"Partitioner(mesh={self.data_axis_size}x{self.num_partitions} (data x model), "
            f"fsdp={self.fsdp})"
        )

    # -- contexts ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The mesh and logical rules that `nn.with_logical_constraint` reads while tracing."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.logical_axis_rules):
            yield

    # -- logical -> mesh --------------------------------------------------------------------
    def mesh_spec(self, logical_spec: PartitionSpec | Sequence[str | None] | None) -> PartitionSpec:
        """The mesh PartitionSpec for one array's logical axis names (None = replicated)."""
        if logical_spec is None:
            return PartitionSpec()
        return nn.logical_to_mesh_axes(tuple(logical_spec), self.logical_axis_rules)

    def sharding(self, logical_spec) -> NamedSharding:
        return NamedSharding(self.mesh, self.mesh_spec(logical_spec))

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def logical_specs(self, boxed_params: Any) -> Any:
        """Logical PartitionSpecs of a tree of `nn.Partitioned` params (plain leaves: None)."""
        return nn.get_partition_spec(boxed_params)

    def param_shardings(self, logical_specs: Any) -> Any:
        """NamedShardings for a tree of logical PartitionSpecs (as `logical_specs` returns)."""
        return jax.tree_util.tree_map(
            self.sharding, logical_specs, is_leaf=lambda x: x is None or isinstance(x, PartitionSpec)
        )

    def optimizer_state_shardings(
        self, optimizer: optax.GradientTransformation, abstract_opt_state: Any,
        abstract_params: Any, param_shardings: Any,
    ) -> Any:
        """Shards optimiser slots like their parameter; factored or scalar statistics replicated.

        A slot with exactly its parameter's shape (Adafactor's unfactored `v`, Adam moments)
        follows the parameter; Adafactor's row/column statistics (a reduced shape) and counters
        are small and replicated, as in T5X.
        """

        def for_slot(slot, param, sharding):
            if getattr(slot, "shape", None) == tuple(param.shape):
                return sharding
            return self.replicated

        return optax.tree_map_params(
            optimizer,
            for_slot,
            abstract_opt_state,
            abstract_params,
            param_shardings,
            transform_non_params=lambda _: self.replicated,
        )

    # -- data ---------------------------------------------------------------------------------
    def batch_sharding(self, rank: int = 2) -> NamedSharding:
        """Batch rows split over 'data', the other dims replicated."""
        return NamedSharding(self.mesh, PartitionSpec(DATA_AXIS, *([None] * (rank - 1))))

    def data_layout(self, global_batch_size: int) -> DataLayout:
        """This process's shard of the global batch, read off the batch sharding.

        Processes whose devices hold the same batch rows (when the model axis spans processes)
        get the same shard id, so they load the same examples.
        """
        if global_batch_size % self.data_axis_size:
            raise ValueError(
                f"batch size {global_batch_size} is not divisible by the data axis size "
                f"{self.data_axis_size}"
            )
        index_map = self.batch_sharding(1).addressable_devices_indices_map((global_batch_size,))
        blocks = sorted(
            {(s.start or 0, global_batch_size if s.stop is None else s.stop)
             for (s,) in index_map.values()}
        )
        lo, hi = blocks[0][0], blocks[-1][1]
        covered = sum(stop - start for start, stop in blocks)
        rows = hi - lo
        if covered != rows or global_batch_size % rows or lo % rows:
            raise ValueError(
                f"this process's batch rows {blocks} are not one aligned contiguous block; "
                "order the mesh devices so that each process holds whole data-axis slices"
            )
        return DataLayout(global_batch_size, lo // rows, global_batch_size // rows)

    def jit(
        self,
        fn: Callable,
        *,
        in_shardings: Any,
        out_shardings: Any,
        donate_argnums: int | tuple[int, ...] = (),
        static_argnums: int | tuple[int, ...] = (),
    ) -> "PartitionedFunction":
        """`jax.jit` with shardings, traced under this mesh and these logical rules."""
        jitted = jax.jit(
            fn,
            in_shardings=in_shardings,
            out_shardings=out_shardings,
            donate_argnums=donate_argnums,
            static_argnums=static_argnums,
        )
        return PartitionedFunction(jitted, self)


@dataclasses.dataclass
class PartitionedFunction:
    """A jitted function whose tracing (first call, `lower`) happens inside the mesh context."""

    jitted: Any
    partitioner: Partitioner

    def __call__(self, *args):
        with self.partitioner.context():
            return self.jitted(*args)

    def lower(self, *args):
        with self.partitioner.context():
            return self.jitted.lower(*args)


def mesh_shape_from_string(text: str) -> tuple[int, int]:
    """'8x1' -> (8, 1): data x model, as the command-line tools spell a mesh."""
    try:
        data, model = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"mesh must look like DATAxMODEL, e.g. 4x2; got {text!r}") from None
    if data < 1 or model < 1:
        raise ValueError(f"mesh axes must be positive, got {text!r}")
    return data, model


def array_bytes(tree: Any) -> int:
    """Total bytes of the arrays (or ShapeDtypeStructs) in a tree."""
    return sum(
        math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
        for leaf in jax.tree_util.tree_leaves(tree)
        if hasattr(leaf, "shape")
    )
