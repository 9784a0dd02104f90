"""First-fit packing (instructrec_jax/packing.py): SeqIO's packed format, every example once, fewer rows."""

from __future__ import annotations

import numpy as np
import pytest
import seqio
import tensorflow as tf

from instructrec_jax import data_pipeline, packing
from instructrec_jax.partitioning import Partitioner

import train_fixtures as fx

LENGTHS = {"inputs": 16, "targets": 6}


def _dataset(examples):
    def gen():
        for inputs, targets in examples:
            yield {"inputs": np.asarray(inputs, np.int32), "targets": np.asarray(targets, np.int32)}

    spec = {k: tf.TensorSpec([None], tf.int32) for k in ("inputs", "targets")}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _rows(converter, examples, lengths=LENGTHS):
    return list(converter(_dataset(examples), lengths).as_numpy_iterator())


def _example(rng, n_in, n_tg):
    return (list(rng.integers(3, 50, n_in - 1)) + [1], list(rng.integers(3, 50, n_tg - 1)) + [1])


def test_first_fit_fills_an_earlier_row_that_next_fit_would_have_closed():
    # Row capacity (10, 4): next-fit would close row 0 when example 1 does not fit, first-fit
    # comes back to it for example 2.
    assert packing.first_fit_rows([(6, 2), (6, 2), (4, 2), (4, 2)], (10, 4)) == [[0, 2], [1, 3]]
    # Both features must fit: example 2 fits row 0's inputs but not its targets.
    assert packing.first_fit_rows([(2, 3), (7, 1), (1, 2)], (10, 4)) == [[0, 1], [2]]
    with pytest.raises(ValueError, match="example 1 has lengths \\[11, 1\\].*trim before packing"):
        packing.first_fit_rows([(2, 1), (11, 1)], (10, 4))


def test_same_rows_as_seqio_byte_for_byte_when_next_fit_and_first_fit_agree():
    # Each consecutive pair fills its row's inputs exactly, so no later example fits an earlier
    # row and both packers make the same rows: every model feature must then be identical.
    rng = np.random.default_rng(0)
    examples = []
    for n_in in (5, 9, 12, 3, 7):
        examples += [_example(rng, n_in, 2), _example(rng, 16 - n_in, 3)]
    ours = _rows(packing.FirstFitEncDecFeatureConverter(pool_size=4), examples)
    theirs = _rows(seqio.EncDecFeatureConverter(pack=True), examples)
    assert len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _unpack(rows):
    """(inputs, targets) of every segment of every packed row, with the decoder features checked."""
    found = []
    for row in rows:
        segments = int(row["encoder_segment_ids"].max())
        for s in range(1, segments + 1):
            enc, dec = row["encoder_segment_ids"] == s, row["decoder_segment_ids"] == s
            # contiguous, positions 0..n-1, decoder inputs = targets shifted right from 0
            assert np.all(np.diff(np.flatnonzero(enc)) == 1) and np.all(np.diff(np.flatnonzero(dec)) == 1)
            np.testing.assert_array_equal(row["encoder_positions"][enc], np.arange(enc.sum()))
            np.testing.assert_array_equal(row["decoder_positions"][dec], np.arange(dec.sum()))
            targets = row["decoder_target_tokens"][dec]
            np.testing.assert_array_equal(row["decoder_input_tokens"][dec], np.concatenate([[0], targets[:-1]]))
            np.testing.assert_array_equal(row["decoder_loss_weights"][dec], np.ones(dec.sum()))
            found.append((tuple(row["encoder_input_tokens"][enc]), tuple(targets)))
        assert not row["decoder_loss_weights"][row["decoder_segment_ids"] == 0].any()
    return found


def test_every_example_packed_exactly_once_in_fewer_rows_than_seqio():
    rng = np.random.default_rng(1)
    examples = [_example(rng, int(rng.integers(4, 17)), int(rng.integers(2, 7))) for _ in range(300)]
    ours = _rows(packing.FirstFitEncDecFeatureConverter(pool_size=64), examples)
    theirs = _rows(seqio.EncDecFeatureConverter(pack=True), examples)
    assert sorted(_unpack(ours)) == sorted((tuple(i), tuple(t)) for i, t in examples)
    assert sorted(_unpack(theirs)) == sorted(_unpack(ours))
    assert len(ours) < len(theirs), (len(ours), len(theirs))


def test_examples_longer_than_the_task_lengths_are_refused_as_seqio_refuses_them():
    rng = np.random.default_rng(2)
    examples = [_example(rng, 20, 3), _example(rng, 4, 2)]
    for converter in (packing.FirstFitEncDecFeatureConverter(pool_size=8), seqio.EncDecFeatureConverter(pack=True)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="has length not less than or equal"):
            _rows(converter, examples)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="pool_size must be >= 1"):
        packing.FirstFitEncDecFeatureConverter(pool_size=0)
    with pytest.raises(ValueError, match="packer must be one of"):
        data_pipeline.DatasetConfig(fx.TASK, fx.LENGTHS, packer="best")
    with pytest.raises(ValueError, match="pack_pool_size must be positive"):
        data_pipeline.DatasetConfig(fx.TASK, fx.LENGTHS, pack_pool_size=0)


def test_trainer_stream_with_first_fit_is_deterministic_and_shaped_as_seqio_packing():
    fx.register_task()
    layout = Partitioner().data_layout(8)
    lengths = {"inputs": 64, "targets": 32}  # room for three of the task's examples per row
    first_fit = data_pipeline.DatasetConfig(fx.TASK, lengths, batch_size=8, packer="first_fit", pack_pool_size=32)
    seqio_cfg = data_pipeline.DatasetConfig(fx.TASK, lengths, batch_size=8)
    take = lambda cfg: list(data_pipeline.local_batches(cfg, layout, seed=3).take(6).as_numpy_iterator())
    a, b, reference = take(first_fit), take(first_fit), take(seqio_cfg)
    assert {k: v.shape for k, v in a[0].items()} == {k: v.shape for k, v in reference[0].items()}
    for x, y in zip(a, b):  # the same seed gives the same rows: what resuming by skipping needs
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert isinstance(data_pipeline.feature_converter(first_fit), packing.FirstFitEncDecFeatureConverter)
    assert type(data_pipeline.feature_converter(seqio_cfg)) is seqio.EncDecFeatureConverter
    assert min(r["encoder_segment_ids"].max(axis=1).min() for r in a) >= 2  # really packed


def test_packer_chosen_on_the_command_line_reaches_the_training_dataset_config():
    import gin

    from instructrec_jax import gin_flags

    flags, _ = gin_flags.parse_gin_flags([
        "--gin_file=gin/models/flan_t5_tiny.gin", "--gin_file=gin/runs/finetune.gin", "--gin.MODEL_DIR='/tmp/x'",
        "--gin.MIXTURE_OR_TASK_NAME='t'", "--gin.TASK_FEATURE_LENGTHS={'inputs': 8, 'targets': 4}",
        "--gin.TRAIN_STEPS=5", "--gin.PACKER='first_fit'", "--gin.PACK_POOL_SIZE=64"])
    try:
        gin.clear_config()
        gin_flags.configure_gin(flags, finalize=False)
        with gin.config_scope("train"):
            cfg = data_pipeline.DatasetConfig()
        assert (cfg.packer, cfg.pack_pool_size, cfg.pack) == ("first_fit", 64, True)
        assert isinstance(data_pipeline.feature_converter(cfg), packing.FirstFitEncDecFeatureConverter)
    finally:
        gin.clear_config()


def test_benchmark_packs_with_the_trainers_packers():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_train", fx.REPO / "tools" / "bench_train.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    examples = bench.synthetic_examples(16, 256, 32, 32128)
    first_fit = bench.packed_batch(examples, 256, 32, "first_fit")
    seqio_rows = bench.packed_batch(examples, 256, 32, "seqio")
    # The published packed figure's 14 rows; SeqIO's packer pairs none of these 16 examples.
    assert first_fit["encoder_input_tokens"].shape == (14, 256)
    assert seqio_rows["encoder_input_tokens"].shape == (16, 256)
    assert first_fit["decoder_loss_weights"].sum() == seqio_rows["decoder_loss_weights"].sum()
    # --pack-lengths: the same examples into rows twice as long: fewer rows, the same real tokens.
    long_rows = bench.packed_batch(examples, 512, 64, "first_fit")
    assert long_rows["encoder_input_tokens"].shape[1] == 512 and long_rows["encoder_input_tokens"].shape[0] < 14
    assert bench.real_tokens(long_rows) == bench.real_tokens(first_fit)
    assert bench.parse_args(["--pack-lengths", "512/64"]).pack_lengths == (512, 64)
    for bad in (["--pack-lengths", "128/32"], ["--pack-lengths", "512"], ["--lengths", "0/32"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    names = lambda argv: [run[0] for run in bench.planned_runs(bench.parse_args(argv), ["jax", "torch"])]
    assert names(["--pack"]) == ["ours", "ours packed", "transformers fp32"]
    # --pack-only: no unpacked row (a microbatch count may divide the packed rows only)
    assert names(["--pack-only", "--microbatches", "7"]) == ["ours packed", "transformers fp32"]
    assert names([]) == ["ours", "transformers fp32"]
    # --repeats: the list forwards, then backwards, so drift weighs on both sides alike
    runs = bench.planned_runs(bench.parse_args(["--pack-only", "--repeats", "3"]), ["jax", "torch"])
    assert [(i, run[0]) for i, run in bench.repeated_runs(runs, 3)] == [
        (0, "ours packed"), (0, "transformers fp32"), (1, "transformers fp32"), (1, "ours packed"),
        (2, "ours packed"), (2, "transformers fp32")]
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    # each repeat's ratio is taken against that repeat's transformers run, not the best overall
    rate = lambda x: {"real_tokens_per_s": x}
    results = [(0, "ours packed", rate(300.0)), (0, "transformers fp32", rate(200.0)),
               (1, "transformers fp32", rate(300.0)), (1, "ours packed", rate(330.0)),
               (1, "transformers bf16", rate(100.0))]
    assert bench.ratios_per_repeat(results, "ours packed") == pytest.approx([1.5, 1.1])
    assert bench.ratios_per_repeat(results, "ours") == []


def test_packing_stats_tool_prints_every_packer_with_fewer_rows_for_first_fit(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("packing_stats", fx.REPO / "tools" / "packing_stats.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--examples", "64", "--lengths", "32/8", "--pools", "64", "--vocab", "100"]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): int(line.split(" | ")[1])
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| packer")}
    assert rows["none"] == 64
    assert rows["first-fit, pool 64"] <= rows["SeqIO (`PACKER='seqio'`)"] < 64


def test_resumed_first_fit_stream_continues_with_the_batch_an_unbroken_stream_gives():
    fx.register_task()
    cfg = data_pipeline.DatasetConfig(fx.TASK, {"inputs": 64, "targets": 32}, batch_size=8,
                                      packer="first_fit", pack_pool_size=32)
    unbroken = data_pipeline.TrainBatchIterator(cfg, Partitioner(), seed=5)
    expected = [next(unbroken) for _ in range(7)][-2:]
    resumed = data_pipeline.TrainBatchIterator(cfg, Partitioner(), seed=5, position=5)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(want[key]), err_msg=key)
    assert resumed.state()["batches_consumed"] == 7
