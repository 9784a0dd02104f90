"""T5X's gin command line: `--gin.X=V` shorthand, repeated files, search paths, clear errors."""

from __future__ import annotations

import gin
import pytest

from instructrec_jax import gin_flags


def test_gin_dot_shorthand_becomes_a_binding_with_the_value_verbatim():
    argv = ['--gin.MODEL_DIR="/tmp/run"', "--gin.TASK_FEATURE_LENGTHS={'inputs': 512, 'targets': 64}",
            "--gin_file=a.gin", "--other=1"]
    assert gin_flags.rewrite_gin_args(argv) == [
        '--gin_bindings=MODEL_DIR = "/tmp/run"',
        "--gin_bindings=TASK_FEATURE_LENGTHS = {'inputs': 512, 'targets': 64}",
        "--gin_file=a.gin",
        "--other=1",
    ]


def test_gin_dot_without_value_is_rejected_with_an_example():
    with pytest.raises(ValueError, match="--gin.NAME=VALUE"):
        gin_flags.rewrite_gin_args(["--gin.TRAIN_STEPS"])


def test_parse_collects_repeated_files_and_bindings_and_keeps_other_args():
    flags, rest = gin_flags.parse_gin_flags(
        ["--gin_file=a.gin", "--gin_file=b.gin", "--gin.X=1", "--gin_bindings=Y = 2",
         "--gin_search_paths=/p1,/p2", "--multiprocess_gpu"])
    assert flags.files == ("a.gin", "b.gin")
    assert flags.bindings == ("X = 1", "Y = 2")
    assert flags.search_paths[:2] == ("/p1", "/p2")
    assert str(gin_flags.CHECKOUT_ROOT) in flags.search_paths
    assert rest == ["--multiprocess_gpu"]


@gin.configurable
def _configured(value=0, name="none"):
    return value, name


def test_bindings_override_files_and_includes_resolve_on_the_search_path(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "base.gin").write_text("VALUE = 1\n_configured.name = 'base'\n")
    (tmp_path / "run.gin").write_text("include 'sub/base.gin'\n_configured.value = %VALUE\n")
    flags, _ = gin_flags.parse_gin_flags(
        ["--gin_file=run.gin", "--gin.VALUE=7", f"--gin_search_paths={tmp_path}"])
    gin.clear_config()
    try:
        gin_flags.configure_gin(flags, finalize=False)
        assert _configured() == (7, "base")
    finally:
        gin.clear_config()


def test_checkout_gin_files_resolve_from_another_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags, _ = gin_flags.parse_gin_flags(["--gin_file=gin/runs/finetune.gin"])
    resolved = gin_flags.resolve_gin_file("gin/runs/finetune.gin", flags.search_paths)
    assert resolved == str(gin_flags.CHECKOUT_ROOT / "gin/runs/finetune.gin")


def test_missing_gin_file_names_the_file_and_the_search_paths(tmp_path):
    with pytest.raises(gin_flags.GinConfigError, match=r"gin file not found: nope\.gin.*searched"):
        gin_flags.resolve_gin_file("nope.gin", [str(tmp_path)])


def test_bad_binding_is_reported_as_a_gin_error():
    flags = gin_flags.GinFlags(files=(), bindings=("_configured.no_such_arg = 1",), search_paths=())
    gin.clear_config()
    try:
        with pytest.raises(gin_flags.GinConfigError, match="no_such_arg"):
            gin_flags.configure_gin(flags, finalize=False)
    finally:
        gin.clear_config()


@pytest.mark.parametrize("bindings, named", [
    # gin itself reports only "(line 3)" of the bindings joined by newlines
    (("A = 1", "B = [1,\n 2]", "EVAL_OUTPUT_DIR = /tmp/run"), "EVAL_OUTPUT_DIR = /tmp/run"),
    (("A = 1", "B = 1 2", "C = 3"), "B = 1 2"),
])
def test_unparseable_binding_is_named(bindings, named):
    flags = gin_flags.GinFlags(files=(), bindings=bindings, search_paths=())
    gin.clear_config()
    try:
        with pytest.raises(gin_flags.GinConfigError) as raised:
            gin_flags.configure_gin(flags, finalize=False)
    finally:
        gin.clear_config()
    assert str(raised.value).splitlines()[1] == f"  in the binding: {named}"
    # an unquoted path gets the hint about quoting strings; other values do not
    assert ("needs quotes" in str(raised.value)) == ("/" in named)


def test_unparseable_file_is_named_without_blaming_a_binding(tmp_path):
    (tmp_path / "bad.gin").write_text("A = 1\nB = /tmp/x\n")
    flags = gin_flags.GinFlags(files=(str(tmp_path / "bad.gin"),), bindings=("C = 1",),
                               search_paths=())
    gin.clear_config()
    try:
        with pytest.raises(gin_flags.GinConfigError, match=r"bad\.gin, line 2") as raised:
            gin_flags.configure_gin(flags, finalize=False)
    finally:
        gin.clear_config()
    assert "in the binding" not in str(raised.value)


REQUIRED = ['--gin.MODEL_DIR="/tmp/unused"', '--gin.MIXTURE_OR_TASK_NAME="unused"',
            "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 4}", "--gin.TRAIN_STEPS=5"]


def _configure(*files):
    flags, _ = gin_flags.parse_gin_flags([f"--gin_file={f}" for f in files] + REQUIRED)
    gin.clear_config()
    gin_flags.configure_gin(flags, finalize=False)


def test_finetune_run_file_binds_t5x_defaults():
    try:
        _configure("gin/models/flan_t5_tiny.gin", "gin/runs/finetune.gin")
        assert gin.query_parameter("%BATCH_SIZE") == 128
        assert gin.query_parameter("%LEARNING_RATE") == 1e-3
        assert gin.query_parameter("%LEARNING_RATE_SCHEDULE") == "constant"
        assert gin.query_parameter("%PACK") is True
        assert gin.query_parameter("%PACKER") == "seqio"  # T5X's packing unless asked otherwise
        assert gin.query_parameter("%INITIAL_CHECKPOINT_PATH") is None
        # T5X restores strictly unless told otherwise
        assert gin.query_parameter("manager.CheckpointConfig.initial_checkpoint_strict") is True
        assert gin.query_parameter("%TRAIN_STEPS") == 5
        assert gin.query_parameter("train_eval/data_pipeline.DatasetConfig.split") == "validation"
    finally:
        gin.clear_config()


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_either_optimizer_follows_the_learning_rate_macros(optimizer):
    # AdamW once fell back to its own default rate of 1e-3 whatever LEARNING_RATE said.
    from instructrec_jax import optimizers
    try:
        flags, _ = gin_flags.parse_gin_flags(
            ["--gin_file=gin/models/flan_t5_tiny.gin", "--gin_file=gin/runs/finetune.gin"]
            + REQUIRED + [f"--gin.OPTIMIZER=@optimizers.{optimizer}()", "--gin.LEARNING_RATE=0.02",
                          "--gin.LEARNING_RATE_SCHEDULE='constant * linear_warmup'",
                          "--gin.WARMUP_STEPS=10"])
        gin.clear_config()
        gin_flags.configure_gin(flags, finalize=False)
        made = getattr(optimizers, optimizer)()
        assert made.name == optimizer
        assert float(made.learning_rate(5)) == pytest.approx(0.01)
        assert float(made.learning_rate(100)) == pytest.approx(0.02)
    finally:
        gin.clear_config()


def test_pretrain_run_file_switches_to_the_rsqrt_schedule_without_dropout():
    try:
        _configure("gin/models/flan_t5_tiny.gin", "gin/runs/pretrain.gin")
        assert gin.query_parameter("%LEARNING_RATE_SCHEDULE") == "constant * rsqrt_decay"
        assert gin.query_parameter("%LEARNING_RATE") == 1.0
        assert gin.query_parameter("%WARMUP_STEPS") == 10000
        assert gin.query_parameter("%DROPOUT_RATE") == 0.0
    finally:
        gin.clear_config()


@pytest.mark.parametrize("name, partitions, fsdp", [
    ("data_parallel", 1, False), ("fsdp", 1, True), ("model_parallel", 2, False)])
def test_partitioning_files_configure_the_partitioner(name, partitions, fsdp):
    try:
        _configure("gin/models/flan_t5_tiny.gin", "gin/runs/finetune.gin",
                   f"gin/partitioning/{name}.gin")
        assert gin.query_parameter("partitioning.Partitioner.fsdp") is fsdp
        if name == "data_parallel":
            assert gin.query_parameter("partitioning.Partitioner.num_partitions") == 1
        else:  # --gin.NUM_PARTITIONS=N picks the model axis size
            assert gin.query_parameter("%NUM_PARTITIONS") == partitions
    finally:
        gin.clear_config()
