"""Training checkpoints: complete steps only, set-aside of crash leftovers, save/restore of state, data
position and config together, keep-N, and reading weights from the supported checkpoint kinds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from instructrec_jax import optimizers, train_state
from instructrec_jax.checkpoints import manager


def _state(value: float, step: int = 0):
    params = {"dense": {"kernel": jnp.full((4, 3), value)}, "scale": jnp.arange(3.0) + value}
    return train_state.init_train_state(params, optimizers.adafactor(), step=step)


def _abstract(state):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return manager.sharded_abstract(state, jax.tree_util.tree_map(lambda _: device, state))


def _save(model_dir, steps, keep=None):
    checkpointer = manager.TrainCheckpointer(str(model_dir), keep=keep)
    for step in steps:
        checkpointer.save(step, _state(float(step), step), {"batches_consumed": step, "seed": 3},
                          {"gin_config": "TRAIN_STEPS = 9"})
    checkpointer.wait_until_finished()
    checkpointer.close()


def test_state_data_position_and_config_are_saved_and_restored_together(tmp_path):
    _save(tmp_path, [5])
    checkpointer = manager.TrainCheckpointer(str(tmp_path))
    state, data, metadata = checkpointer.restore(5, _abstract(_state(0.0)))
    checkpointer.close()
    assert int(state.step) == 5
    np.testing.assert_array_equal(state.params["dense"]["kernel"], np.full((4, 3), 5.0))
    assert data == {"batches_consumed": 5, "seed": 3}
    assert metadata["gin_config"] == "TRAIN_STEPS = 9" and metadata["step"] == 5
    assert jax.tree_util.tree_structure(state.opt_state) == \
        jax.tree_util.tree_structure(_state(0.0).opt_state)


def test_only_complete_steps_count_and_leftovers_are_set_aside(tmp_path):
    _save(tmp_path, [2, 4])
    directory = tmp_path / "checkpoints"
    (directory / "6" / "params").mkdir(parents=True)  # a step folder without the commit mark
    (directory / "8.orbax-checkpoint-tmp-99" / "params").mkdir(parents=True)  # orbax's temp folder
    assert manager.complete_steps(directory) == [2, 4]
    checkpointer = manager.TrainCheckpointer(str(tmp_path))
    assert checkpointer.latest_step() == 4
    assert len(checkpointer.set_aside) == 1 and checkpointer.set_aside[0].startswith("6.incomplete-")
    # Saving step 6 again now works: the leftover no longer blocks the name.
    checkpointer.save(6, _state(6.0, 6), {"batches_consumed": 6}, {})
    checkpointer.wait_until_finished()
    assert checkpointer.latest_step() == 6
    checkpointer.close()


def test_keep_n_deletes_the_oldest_checkpoints(tmp_path):
    _save(tmp_path, [1, 2, 3, 4], keep=2)
    assert manager.complete_steps(tmp_path / "checkpoints") == [3, 4]


def test_saving_the_same_step_twice_is_a_no_op(tmp_path):
    checkpointer = manager.TrainCheckpointer(str(tmp_path))
    checkpointer.save(3, _state(3.0, 3), {}, {})
    checkpointer.save(3, _state(99.0, 3), {}, {})  # e.g. the final save right after a periodic one
    checkpointer.wait_until_finished()
    state, _, _ = checkpointer.restore(3, _abstract(_state(0.0)))
    checkpointer.close()
    assert float(state.params["scale"][0]) == 3.0


def test_orbax_checkpoint_is_found_from_model_dir_checkpoints_dir_or_step_dir(tmp_path):
    _save(tmp_path, [2, 7])
    for path in (tmp_path, tmp_path / "checkpoints", tmp_path / "checkpoints" / "7"):
        assert manager.checkpoint_kind(path) == "orbax"
        assert manager.find_orbax_step_dir(path).name == "7"
    abstract_params = _abstract(_state(0.0)).params
    loaded = manager.load_weights(tmp_path, abstract_params)
    assert loaded.step == 7 and loaded.kind == "orbax"
    np.testing.assert_array_equal(loaded.params["scale"], np.arange(3.0) + 7.0)


def test_orbax_params_that_do_not_fit_the_model_are_listed_before_reading(tmp_path):
    """A model with a parameter the checkpoint lacks (e.g. T5Config.pointer_generator switched on),
    one without a parameter it holds, or a different shape: each named, not Orbax's tree dump."""
    _save(tmp_path, [3])
    abstract = dict(_abstract(_state(0.0)).params)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract["pointer"] = {"gate": {"kernel": jax.ShapeDtypeStruct((4, 1), jnp.float32, sharding=device)}}
    with pytest.raises(manager.CheckpointError) as error:
        manager.load_weights(tmp_path, abstract)
    assert "missing (1): pointer/gate/kernel" in str(error.value) and "pointer_generator" in str(error.value)
    del abstract["pointer"], abstract["scale"]
    abstract["dense"] = {"kernel": jax.ShapeDtypeStruct((3, 4), jnp.float32, sharding=device)}
    with pytest.raises(manager.CheckpointError) as error:
        manager.load_weights(tmp_path, abstract)
    message = str(error.value)
    assert "unexpected (1): scale" in message
    assert "dense/kernel: checkpoint shape (4, 3), model shape (3, 4)" in message


def test_non_strict_load_leaves_the_parameters_a_checkpoint_lacks_to_the_caller(tmp_path):
    """T5X's `strict=False`: a new head on old weights is read, the head named as missing."""
    _save(tmp_path, [3])
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = dict(_abstract(_state(0.0)).params)
    abstract["pointer"] = {"gate": {"kernel": jax.ShapeDtypeStruct((4, 1), jnp.float32, sharding=device)},
                           "key": {"kernel": jax.ShapeDtypeStruct((4, 2), jnp.float32, sharding=device)}}
    with pytest.raises(manager.CheckpointError, match="initial_checkpoint_strict = False"):
        manager.load_weights(tmp_path, abstract)
    loaded = manager.load_weights(tmp_path, abstract, strict=False)
    assert loaded.missing == ("pointer/gate/kernel", "pointer/key/kernel")
    assert set(loaded.params) == {"dense", "scale"}
    np.testing.assert_array_equal(loaded.params["dense"]["kernel"], np.full((4, 3), 3.0))
    # merged over a fresh tree: the checkpoint's leaves win, the missing ones keep the fresh values
    fresh = jax.tree_util.tree_map(lambda x: jnp.full(x.shape, -1.0), abstract)
    merged = manager.merge_params(fresh, loaded.params)
    assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(fresh)
    np.testing.assert_array_equal(merged["scale"], np.arange(3.0) + 3.0)
    np.testing.assert_array_equal(merged["pointer"]["key"]["kernel"], np.full((4, 2), -1.0))
    # a full checkpoint loads as before, nothing missing
    assert manager.load_weights(tmp_path, _abstract(_state(0.0)).params, strict=False).missing == ()
    # unexpected or reshaped parameters stay errors without strictness
    del abstract["scale"]
    with pytest.raises(manager.CheckpointError, match=r"unexpected \(1\): scale"):
        manager.load_weights(tmp_path, abstract, strict=False)


def test_non_strict_host_load_places_only_what_the_checkpoint_has(tmp_path):
    from instructrec_jax.checkpoints import hf
    from instructrec_jax.model.config import T5Config
    from instructrec_jax.model.t5 import random_params

    config = T5Config(vocab_size=40, d_model=16, d_ff=24, num_heads=2, d_kv=8, num_encoder_layers=1,
                      num_decoder_layers=1, dtype="float32")
    plain = random_params(config, seed=1)
    hf.save_hf_checkpoint(config, plain, tmp_path / "hf")
    pointer = config.replace(pointer_generator=True)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                      random_params(pointer, seed=2))
    with pytest.raises(manager.CheckpointError, match=r"missing \(3\): pointer/gate/kernel"):
        manager.load_weights(tmp_path / "hf", abstract)
    loaded = manager.load_weights(tmp_path / "hf", abstract, strict=False)
    assert loaded.kind == "hf" and loaded.missing == tuple(
        f"pointer/{name}/kernel" for name in ("gate", "key", "query"))
    got, want = dict(manager.named_leaves(loaded.params)), dict(manager.named_leaves(plain))
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)


def test_unrecognised_checkpoint_path_says_what_was_expected(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(manager.CheckpointError, match="config.json.*model.safetensors.*T5X"):
        manager.checkpoint_kind(tmp_path)
    with pytest.raises(manager.CheckpointError, match="does not exist"):
        manager.checkpoint_kind(tmp_path / "missing")


def test_params_that_do_not_fit_the_model_are_listed(tmp_path):
    abstract = {"a": jax.ShapeDtypeStruct((2, 3), jnp.float32), "b": jax.ShapeDtypeStruct((4,), jnp.float32)}
    host = {"a": np.zeros((3, 2), np.float32), "c": np.zeros((1,), np.float32)}
    with pytest.raises(manager.CheckpointError) as error:
        manager.place_params(host, abstract, source="ckpt")
    message = str(error.value)
    assert "missing (1): b" in message and "unexpected (1): c" in message
    assert "a: checkpoint shape (3, 2), model shape (2, 3)" in message


def test_matching_host_params_are_cast_and_placed(tmp_path):
    abstract = {"a": jax.ShapeDtypeStruct((2,), jnp.float32)}
    placed = manager.place_params({"params": {"a": np.array([1, 2], np.float64)}}, abstract, source="x")
    assert placed["a"].dtype == jnp.float32 and placed["a"].tolist() == [1.0, 2.0]
