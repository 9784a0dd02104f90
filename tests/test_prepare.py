"""`instructrec prepare`: the whole dataset directory, written atomically, from real files."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from instructrec_jax import prepare as prepare_module
from instructrec_jax.instructions import storage
from instructrec_jax.instructions.format import INSTRUCTION_TYPES, SCENARIOS
from instructrec_jax.instructions.templates import TEMPLATES

from fixture_files import write_ml100k


@pytest.fixture(scope="module")
def ml_dir(tmp_path_factory):
    return write_ml100k(tmp_path_factory.mktemp("raw"), extra_users=160, extra_items=150)


@pytest.fixture(scope="module", autouse=True)
def small_vocabulary_sample():
    # The vocabulary sees a few MB of instructions by default; a few hundred keep tests quick.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prepare_module, "VOCAB_SAMPLE_RECORDS", 300)
        yield


@pytest.fixture(scope="module")
def prepared(ml_dir, tmp_path_factory, small_vocabulary_sample):
    out = tmp_path_factory.mktemp("prepared")
    lines = []
    path = prepare_module.prepare("ml-100k", ml_dir, out, name="Tiny-ML", vocab_size=2000,
                                  max_train_examples_per_type=400, log=lines.append)
    return path, "\n".join(lines)


def test_dataset_folder_is_the_names_letters_and_digits(prepared):
    path, _ = prepared
    assert path.name == "tinyml"
    assert prepare_module.dataset_folder_name("ml-100k") == "ml100k"


def test_output_holds_data_instructions_vocabulary_and_manifest(prepared):
    path, _ = prepared
    for name in ("items.jsonl", "splits/train.jsonl", "candidates/test-neg9.jsonl",
                 "candidates/test-neg99.jsonl", "stats.json", "spiece.model", "manifest.json",
                 "instructions/item_texts.json"):
        assert (path / name).is_file(), name
    manifest = storage.read_manifest(path)
    assert manifest["name"] == "Tiny-ML" and manifest["vocabulary"] == "spiece.model"
    assert manifest["scenarios"] == SCENARIOS
    assert manifest["renderer"] == {"style": "title", "max_title_words": None}
    assert set(INSTRUCTION_TYPES) <= set(manifest["instructions"])
    assert 300 < manifest["vocabulary_size"] <= 2000
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporaries


def test_manifest_counts_match_the_shards_and_cover_all_39_templates(prepared):
    path, _ = prepared
    manifest = storage.read_manifest(path)
    seen_templates = set()
    for type_name, splits in manifest["instructions"].items():
        for split, entry in splits.items():
            records = list(storage.read_instructions(path, type_name, split))
            assert len(records) == entry["num_examples"] > 0
            assert sum(entry["templates"].values()) == entry["num_examples"]
            assert {r.instruction_type for r in records} == {type_name}
            seen_templates |= set(entry["templates"])
    assert seen_templates == {t.template_id for t in TEMPLATES}


def test_statistics_and_counts_are_printed(prepared):
    path, text = prepared
    assert "| raw |" in text and "5-core" in text
    assert "| p1_i0_t3 |" in text and "| pref-01 (p1_i0_t3) |" in text
    assert f"prepared dataset: {path}" in text


def test_existing_dataset_is_kept_without_overwrite(prepared, ml_dir):
    path, _ = prepared
    before = (path / "manifest.json").read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_module.prepare("ml-100k", ml_dir, path.parent, name="Tiny-ML", log=lambda m: None)
    assert (path / "manifest.json").read_bytes() == before


def test_failure_midway_leaves_nothing_under_the_final_name(ml_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(prepare_module, "train_vocabulary", broken)
    with pytest.raises(RuntimeError, match="injected"):
        prepare_module.prepare("ml-100k", ml_dir, tmp_path, name="broken", log=lambda m: None,
                               types=["p1_i0_t3"])
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_dataset(prepared, ml_dir, monkeypatch, tmp_path):
    import shutil
    old = tmp_path / "tinyml"
    shutil.copytree(prepared[0], old)
    monkeypatch.setattr(prepare_module.storage, "write_item_texts",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("injected")))
    with pytest.raises(OSError, match="injected"):
        prepare_module.prepare("ml-100k", ml_dir, tmp_path, name="Tiny-ML", overwrite=True,
                               log=lambda m: None, types=["p1_i0_t3"])
    assert json.loads((old / "manifest.json").read_text())["name"] == "Tiny-ML"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tinyml"]


def test_cli_with_options(ml_dir, tmp_path, capsys):
    code = prepare_module.main([
        "--source", "ml-100k", "--path", str(ml_dir), "--out-dir", str(tmp_path), "--name", "cli",
        "--types", "p1_i0_t3,p1_i1_t3", "--renderer", "id_token", "--negatives", "9",
        "--templates-per-example", "all", "--vocab-size", "1000", "--seed", "3",
        "--train-passes", "2", "--train-negative-popularity", "0.75",
        "--train-popular-negatives", "4", "--train-next-items", "2"])
    assert code == 0
    manifest = storage.read_manifest(tmp_path / "cli")
    assert manifest["generator"]["train_passes"] == 2
    assert manifest["generator"]["train_negative_popularity"] == 0.75
    assert manifest["generator"]["train_popular_negatives"] == 4
    assert manifest["generator"]["train_next_items"] == 2
    train = list(storage.read_instructions(tmp_path / "cli", "p1_i0_t3", "train"))
    assert {len(r.targets.split(" ")) for r in train} == {1, 2}  # the next item, where there is one
    train_ids = [r.example_id for r in storage.read_instructions(tmp_path / "cli", "p1_i0_t3", "train")]
    assert len(train_ids) == manifest["instructions"]["p1_i0_t3"]["train"]["num_examples"]
    assert 2 * sum(i.endswith("/pass1") for i in train_ids) == len(train_ids) > 0
    assert set(manifest["instructions"]) == {"p1_i0_t3", "p1_i1_t3"}
    assert manifest["preprocess"]["negatives"] == [9] and manifest["preprocess"]["seed"] == 3
    record = next(storage.read_instructions(tmp_path / "cli", "p1_i0_t3", "test"))
    assert record.targets.startswith("<item_")
    assert record.targets == record.candidate_targets[record.label_index]
    from instructrec_jax.vocabulary import load_vocabulary
    assert len(load_vocabulary(tmp_path / "cli" / "spiece.model").encode(record.targets)) == 1
    assert "prepared dataset:" in capsys.readouterr().out


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    assert prepare_module.main(["--source", "ml-100k", "--path", str(tmp_path / "nowhere"),
                                "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "instructrec prepare: error:" in err and "nowhere" in err


def test_pretrained_vocabulary_refuses_id_tokens(prepared, ml_dir, tmp_path):
    with pytest.raises(ValueError, match="item id tokens are not pieces"):
        prepare_module.prepare("ml-100k", ml_dir, tmp_path, name="pre", renderer="id_token",
                               vocabulary=prepared[0] / "spiece.model", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_workers_write_the_same_shards_as_one_process(tmp_path):
    from instructrec_jax.data.preprocess import write_prepared
    from instructrec_jax.instructions.generator import GeneratorOptions

    from instruction_fixtures import store_data

    data = store_data()
    options = GeneratorOptions(types=("p1_i0_t3", "p1_i0_t0", "rev_item_to_query"))
    outputs = {}
    for workers in (1, 2):
        directory = tmp_path / f"w{workers}"
        directory.mkdir()
        write_prepared(data, directory)
        outputs[workers] = prepare_module.write_all_instructions(directory, data, options,
                                                                 workers=workers,
                                                                 sample_records=30)
    assert outputs[1].section == outputs[2].section
    assert outputs[1].texts == outputs[2].texts and len(outputs[1].texts["p1_i0_t3"]) == 10
    for type_name, splits in outputs[1].section.items():
        for entry in splits.values():
            for name in entry["files"]:
                assert (tmp_path / "w1" / name).read_bytes() == \
                    (tmp_path / "w2" / name).read_bytes()


def test_cli_refuses_a_bad_negative_popularity(ml_dir, tmp_path, capsys):
    code = prepare_module.main(["--source", "ml-100k", "--path", str(ml_dir), "--out-dir",
                                str(tmp_path), "--types", "p1_i0_t3",
                                "--train-negative-popularity", "-1"])
    assert code == 1
    assert "negative_popularity must be a number in [0, 4]" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("flags, message", [
    (["--train-popular-negatives", "3"], "popular_negatives needs negative_popularity > 0"),
    (["--train-negative-popularity", "1", "--train-popular-negatives", "10"],
     "popular_negatives must be an int in [0, negatives=9]"),
    (["--train-next-items", "0"], "train_next_items must be a positive int"),
    (["--train-related-negatives", "10"], "related_negatives must be an int in [1, negatives=9]"),
    (["--train-negative-popularity", "1", "--train-popular-negatives", "3",
      "--train-related-negatives", "3"], "use one of them"),
])
def test_cli_refuses_bad_training_record_options(ml_dir, tmp_path, capsys, flags, message):
    code = prepare_module.main(["--source", "ml-100k", "--path", str(ml_dir), "--out-dir",
                                str(tmp_path), "--types", "p1_i0_t3", *flags])
    assert code == 1
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_related_negatives_are_recorded_and_change_training_records_only(ml_dir, tmp_path):
    common = ["--source", "ml-100k", "--path", str(ml_dir), "--out-dir", str(tmp_path),
              "--types", "p1_i0_t3", "--renderer", "id_token", "--vocab-size", "1000"]
    assert prepare_module.main([*common, "--name", "plain"]) == 0
    assert prepare_module.main([*common, "--name", "rel", "--train-related-negatives", "5"]) == 0
    assert storage.read_manifest(tmp_path / "rel")["generator"]["train_related_negatives"] == 5
    assert storage.read_manifest(tmp_path / "plain")["generator"]["train_related_negatives"] is None
    read = lambda name, split: list(storage.read_instructions(tmp_path / name, "p1_i0_t3", split))  # noqa: E731
    assert read("rel", "test") == read("plain", "test")
    assert read("rel", "validation") == read("plain", "validation")
    plain, rel = read("plain", "train"), read("rel", "train")
    assert [r.targets for r in plain] == [r.targets for r in rel]
    assert sum(a.candidates != b.candidates for a, b in zip(plain, rel)) > len(rel) // 2
