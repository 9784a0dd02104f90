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
