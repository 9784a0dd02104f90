"""Training batches from a SeqIO task or mixture: per-process shard, packed, resumable, global arrays.

The pipeline is T5X's: `get_mixture_or_task(name).get_dataset(lengths, split, shuffle, seed,
shard_info, num_epochs=None)` → `seqio.EncDecFeatureConverter(pack=…)` (or its first-fit
packing variant, `packer='first_fit'`, instructrec_jax/packing.py) → batches of
`global_batch_size // num_shards` rows on each process → one global `jax.Array` per feature via
`jax.make_array_from_process_local_data`, split over the mesh's 'data' axis.

The order of batches is a pure function of the seed and the shard, so the position in the stream
(batches consumed) is all a checkpoint needs: a restarted run rebuilds the stream and skips that
many batches, and continues bitwise where it stopped.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Iterator, Mapping

import gin
import jax
import numpy as np
import seqio
import tensorflow as tf

from instructrec_jax.packing import FirstFitEncDecFeatureConverter
from instructrec_jax.partitioning import DataLayout, Partitioner


class UnknownTaskError(KeyError):
    """A mixture or task name that SeqIO does not know; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class VocabularyMismatchError(ValueError):
    """A task vocabulary that does not fit the model's embedding table."""


PACKERS = ("seqio", "first_fit")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Which SeqIO data to read and how (T5X's `DatasetConfig` fields)."""

    mixture_or_task_name: str
    task_feature_lengths: Mapping[str, int]
    split: str = "train"
    batch_size: int = 128  # global, over all processes
    shuffle: bool = True
    seed: int | None = 0
    use_cached: bool = False
    pack: bool = True
    # How rows are packed when `pack`: 'seqio' (SeqIO's own, one open row; T5X's behaviour) or
    # 'first_fit' (each example into the first row of its pool of `pack_pool_size` where it fits).
    packer: str = "seqio"
    pack_pool_size: int = 256
    module: str | None = None  # imported first, e.g. 'instructrec_jax.tasks', to register tasks

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"DatasetConfig.batch_size must be positive, got {self.batch_size}")
        if self.packer not in PACKERS:
            raise ValueError(f"DatasetConfig.packer must be one of {PACKERS}, got {self.packer!r}")
        if self.pack_pool_size < 1:
            raise ValueError(f"DatasetConfig.pack_pool_size must be positive, got {self.pack_pool_size}")
        missing = {"inputs", "targets"} - set(self.task_feature_lengths or {})
        if missing:
            raise ValueError(
                f"DatasetConfig.task_feature_lengths needs {sorted(missing)}, got "
                f"{dict(self.task_feature_lengths or {})} (e.g. {{'inputs': 512, 'targets': 64}})"
            )


def get_mixture_or_task(name: str, module: str | None = None) -> seqio.Task | seqio.Mixture:
    """The registered SeqIO task or mixture `name`, or an error listing what is registered."""
    if module:
        importlib.import_module(module)
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        tasks = sorted(seqio.TaskRegistry.names())
        mixtures = sorted(seqio.MixtureRegistry.names())
        shown = ", ".join(tasks[:60]) + (" …" if len(tasks) > 60 else "")
        raise UnknownTaskError(
            f"MIXTURE_OR_TASK_NAME={name!r} is not a registered SeqIO task or mixture.\n"
            f"Registered mixtures ({len(mixtures)}): {', '.join(mixtures) or 'none'}\n"
            f"Registered tasks ({len(tasks)}): {shown or 'none'}\n"
            "Tasks are registered by importing their module (the gin file's "
            "`import instructrec_jax.tasks`); instructrec_jax.tasks registers one set per prepared "
            "dataset in $INSTRUCTREC_DATA_DIR (run `instructrec prepare` first)."
        ) from None


def check_vocabulary(provider: seqio.Task | seqio.Mixture, num_embeddings: int) -> None:
    """Fails when a feature's vocabulary has more ids than the model's embedding table."""
    for name, feature in provider.output_features.items():
        size = feature.vocabulary.vocab_size
        if size > num_embeddings:
            raise VocabularyMismatchError(
                f"the {name!r} vocabulary of {provider.name!r} has {size} ids but the model embeds "
                f"only {num_embeddings} (NUM_EMBEDDINGS / T5Config.vocab_size); set "
                f"--gin.NUM_EMBEDDINGS={_round_up(size, 128)} or use a smaller vocabulary"
            )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def local_batches(
    cfg: DatasetConfig, layout: DataLayout, *, seed: int | None = None, num_epochs: int | None = None
) -> tf.data.Dataset:
    """This process's stream of converted batches (`layout.local_batch_size` rows each).

    Built afresh for every iterator: SeqIO's shuffles reshuffle on each pass over a dataset
    object, so reusing one would break the seed-determined order that resuming relies on.
    """
    provider = get_mixture_or_task(cfg.mixture_or_task_name, cfg.module)
    lengths = dict(cfg.task_feature_lengths)
    dataset = provider.get_dataset(
        sequence_length=lengths,
        split=cfg.split,
        use_cached=cfg.use_cached,
        shuffle=cfg.shuffle,
        seed=cfg.seed if seed is None else seed,
        shard_info=seqio.ShardInfo(index=layout.shard_id, num_shards=layout.num_shards)
        if layout.num_shards > 1 else None,
        num_epochs=num_epochs,
    )
    dataset = feature_converter(cfg)(dataset, lengths)
    dataset = dataset.batch(layout.local_batch_size, drop_remainder=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def feature_converter(cfg: DatasetConfig) -> seqio.EncDecFeatureConverter:
    """SeqIO's encoder-decoder converter, packing with `cfg.packer` when `cfg.pack`."""
    if cfg.pack and cfg.packer == "first_fit":
        return FirstFitEncDecFeatureConverter(pool_size=cfg.pack_pool_size)
    return seqio.EncDecFeatureConverter(pack=cfg.pack)


@dataclasses.dataclass
class TrainBatchIterator:
    """Global training batches with a resumable position (the number of batches consumed)."""

    cfg: DatasetConfig
    partitioner: Partitioner
    seed: int
    position: int = 0

    def __post_init__(self):
        self.layout = self.partitioner.data_layout(self.cfg.batch_size)
        dataset = local_batches(self.cfg, self.layout, seed=self.seed, num_epochs=None)
        if self.position:
            # Deterministic order: skipping what was consumed lands on the next unseen batch.
            dataset = dataset.skip(self.position)
        self._numpy = dataset.as_numpy_iterator()

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        local = next(self._numpy)
        self.position += 1
        return to_global_batch(local, self.partitioner, self.cfg.batch_size)

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores to resume this stream exactly."""
        return {
            "batches_consumed": self.position,
            "seed": self.seed,
            "mixture_or_task_name": self.cfg.mixture_or_task_name,
            "global_batch_size": self.cfg.batch_size,
            "num_shards": self.layout.num_shards,
        }


def to_global_batch(
    local: Mapping[str, np.ndarray], partitioner: Partitioner, global_batch_size: int
) -> dict[str, jax.Array]:
    """Assembles this process's rows of each feature into global arrays sharded over 'data'."""
    batch = {}
    for name, rows in local.items():
        rows = np.asarray(rows)
        sharding = partitioner.batch_sharding(rows.ndim)
        batch[name] = jax.make_array_from_process_local_data(
            sharding, rows, (global_batch_size, *rows.shape[1:])
        )
    return batch


def batch_shapes(cfg: DatasetConfig) -> dict[str, tuple[int, ...]]:
    """The global shape of each feature the converter yields (for init and ahead-of-time lowering)."""
    return encdec_batch_shapes(cfg.batch_size, cfg.task_feature_lengths["inputs"],
                               cfg.task_feature_lengths["targets"], pack=cfg.pack)


def encdec_batch_shapes(batch_size: int, inputs_length: int, targets_length: int, *, pack: bool
                        ) -> dict[str, tuple[int, ...]]:
    """Feature name -> shape of `seqio.EncDecFeatureConverter`'s output batches."""
    shapes = {
        "encoder_input_tokens": (batch_size, inputs_length),
        "decoder_input_tokens": (batch_size, targets_length),
        "decoder_target_tokens": (batch_size, targets_length),
        "decoder_loss_weights": (batch_size, targets_length),
    }
    if pack:
        shapes.update(
            encoder_segment_ids=(batch_size, inputs_length),
            encoder_positions=(batch_size, inputs_length),
            decoder_segment_ids=(batch_size, targets_length),
            decoder_positions=(batch_size, targets_length),
        )
    return shapes
