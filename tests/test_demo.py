"""`instructrec demo`: the command sequence it runs, reuse of prepared data, and failures."""

import os

import pytest

from instructrec_jax import demo


def _recorder(calls, fail=None):
    def runner(command):
        calls.append(command)
        return 1 if command[0] == fail else 0
    return runner


def test_demo_runs_prepare_inspect_train_eval_with_the_experiment_gin_files(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTREC_DATA_DIR", "unused")  # restored after the test
    calls = []
    assert demo.main(["--work-dir", str(tmp_path), "--train-binding=--gin.TRAIN_STEPS=3"], runner=_recorder(calls)) == 0
    assert [c[0] for c in calls] == ["prepare", "inspect-task", "train", "eval"]
    prepare, _, train, evaluate = calls
    assert prepare[prepare.index("--renderer") + 1] == "id_token"
    assert prepare[prepare.index("--types") + 1].split(",") == list(demo.DEMO_TYPES)
    assert "--gin_file=gin/experiments/ml100k_demo.gin" in train and "--gin.TRAIN_STEPS=3" in train
    assert f"--gin.MODEL_DIR='{tmp_path / 'model'}'" in train
    assert f"--gin.CHECKPOINT_PATH='{tmp_path / 'model' / 'checkpoints'}'" in evaluate
    assert "--gin_file=gin/experiments/ml100k_demo_eval.gin" in evaluate
    # The experiment gin files find the dataset through the demo's data folder.
    assert os.environ["INSTRUCTREC_DATA_DIR"] == str(tmp_path / "prepared")


def test_demo_reuses_a_prepared_dataset_and_can_skip_training(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTREC_DATA_DIR", "unused")  # restored after the test
    folder = tmp_path / "prepared" / demo.DATASET_FOLDER
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    calls = []
    demo.main(["--work-dir", str(tmp_path), "--skip-train"], runner=_recorder(calls))
    assert [c[0] for c in calls] == ["inspect-task", "eval"]


def test_a_failing_step_stops_the_demo_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTREC_DATA_DIR", "unused")  # restored after the test
    calls = []
    with pytest.raises(SystemExit, match="instructrec train` failed"):
        demo.main(["--work-dir", str(tmp_path)], runner=_recorder(calls, fail="train"))
    assert [c[0] for c in calls] == ["prepare", "inspect-task", "train"]


def test_experiment_gin_files_name_the_demo_dataset():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("ml100k_demo.gin", "ml100k_demo_eval.gin", "ml100k_long.gin",
                 "ml100k_long_sequential.gin"):
        text = (root / "gin" / "experiments" / name).read_text(encoding="utf-8")
        assert f"DATASET = '{demo.DATASET_FOLDER}'" in text, name


def _macros(gin_file: str, *names: str) -> dict:
    """The values of gin macros after configuring one experiment file (gin cleared afterwards)."""
    import gin

    from instructrec_jax import gin_flags

    flags, _ = gin_flags.parse_gin_flags([f"--gin_file={gin_file}"])
    gin.clear_config()
    try:
        gin_flags.configure_gin(flags, finalize=False)
        return {name: gin.query_parameter(f"%{name}") for name in names}
    finally:
        gin.clear_config()


LONG_RECIPE = {"LEARNING_RATE_SCHEDULE": "constant * linear_decay", "WARMUP_STEPS": 0,
               "TRAIN_STEPS": 6000, "BATCH_SIZE": 32, "LEARNING_RATE": 0.01}


def test_long_sequential_gin_is_the_measured_recipe():
    """gin/experiments/ml100k_long_sequential.gin = the demo model, single task, linear decay from
    1e-2 (the measured recipe)."""
    expected = {**LONG_RECIPE, "MIXTURE_OR_TASK_NAME": "instructrec_ml100kdemo_p1_i0_t3",
                "DATASET": demo.DATASET_FOLDER}
    assert _macros("gin/experiments/ml100k_long_sequential.gin", *expected) == expected


def test_long_neg19_gin_is_the_long_recipe_on_the_19_negative_dataset():
    """gin/experiments/ml100k_long_neg19.gin = ml100k_long_sequential.gin (same schedule, steps,
    batch) on the dataset prepared with --train-negatives 19, rows of 160 input tokens: the
    bindings of the ablation row's command."""
    expected = {**LONG_RECIPE, "DATASET": "ml100kneg19",
                "MIXTURE_OR_TASK_NAME": "instructrec_ml100kneg19_p1_i0_t3",
                "TASK_FEATURE_LENGTHS": {"inputs": 160, "targets": 4}}
    assert _macros("gin/experiments/ml100k_long_neg19.gin", *expected) == expected


def test_next3_gin_is_the_neg19_recipe_on_the_dataset_its_prepare_command_names():
    """gin/experiments/ml100k_long_neg19_next3.gin = ml100k_long_neg19.gin on the dataset that
    `prepare --name ml100k_neg19_next3 ... --train-next-items 3` writes; three items + EOS fit the
    same 4 target positions."""
    from instructrec_jax.prepare import dataset_folder_name

    gin_file = "gin/experiments/ml100k_long_neg19_next3.gin"
    folder = dataset_folder_name("ml100k_neg19_next3")
    expected = {**LONG_RECIPE, "DATASET": folder,
                "MIXTURE_OR_TASK_NAME": f"instructrec_{folder}_p1_i0_t3",
                "TASK_FEATURE_LENGTHS": {"inputs": 160, "targets": 4}}
    assert _macros(gin_file, *expected) == expected
    text = open(gin_file, encoding="utf-8").read()
    assert "--name ml100k_neg19_next3" in text and "--train-next-items 3" in text
    assert "--gin.SCORE_EOS=False" in text


def test_sasrec_init_gin_is_the_neg19_recipe_with_the_sasrec_initialiser():
    """gin/experiments/ml100k_long_neg19_sasrec_init.gin = ml100k_long_neg19.gin with the item
    embeddings from a SASRec of the run's seed instead of the PPMI factors."""
    import gin

    from instructrec_jax import gin_flags

    expected = {**LONG_RECIPE, "DATASET": "ml100kneg19",
                "MIXTURE_OR_TASK_NAME": "instructrec_ml100kneg19_p1_i0_t3",
                "TASK_FEATURE_LENGTHS": {"inputs": 160, "targets": 4}}
    gin_file = "gin/experiments/ml100k_long_neg19_sasrec_init.gin"
    assert _macros(gin_file, *expected) == expected
    flags, _ = gin_flags.parse_gin_flags([f"--gin_file={gin_file}", "--gin.RANDOM_SEED=2"])
    gin.clear_config()
    try:
        gin_flags.configure_gin(flags, finalize=False)
        config = gin.config_str()
    finally:
        gin.clear_config()
    assert "param_initializers = [@item_init.SASRecItemInit()]" in config, config
    assert "item_init.SASRecItemInit.epochs = 40" in config and "seed = %RANDOM_SEED" in config


def test_pointer_gin_is_the_neg19_recipe_with_the_copy_head():
    """gin/experiments/ml100k_long_neg19_pointer.gin = ml100k_long_neg19.gin with
    `T5Config.pointer_generator`; the evaluation command it documents sets the same flag."""
    import gin

    from instructrec_jax import gin_flags
    from instructrec_jax.model.config import T5Config

    gin_file = "gin/experiments/ml100k_long_neg19_pointer.gin"
    expected = {**LONG_RECIPE, "DATASET": "ml100kneg19",
                "MIXTURE_OR_TASK_NAME": "instructrec_ml100kneg19_p1_i0_t3",
                "TASK_FEATURE_LENGTHS": {"inputs": 160, "targets": 4}}
    assert _macros(gin_file, *expected) == expected
    flags, _ = gin_flags.parse_gin_flags([f"--gin_file={gin_file}"])
    gin.clear_config()
    try:
        gin_flags.configure_gin(flags, finalize=False)
        assert gin.query_parameter("config.T5Config.pointer_generator") is True
        assert gin.query_parameter("config.T5Config.d_model") == 128
    finally:
        gin.clear_config()
    assert T5Config().pointer_generator is False  # the default model stays Flan-T5
    text = open(gin_file, encoding="utf-8").read()
    assert "instructrec eval" in text and "--gin.config.T5Config.pointer_generator=True" in text


def test_pointer_eval_gin_is_the_demo_evaluation_with_the_copy_head_and_candidate_orders():
    """gin/experiments/ml100k_long_neg19_pointer_eval.gin = ml100k_demo_eval.gin (same dataset,
    prior grid, baselines) with the copy head and four candidate orders."""
    import gin

    from instructrec_jax import gin_flags

    names = ("DATASET", "PRIOR", "PRIOR_WEIGHTS", "BASELINES", "NUM_NEGATIVES", "TASK_FEATURE_LENGTHS")
    demo_eval = _macros("gin/experiments/ml100k_demo_eval.gin", *names, "CANDIDATE_ORDERS")
    assert demo_eval["CANDIDATE_ORDERS"] == 1
    gin_file = "gin/experiments/ml100k_long_neg19_pointer_eval.gin"
    ours = _macros(gin_file, *names, "CANDIDATE_ORDERS")
    assert ours == {**demo_eval, "CANDIDATE_ORDERS": 4}
    flags, _ = gin_flags.parse_gin_flags([f"--gin_file={gin_file}"])
    gin.clear_config()
    try:
        gin_flags.configure_gin(flags, finalize=False)
        assert gin.query_parameter("config.T5Config.pointer_generator") is True
        assert str(gin.query_parameter("instructrec_jax.evaluate.evaluate.candidate_orders")) == "%CANDIDATE_ORDERS"
    finally:
        gin.clear_config()
    assert "instructrec eval" in open(gin_file, encoding="utf-8").read()
