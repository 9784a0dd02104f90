"""Mesh partitioning: T5X's logical-axis rules, equal training on 1, 4x2 and 2x4 devices, real shardings,
optimiser-state placement, and restoring a checkpoint onto another mesh.

The multi-device scenarios run once in a fresh process with 8 host devices (`train_worker.py mesh`).
"""

from __future__ import annotations

import re

import flax.linen as nn
import numpy as np
import pytest

import train_fixtures as fx
from instructrec_jax import partitioning

RULES_1D = partitioning.standard_logical_axis_rules()
RULES_2D = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)


def mesh_axes(logical, rules):
    return tuple(nn.logical_to_mesh_axes(logical, rules))


def test_1d_rules_put_vocab_mlp_heads_joined_kv_on_model_and_batch_on_data():
    assert mesh_axes(("vocab", "embed"), RULES_1D) == ("model", None)
    assert mesh_axes(("embed", "mlp"), RULES_1D) == (None, "model")
    assert mesh_axes(("embed", "joined_kv"), RULES_1D) == (None, "model")
    assert mesh_axes(("heads", "relpos_buckets"), RULES_1D) == ("model", None)
    assert mesh_axes(("batch", "length", "embed"), RULES_1D) == ("data", None, None)
    assert mesh_axes(("embed",), RULES_1D) == (None,)


def test_2d_rules_also_split_parameter_embed_over_data_but_not_activation_embed():
    assert mesh_axes(("embed", "mlp"), RULES_2D) == ("data", "model")
    assert mesh_axes(("vocab", "embed"), RULES_2D) == ("model", "data")
    assert mesh_axes(("batch", "length", "embed"), RULES_2D) == ("data", None, None)


def test_mesh_strings_read_as_data_by_model():
    assert partitioning.mesh_shape_from_string("4x2") == (4, 2)
    with pytest.raises(ValueError, match="DATAxMODEL"):
        partitioning.mesh_shape_from_string("4-2")


def test_one_device_partitioner_loads_the_whole_batch_on_the_one_process():
    layout = partitioning.Partitioner().data_layout(16)
    assert (layout.shard_id, layout.num_shards, layout.local_batch_size) == (0, 1, 16)


def test_more_partitions_than_devices_is_a_clear_error():
    with pytest.raises(ValueError, match="does not divide"):
        partitioning.Partitioner(3 if len(__import__("jax").devices()) % 3 else 5)


# -- 8 simulated devices ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    return fx.run_worker("mesh", tmp_path_factory.mktemp("mesh"), devices=8)


@pytest.mark.parametrize("name", ["4x2", "2x4"])
def test_meshes_train_to_the_same_losses_as_one_device(mesh, name):
    reference = np.asarray(mesh["1x1"]["losses"])
    losses = np.asarray(mesh[name]["losses"])
    assert len(losses) == len(reference) == 20
    assert reference[-1] < reference[0]  # it trains
    np.testing.assert_allclose(losses, reference, rtol=1e-5)


def _model_info_partitions(text: str) -> dict[str, list]:
    found = {}
    for line in text.splitlines():
        match = re.match(r"Variable (\S+) .* partition \((.*)\)$", line)
        if match:
            found[match.group(1)] = [None if a.strip() == "None" else a.strip().strip("'")
                                     for a in match.group(2).split(",") if a.strip()]
    return found


@pytest.mark.parametrize("name", ["4x2", "2x4"])
def test_parameters_are_sharded_as_model_info_says(mesh, name):
    declared = _model_info_partitions(mesh[name]["model_info"])
    actual = mesh[name]["param_specs"]
    assert set(declared) == set(actual) and len(actual) == 52
    for param, spec in actual.items():
        # A trailing unsharded dim may be omitted from an array's spec.
        assert spec + [None] * (len(declared[param]) - len(spec)) == declared[param], param


def test_model_parallel_mesh_shards_mlp_vocab_and_joined_kv_on_model(mesh):
    specs = mesh["4x2"]["param_specs"]
    assert specs["encoder/layers_0/mlp/wi_0/kernel"] == [None, "model"]
    assert specs["encoder/layers_1/mlp/wo/kernel"][0] == "model"
    assert specs["token_embedder/embedding"][0] == "model"
    assert specs["decoder/logits_dense/kernel"] == [None, "model"]
    assert specs["decoder/layers_0/self_attention/query/kernel"] == [None, "model"]
    assert specs["encoder/relpos_bias/rel_embedding"][0] == "model"


def test_fsdp_mesh_also_shards_parameter_embed_over_data(mesh):
    specs = mesh["fsdp_param_specs"]
    assert specs["encoder/layers_0/mlp/wi_0/kernel"] == ["data", "model"]
    assert specs["token_embedder/embedding"] == ["model", "data"]


def test_unfactored_second_moments_are_sharded_like_their_parameter(mesh):
    specs = mesh["4x2"]["opt_state_specs"]
    # The tiny model's matrices are below Adafactor's factoring size: full second moments.
    wi = [spec for name, spec in specs.items() if name.endswith("v/encoder/layers_0/mlp/wi_0/kernel")]
    assert wi == [[None, "model"]]


def test_factored_row_and_column_statistics_are_replicated(mesh):
    slots = mesh["factored_slots"]
    by_kind = {name.split("/")[-2] + "/" + name.split("/")[-1]: spec for name, spec in slots.items()
               if name.split("/")[-1] in ("wi", "bias")}
    assert by_kind["v_row/wi"] == [] and by_kind["v_col/wi"] == []  # factored: replicated
    assert by_kind["v/bias"] == ["model"]  # a vector keeps full statistics, sharded like it


def test_checkpoint_saved_on_4x2_restores_exactly_onto_2x4_and_one_device(mesh):
    for name, shape in (("2x4", {"data": 2, "model": 4}), ("1x1", {"data": 1, "model": 1})):
        restored = mesh["restored"][name]
        assert restored["equal"], name
        assert restored["mesh_shape"] == shape
        assert restored["step"] == 20 and restored["metadata_mesh"] == "4x2"
        assert restored["data_state"]["batches_consumed"] == 20
    assert mesh["restored"]["2x4"]["param_specs"]["encoder/layers_0/mlp/wi_0/kernel"] == [None, "model"]


def test_training_resumed_on_another_mesh_continues_like_the_original_mesh(mesh):
    continued = mesh["continued_on_2x4"]
    assert continued["resumed_from"] == 10
    assert [step for step, _ in continued["losses"]] == list(range(11, 21))
    np.testing.assert_allclose([loss for _, loss in continued["losses"]], mesh["4x2"]["losses"][10:],
                               rtol=1e-5)
