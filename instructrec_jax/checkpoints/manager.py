"""Training checkpoints with Orbax: periodic async saves, keep-N, automatic resume, initial weights.

Layout: `MODEL_DIR/checkpoints/<step>/` holding four Orbax items saved together with
`ocp.args.Composite`: `params` and `opt_state` (array trees), `data` (the data-iterator position,
JSON) and `metadata` (step, gin config text, mesh; JSON). Orbax writes a step into a temporary
folder and marks it complete (`commit_success.txt`) before it becomes visible; a step folder
without that mark — left by a crash or a half-finished copy — is set aside and never restored.

Restoring reads each array straight into the shardings of the abstract state it is given, so a
checkpoint saved on one mesh restores onto another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Mapping, Sequence

import gin
import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

ITEMS = ("params", "opt_state", "data", "metadata")
COMMIT_MARK = "commit_success.txt"
CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint path that cannot be read as asked; the message names the path and the problem."""


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save, how many to keep, and where initial weights come from (T5X semantics)."""

    period: int = 1000  # save every `period` steps (SAVE_PERIOD), plus the final step
    keep: int | None = None  # newest checkpoints kept (KEEP_CHECKPOINTS); None keeps all
    async_save: bool = True
    # Orbax checkpoint (MODEL_DIR, checkpoints dir or step dir), HF Flan-T5 dir or T5X dir. Used
    # only when MODEL_DIR has no checkpoint yet (a restart resumes from MODEL_DIR instead).
    initial_checkpoint_path: str | None = None
    # T5X keeps the initial checkpoint's step: TRAIN_STEPS is absolute and counts it.
    reset_initial_step: bool = False
    # T5X's RestoreCheckpointConfig.strict: with False, parameters of the model that the initial
    # checkpoint lacks (e.g. a new T5Config.pointer_generator head on Flan-T5 weights) start from
    # their random initialisation, and the log names them. Unexpected or differently shaped
    # parameters are refused either way.
    initial_checkpoint_strict: bool = True


def is_complete_step_dir(path: epath.Path) -> bool:
    """True for a finished Orbax step folder (commit mark, or a committed metadata timestamp)."""
    if not path.is_dir() or not path.name.isdigit():
        return False
    if (path / COMMIT_MARK).exists():
        return True
    meta = path / CHECKPOINT_METADATA
    if meta.exists():
        try:
            return json.loads(meta.read_text()).get("commit_timestamp_nsecs") is not None
        except (ValueError, OSError):
            return False
    return False


def complete_steps(directory: str | epath.Path) -> list[int]:
    """Steps of the complete checkpoints in a checkpoints folder, ascending."""
    directory = epath.Path(directory)
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if is_complete_step_dir(p))


def set_aside_incomplete_steps(directory: epath.Path) -> list[str]:
    """Renames step folders that were never completed out of Orbax's way; returns the new names."""
    moved = []
    if not directory.exists():
        return moved
    for path in directory.iterdir():
        if path.is_dir() and path.name.isdigit() and not is_complete_step_dir(path):
            target = directory / f"{path.name}.incomplete-{int(time.time())}"
            path.rename(target)
            log.warning("checkpoint %s was never completed; moved aside to %s", path, target.name)
            moved.append(target.name)
    return moved


class TrainCheckpointer:
    """Saves and restores train state + data position + config in MODEL_DIR/checkpoints."""

    def __init__(self, model_dir: str, *, keep: int | None = None, async_save: bool = True):
        self.directory = epath.Path(model_dir) / "checkpoints"
        if jax.process_index() == 0:
            self.set_aside = set_aside_incomplete_steps(self.directory)
        else:
            self.set_aside = []
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            # Every process lists the steps only after process 0 moved the leftovers away.
            multihost_utils.sync_global_devices("instructrec_checkpoints_set_aside")
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                create=True,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            ),
            item_names=ITEMS,
        )
        self.last_saved_step: int | None = self.latest_step()

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        steps = complete_steps(self.directory)
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, data_state: dict, metadata: dict) -> None:
        """Starts saving `state` (a TrainState) at `step`; returns once the arrays are copied."""
        if step == self.last_saved_step:
            return
        self._manager.wait_until_finished()
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            data=ocp.args.JsonSave(data_state),
            metadata=ocp.args.JsonSave({**metadata, "step": int(step)}),
        )
        self._manager.save(step, args=args, force=True)
        self.last_saved_step = step

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        """(TrainState, data state, metadata) of `step`, arrays placed as `abstract_state` says."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract_state.params),
                opt_state=ocp.args.StandardRestore(abstract_state.opt_state),
                data=ocp.args.JsonRestore(),
                metadata=ocp.args.JsonRestore(),
            ),
        )
        state = abstract_state.replace(
            step=jax.device_put(
                jax.numpy.asarray(restored["metadata"]["step"], jax.numpy.int32),
                abstract_state.step.sharding,
            ),
            params=restored["params"],
            opt_state=restored["opt_state"],
        )
        return state, dict(restored["data"]), dict(restored["metadata"])

    def wait_until_finished(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


# -- reading weights from elsewhere ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """Parameters read from a checkpoint of any supported kind, with where they came from."""

    params: Any
    step: int
    kind: str  # 'orbax', 'hf', 't5x'
    path: str
    # parameters of the model the checkpoint lacks (left out of `params`; only with strict=False)
    missing: tuple[str, ...] = ()


def find_orbax_step_dir(path: str | epath.Path) -> epath.Path | None:
    """The step folder meant by `path`: a step folder, a checkpoints folder, or a MODEL_DIR."""
    path = epath.Path(path)
    if is_complete_step_dir(path) and (path / "params").exists():
        return path
    for directory in (path, path / "checkpoints"):
        steps = complete_steps(directory)
        if steps and (directory / str(steps[-1]) / "params").exists():
            return directory / str(steps[-1])
    return None


def checkpoint_kind(path: str | epath.Path) -> str:
    """'orbax', 'hf' or 't5x' for a path, or a CheckpointError saying what was looked for."""
    path = epath.Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint path does not exist: {path}")
    if find_orbax_step_dir(path) is not None:
        return "orbax"
    if (path / "config.json").exists() and (
        (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists()
    ):
        return "hf"
    if (path / "checkpoint").exists():
        return "t5x"
    raise CheckpointError(
        f"{path}: not a checkpoint this project reads. Expected one of: an Orbax step folder or a "
        "MODEL_DIR/checkpoints folder with a complete step; a Hugging Face folder with config.json "
        "and model.safetensors (or model.safetensors.index.json); a T5X checkpoint folder with its "
        "msgpack `checkpoint` file"
    )


def load_weights(path: str | epath.Path, abstract_params: Any, *, strict: bool = True) -> LoadedWeights:
    """Reads parameters from an Orbax, HF or T5X checkpoint into `abstract_params`' shapes/shardings.

    `abstract_params` is a tree of `jax.ShapeDtypeStruct` (with shardings) in our parameter layout;
    the result has the same structure, dtypes and shardings, or a CheckpointError lists what differs.
    With `strict=False` the model's parameters that the checkpoint lacks are not an error: they are
    left out of the returned tree and named in `missing`, for the caller to initialise.
    """
    kind = checkpoint_kind(path)
    expected = flat_shapes(abstract_params)
    if kind == "orbax":
        step_dir = find_orbax_step_dir(path)
        checkpointer = ocp.StandardCheckpointer()
        # Orbax's own mismatch error prints whole subtrees; ours lists the differing names.
        stored = checkpointer.metadata(step_dir / "params")
        found = flat_shapes(getattr(stored, "item_metadata", stored))
        check_param_shapes(found, expected, source=str(step_dir), allow_missing=not strict)
        params = checkpointer.restore(step_dir / "params", _present(abstract_params, found))
        metadata = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / "metadata")
        return LoadedWeights(params, int(metadata.get("step", int(step_dir.name))), kind,
                             str(step_dir), tuple(sorted(set(expected) - set(found))))
    if kind == "hf":
        from instructrec_jax.checkpoints import hf

        _, host_params = hf.load_hf_checkpoint(str(path))
        step = 0
    else:
        from instructrec_jax.checkpoints import t5x_legacy

        loaded = t5x_legacy.load_t5x_checkpoint(str(path))
        host_params, step = loaded.params, loaded.step
    if isinstance(host_params, dict) and set(host_params) == {"params"}:
        host_params = host_params["params"]
    found = flat_shapes(host_params)
    check_param_shapes(found, expected, source=str(path), allow_missing=not strict)
    params = place_params(host_params, _present(abstract_params, found), source=str(path))
    return LoadedWeights(params, step, kind, str(path), tuple(sorted(set(expected) - set(found))))


def _present(abstract_params: Any, found: Mapping[str, Any]) -> Any:
    """`abstract_params` itself when the checkpoint has all of it, else the part it has."""
    flat = traverse_util.flatten_dict(abstract_params, sep="/")
    if set(flat) <= set(found):
        return abstract_params
    return traverse_util.unflatten_dict({tuple(name.split("/")): leaf for name, leaf in flat.items()
                                         if name in found})


def merge_params(base: Any, override: Any) -> Any:
    """`base` with each leaf that `override` (a part of the same tree) also has taken from it."""
    replacements = dict(named_leaves(override))
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: replacements.get(path_name(path), leaf), base)


def place_params(host_params: Any, abstract_params: Any, *, source: str) -> Any:
    """Checks host arrays against the expected tree and puts each one into its sharding."""
    if isinstance(host_params, dict) and set(host_params) == {"params"}:
        host_params = host_params["params"]
    check_param_shapes(flat_shapes(host_params), flat_shapes(abstract_params), source=source)
    host_by_key = dict(named_leaves(host_params))

    def put(key_path, target):
        key = path_name(key_path)
        value = jax.numpy.asarray(host_by_key[key], dtype=target.dtype)
        sharding = getattr(target, "sharding", None)
        return jax.device_put(value, sharding) if sharding is not None else value

    return jax.tree_util.tree_map_with_path(put, abstract_params)


def check_param_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], *,
                       source: str, allow_missing: bool = False) -> None:
    """Raises a CheckpointError listing the missing, unexpected and differently shaped parameters
    of a checkpoint (`found`) against the model (`expected`), both as `flat_shapes` gives them.
    `allow_missing` accepts a checkpoint that lacks some of the model's parameters."""
    missing = [] if allow_missing else sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or extra or wrong:
        lines = [f"{source}: parameters do not match the model"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing[:10])}")
        if extra:
            lines.append(f"  unexpected ({len(extra)}): {', '.join(extra[:10])}")
        for key in wrong[:10]:
            lines.append(f"  {key}: checkpoint shape {found[key]}, model shape {expected[key]}")
        if missing and not extra and not wrong:
            lines.append("  (as an initial checkpoint, `CheckpointConfig.initial_checkpoint_strict = "
                         "False` starts the missing ones from their random initialisation)")
        lines.append("  (check the model gin file, NUM_EMBEDDINGS and T5Config flags such as "
                     "pointer_generator against the config.gin of the run that wrote it)")
        raise CheckpointError("\n".join(lines))


def flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """'encoder/layers_0/mlp/wo/kernel' -> shape, for every leaf of a tree."""
    return {key: tuple(getattr(leaf, "shape", ())) for key, leaf in named_leaves(tree)}


def named_leaves(tree: Any) -> list[tuple[str, Any]]:
    """(slash-joined path, leaf) for every leaf of a tree, in tree order."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(path_name(path), leaf) for path, leaf in leaves]


def path_name(path) -> str:
    """A jax key path as 'encoder/layers_0/mlp/wo/kernel'."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return "/".join(parts)


def load_params_for_inference(checkpoint_path: str, model: Any, partitioner: Any = None) -> Any:
    """Parameters of `model` from an Orbax, HF or T5X checkpoint, for eval and inference.

    With a partitioner the arrays are placed in its shardings (the model's logical axes through
    its rules); without one they live on the default device.
    """
    abstract = abstract_params_for(model, partitioner)
    return load_weights(checkpoint_path, abstract).params


def load_ensemble_params(checkpoint_paths: Sequence[str], model: Any, partitioner: Any = None, *,
                         start: int = 0) -> list:
    """Parameters of `model` from each checkpoint of an ensemble (`load_params_for_inference`); a
    member that cannot be loaded is named in the error by its place in the list (counted from
    `start`, for a list whose first members were loaded elsewhere) and its path."""
    if not checkpoint_paths:
        raise ValueError("an ensemble needs at least one checkpoint")
    members = []
    for index, path in enumerate(checkpoint_paths, start):
        try:
            members.append(load_params_for_inference(path, model, partitioner))
        except (ValueError, KeyError, FileNotFoundError, OSError) as error:
            raise ValueError(f"checkpoint {index} of the ensemble ({path}): {error}") from error
    return members


def abstract_params_for(model: Any, partitioner: Any = None, input_shapes: dict | None = None) -> Any:
    """ShapeDtypeStructs (with shardings when a partitioner is given) of the model's parameters."""
    import flax.linen as nn

    shapes = input_shapes or {"encoder_input_tokens": (1, 8), "decoder_input_tokens": (1, 8)}
    boxed = jax.eval_shape(lambda: model.init_params(jax.random.PRNGKey(0), shapes))
    unboxed = nn.unbox(boxed)
    if partitioner is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, unboxed)
    else:
        shardings = partitioner.param_shardings(partitioner.logical_specs(boxed))
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        unboxed, shardings,
    )


def sharded_abstract(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s leaves carrying `shardings` (for restoring onto a mesh)."""
    return jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        tree, shardings,
    )


