"""The SeqIO task registry over a prepared dataset, and the task-inspection command."""

import json

import numpy as np
import pytest
import seqio

from instructrec_jax import inspect_task
from instructrec_jax.data.preprocess import PreprocessConfig
from instructrec_jax.data.types import DataFormatError
from instructrec_jax.prepare import prepare
from tests.fixture_files import write_ml100k
import instructrec_jax.tasks as registry

TYPES = ("p1_i0_t3", "p0_i2_t3", "p1_i1_t3", "p1_i0_t2", "rev_history_to_preference")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    raw = write_ml100k(root / "raw", extra_users=60, extra_items=40)
    path = prepare("ml-100k", raw, root / "prepared", name="tiny-lens",
                   config=PreprocessConfig(negatives=(9,)), types=TYPES,
                   max_train_examples_per_type=300, vocab_size=400, log=lambda _: None)
    return registry.register_prepared_dataset(path)


def test_one_task_per_instruction_type_and_scenario_aliases(prepared):
    assert prepared.name == "tiny-lens"
    assert set(prepared.tasks) == {f"instructrec_tinylens_{t}" for t in TYPES}
    assert set(prepared.eval_tasks) == {"instructrec_tinylens_eval_sequential",
                                        "instructrec_tinylens_eval_product_search",
                                        "instructrec_tinylens_eval_personalized_i1"}
    assert prepared.mixture == "instructrec_tinylens_all"
    for name in prepared.tasks + prepared.eval_tasks + (prepared.mixture,):
        assert name in registry.registered_names()


def test_mixture_rates_are_proportional_to_training_examples(prepared):
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    mixture = seqio.get_mixture_or_task(prepared.mixture)
    rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
    expected = {f"instructrec_tinylens_{t}": float(manifest["instructions"][t]["train"]["num_examples"])
                for t in TYPES}
    assert rates == expected


def test_every_task_yields_examples_through_the_feature_converter(prepared):
    lengths = {"inputs": 256, "targets": 32}
    converter = seqio.EncDecFeatureConverter(pack=True)
    for name in prepared.tasks + prepared.eval_tasks:
        task = seqio.get_mixture_or_task(name)
        split = "train" if "train" in task.splits else "test"
        ds = task.get_dataset(lengths, split=split, shuffle=False)
        batch = next(converter(ds, lengths).batch(4).as_numpy_iterator())
        assert batch["encoder_input_tokens"].shape == (4, 256), name
        assert batch["decoder_target_tokens"].shape == (4, 32), name
        # Every packed row holds at least one example, and each target ends with EOS (id 1).
        assert (batch["decoder_segment_ids"][:, 0] == 1).all(), name
        assert (batch["decoder_target_tokens"] == 1).any(axis=1).all(), name


def test_eval_task_keeps_candidates_and_the_true_item_index(prepared):
    task = seqio.get_mixture_or_task("instructrec_tinylens_eval_sequential")
    assert set(task.splits) == {"validation", "test"}
    ex = next(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
    candidates = [c.decode() for c in ex["candidates"]]
    assert len(candidates) == 10
    assert candidates[int(ex["label_index"])] == ex["target_item"].decode()
    vocab = task.output_features["targets"].vocabulary
    assert vocab.decode(ex["targets"].tolist()) == ex["targets_pretokenized"].decode()
    assert ex["targets"][-1] == 1  # EOS appended


def test_vocabulary_keeps_t5_special_ids(prepared):
    vocab = seqio.get_mixture_or_task(prepared.tasks[0]).output_features["inputs"].vocabulary
    assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
    assert vocab.extra_ids == 100
    # Sentinels count down from the top id, as in T5: <extra_id_0> is the last piece.
    assert vocab.tokenizer.id_to_piece(vocab.vocab_size - 1) == "\u2581<extra_id_0>"
    assert vocab.tokenizer.id_to_piece(vocab.vocab_size - 100) == "\u2581<extra_id_99>"


def test_unknown_name_lists_the_registered_ones(prepared):
    with pytest.raises(ValueError) as err:
        registry.get_task_or_mixture("instructrec_tinylens_nope")
    assert "instructrec_tinylens_p1_i0_t3" in str(err.value)
    assert "instructrec_tinylens_all" in str(err.value)


def test_inspect_task_prints_examples_and_summary(prepared, capsys):
    assert inspect_task.main(["--task", "instructrec_tinylens_eval_sequential", "--num-examples", "2",
                              "--lengths", "inputs=64,targets=32"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- example") == 4  # 2 per split, validation and test
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    test_split = manifest["instructions"]["p1_i0_t3"]["test"]
    row = next(line for line in out.splitlines() if line.startswith("| test |"))
    assert f"| test | {test_split['num_examples']:,} |" in row
    # inputs are long reranking prompts: nearly all exceed 64 tokens and are reported truncated
    truncated = float(row.split("|")[7].strip().rstrip("%"))
    assert truncated > 90.0
    for template_id, count in test_split["templates"].items():
        assert f"  {template_id}: {count:,}" in out


def test_summary_lengths_match_direct_tokenization(prepared):
    task = seqio.get_mixture_or_task("instructrec_tinylens_p1_i0_t2")
    summary = inspect_task.summarize(task, "train", {"inputs": 512, "targets": 8}, 10_000)
    vocab = task.output_features["targets"].vocabulary
    lengths = [len(vocab.encode(ex["targets_pretokenized"].decode())) + 1
               for ex in task.get_dataset(None, split="train", shuffle=False).as_numpy_iterator()]
    assert summary.num_examples == len(lengths)
    assert summary.targets.max == max(lengths)
    assert summary.targets.mean == pytest.approx(np.mean(lengths))
    assert summary.targets.truncated == pytest.approx(np.mean(np.array(lengths) > 8))


def test_inspect_unknown_task_fails_with_listing(prepared, capsys):
    assert inspect_task.main(["--task", "no_such_task"]) == 2
    err = capsys.readouterr().err
    assert "no_such_task" in err and "instructrec_tinylens_p1_i0_t3" in err


def test_bad_lengths_are_rejected():
    with pytest.raises(ValueError, match="inputs=N"):
        inspect_task.parse_lengths("inputz=3")
    assert inspect_task.parse_lengths("{'inputs': 128, 'targets': 16}") == {"inputs": 128, "targets": 16}


def test_broken_manifest_names_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="manifest.json:1"):
        registry.register_prepared_dataset(tmp_path)


def test_temporary_folders_are_not_registered(tmp_path, prepared):
    (tmp_path / ".ml100k.tmp-abc").mkdir()
    assert registry.register_all([tmp_path]) == []
