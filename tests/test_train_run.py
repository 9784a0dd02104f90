"""The training command end to end on one device: outputs, logs, errors, NaN stop, initial weights.

All scenarios run once, in one fresh process (`train_worker.py single`), through the documented
command line (`instructrec_jax.train.main`) with the test model gin file and a synthetic task.
"""

from __future__ import annotations

import re

import pytest

import train_fixtures as fx
from instructrec_jax.model.config import T5Config, num_params


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return fx.run_worker("single", tmp_path_factory.mktemp("train_run"))


def ok(result: dict) -> dict:
    assert "error" not in result, result.get("traceback", result.get("error"))
    return result


def test_gin_command_line_trains_to_train_steps_and_exits_zero(single):
    run = ok(single["gin_run"])
    assert run["code"] == 0, run["stderr"]
    assert run["checkpoints"] == ["4", "8"]  # every SAVE_PERIOD steps, the last one final


def test_config_gin_is_the_operative_config_with_command_line_overrides(single):
    config = ok(single["gin_run"])["config_gin"]
    for line in ("BATCH_SIZE = 8", "TRAIN_STEPS = 8", "SAVE_PERIOD = 4",
                 f"MIXTURE_OR_TASK_NAME = '{fx.TASK}'", "TASK_FEATURE_LENGTHS = {'inputs': 24, 'targets': 8}",
                 "OPTIMIZER/optimizers.adafactor.decay_rate = 0.8"):
        assert line in config, line
    assert re.search(r"MODEL_DIR = '.*/run'", config)


def test_model_info_lists_every_parameter_with_logical_axes_and_mesh_partitioning(single):
    info = ok(single["gin_run"])["model_info"]
    lines = [line for line in info.splitlines() if line.startswith("Variable ")]
    config = T5Config(**fx.TINY_CONFIG)
    # embedding; encoder relpos + norm; decoder relpos + norm + logits; 2 layers of each stack
    assert len(lines) == 1 + 2 + 3 + 2 * (4 + 2 + 3) + 2 * (8 + 3 + 3)
    wo = next(line for line in lines if "encoder/layers_0/mlp/wo/kernel" in line)
    assert "shape (mlp=64, embed=32)" in wo and "logical ('mlp', 'embed')" in wo
    assert "partition ('model', None)" in wo and "dtype float32" in wo
    assert f"Total number of parameters: {num_params(config):,}" in info
    assert re.search(r"Optimizer state: [\d,]+ bytes", info)


def test_log_line_every_log_every_steps_with_throughput_and_eta(single):
    stdout = ok(single["gin_run"])["stdout"]
    lines = [line for line in stdout.splitlines() if re.search(r"step \d+/8 ", line)]
    assert [re.search(r"step (\d+)/8", line).group(1) for line in lines] == ["4", "8"]
    assert re.search(r"loss \d+\.\d{4}  accuracy \d\.\d{4}  lr 1\.00e-03  tokens/s [\d,]+  "
                     r"\(real [\d,]+\)  steps/s \d+\.\d{3}  ETA \d+:\d\d:\d\d", lines[0]), lines[0]


def test_tensorboard_summaries_hold_loss_accuracy_lr_and_throughput(single):
    summaries = ok(single["gin_run"])["summaries"]
    train = summaries["train"]
    for name in ("loss", "accuracy", "learning_rate", "z_loss", "tokens_per_second",
                 "steps_per_second"):
        assert [step for step, _ in train[name]] == [4, 8], name
    assert train["learning_rate"][0][1] == pytest.approx(1e-3)
    assert train["loss"][1][1] < train["loss"][0][1]
    assert [step for step, _ in summaries["training_eval"]["loss"]] == [8]


def test_unknown_task_fails_listing_the_registered_tasks(single):
    result = ok(single["unknown_task"])
    assert result["code"] == 1
    assert "MIXTURE_OR_TASK_NAME='no_such_task' is not a registered SeqIO task" in result["stderr"]
    assert fx.TASK in result["stderr"]
    assert "Traceback" not in result["stderr"]


def test_vocabulary_larger_than_num_embeddings_fails_with_the_fix(single):
    result = ok(single["vocabulary_too_large"])
    assert result["code"] == 1
    assert "has 259 ids but the model embeds only 128" in result["stderr"]
    assert "--gin.NUM_EMBEDDINGS=384" in result["stderr"]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(single):
    result = ok(single["nan"])
    assert result["message"] is not None, "the run did not stop"
    assert "the training loss is nan at step 6" in result["message"]
    assert "last good checkpoint (step 4)" in result["message"]
    assert result["kept_step"] == 4 and result["kept_params_finite"]


def test_incomplete_checkpoint_is_ignored_and_moved_aside(single):
    result = ok(single["incomplete"])
    assert result["latest_before"] == 8  # not the fabricated 12, not the orbax tmp 16
    assert result["code"] == 0, result["stderr"]
    assert "resumed from" in result["stdout"] and "/8 (data position 8)" in result["stdout"]
    assert result["final_step"] == 12
    assert any(name.startswith("12.incomplete-") for name in result["entries_after"])
    assert not any(name.startswith("16") for name in result["entries_after"])  # tmp cleaned


def test_initial_checkpoint_from_an_hf_dir_continues_from_its_exact_weights(single):
    result = ok(single["hf_initial"])
    assert result["code"] == 0, result["stderr"]
    assert "initial weights from hf checkpoint" in result["stdout"]
    assert result["step"] == 2  # HF dirs carry no step: 0 + TRAIN_STEPS
    assert result["identical"]  # learning rate 0: the saved parameters are the HF weights
    # The configured param_initializers were skipped, and the log says so.
    assert result["initializer_calls"] == 0
    assert "param_initializers are not applied" in result["stdout"] + result["stderr"]


def test_initial_checkpoint_without_a_new_head_is_refused_unless_not_strict(single):
    result = ok(single["hf_initial_new_head"])
    refused = result["refused"]
    assert refused["code"] == 1
    assert "missing (3): pointer/gate/kernel, pointer/key/kernel, pointer/query/kernel" in refused["stderr"]
    assert "initial_checkpoint_strict = False" in refused["stderr"]
    assert result["code"] == 0, result["stderr"]
    assert ("3 parameters are not in the initial checkpoint and start from their random "
            "initialisation: pointer/gate/kernel, pointer/key/kernel, pointer/query/kernel"
            in result["stdout"] + result["stderr"])
    # learning rate 0: the saved model is the HF weights plus a freshly initialised copy head
    assert result["plain_identical"]
    assert result["new"] == ["pointer/gate/kernel", "pointer/key/kernel", "pointer/query/kernel"]
    assert result["new_max_abs"]["pointer/gate/kernel"] == 0.0
    assert 0 < result["new_max_abs"]["pointer/key/kernel"] < 10
    assert 0 < result["new_max_abs"]["pointer/query/kernel"] < 10


def test_param_initializers_run_once_at_step_zero_and_not_on_resume(single):
    result = ok(single["param_init"])
    assert result["codes"] == [0, 0], result["stderr"]
    assert result["embedding_values"] == [0.125]  # learning rate 0: what the initializer set
    assert result["resumed"] and result["step"] == 4
    assert result["calls"] == 1


def test_initial_checkpoint_from_a_t5x_dir_keeps_its_step_as_t5x_does(single):
    result = ok(single["t5x_initial"])
    assert result["code"] == 0, result["stderr"]
    assert "initial weights from t5x checkpoint" in result["stdout"]
    assert "from step 1000 to 1002" in result["stdout"]  # TRAIN_STEPS is absolute
    assert result["step"] == 1002 and result["checkpoints"] == ["1002"]
    assert result["identical"]


def test_microbatched_step_of_the_real_model_matches_one_batch(single):
    result = ok(single["microbatches"])
    assert result["loss"][1] == pytest.approx(result["loss"][0], rel=1e-5)
    assert result["accuracy"][1] == pytest.approx(result["accuracy"][0], rel=1e-5)
    assert result["worst_grad_rel_diff"] < 1e-4
