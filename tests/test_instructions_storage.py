"""TFRecord storage of instruction records: encoding, shards, manifest, and both readers."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest

from instructrec_jax.data.types import DataFormatError
from instructrec_jax.instructions import storage
from instructrec_jax.instructions.format import InstructionRecord

RECORDS = [
    InstructionRecord("Pick one: Amélie; 東京物語", "Amélie", "p1_i0_t3", "pref-01", "u1", "i7",
                      ("i7", "i9"), ("Amélie", "東京物語"), 0, "test/p1_i0_t3/u1/5/pref-01"),
    InstructionRecord("Describe the taste.", "Enjoys Drama.", "p1_i0_t3", "pref-02", "u2", "",
                      (), (), -1, "test/p1_i0_t3/u2/3/pref-02"),
    InstructionRecord("x" * 20000, "y", "p1_i0_t3", "pref-01", "u3", "i1", ("i1",), ("yes",), 0,
                      "test/p1_i0_t3/u3/9/pref-01"),
]


def test_encoding_is_the_tf_example_wire_format():
    import tensorflow as tf

    for record in RECORDS:
        example = tf.train.Example.FromString(storage.encode_record(record))
        feature = example.features.feature
        assert feature["inputs"].bytes_list.value[0].decode() == record.inputs
        assert [v.decode() for v in feature["candidate_targets"].bytes_list.value] == \
            list(record.candidate_targets)
        assert list(feature["label_index"].int64_list.value) == [record.label_index]
        # and our own decoder reads what TensorFlow writes
        assert storage.decode_record(example.SerializeToString()) == record


def test_varints_match_protobufs_encoding_on_both_sides_of_the_lookup_table():
    from google.protobuf.internal import encoder

    for value in (0, 1, 127, 128, 300, storage._SMALL - 1, storage._SMALL, 2**40, 2**63 - 1, -1, -300):
        expected = []
        encoder._SignedVarintEncoder()(expected.append, value)
        assert storage._varint(value) == b"".join(expected), value


def test_decode_reads_unpacked_int64_lists_too():
    import tensorflow as tf

    # Int64List with two values in the non-packed encoding (field 1, varint, twice), -1 included.
    feature = storage._delimited(b"\x1a", b"\x08\x05\x08" + storage._varint(-1))
    example = storage._delimited(b"\n", storage._entry("label_index", feature))
    assert storage.decode_example(example) == {"label_index": [5, -1]}
    assert list(tf.train.Example.FromString(example).features.feature["label_index"]
                .int64_list.value) == [5, -1]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dataset")
    triples = [("p1_i0_t3", "test", r) for r in RECORDS] + [("p1_i0_t3", "train", RECORDS[0])]
    section = storage.write_instructions(directory, triples, shard_size=2)
    storage.write_manifest(directory, instructions=section, vocabulary="spiece.model")
    return directory, section


def test_shards_are_named_k_of_n_and_listed_in_the_manifest(written):
    directory, section = written
    assert section["p1_i0_t3"]["test"] == {
        "files": ["instructions/p1_i0_t3/test-00000-of-00002.tfrecord",
                  "instructions/p1_i0_t3/test-00001-of-00002.tfrecord"],
        "num_examples": 3, "templates": {"pref-01": 2, "pref-02": 1}}
    assert section["p1_i0_t3"]["train"]["files"] == [
        "instructions/p1_i0_t3/train-00000-of-00001.tfrecord"]
    assert sorted(os.listdir(directory / "instructions" / "p1_i0_t3")) == [
        "test-00000-of-00002.tfrecord", "test-00001-of-00002.tfrecord",
        "train-00000-of-00001.tfrecord"]
    manifest = storage.read_manifest(directory)
    assert manifest["instructions"] == section and manifest["vocabulary"] == "spiece.model"


def test_pure_python_reader_round_trips(written):
    directory, _ = written
    assert list(storage.read_instructions(directory, "p1_i0_t3", "test")) == RECORDS


def test_manifest_updates_merge(written, tmp_path):
    storage.write_manifest(tmp_path, a=1)
    assert storage.write_manifest(tmp_path, b=2) == {"a": 1, "b": 2}


def test_seqio_reads_the_same_strings_and_dense_lists(written):
    import seqio
    import tensorflow as tf

    directory, _ = written
    source = seqio.TFExampleDataSource(
        split_to_filepattern=storage.split_to_filepattern(directory, "p1_i0_t3"),
        feature_description=storage.FEATURE_DESCRIPTION)
    assert source.num_input_examples("test") == 3 or source.num_input_examples("test") is None
    examples = list(source.get_dataset("test", shuffle=False).as_numpy_iterator())
    assert len(examples) == 3
    by_id = {e["example_id"].decode(): e for e in examples}
    for record in RECORDS:
        e = by_id[record.example_id]
        assert e["inputs"].decode() == record.inputs and e["targets"].decode() == record.targets
        assert e["candidates"].ndim == 1 and e["candidate_targets"].ndim == 1
        assert [v.decode() for v in e["candidate_targets"]] == list(record.candidate_targets)
        assert [v.decode() for v in e["candidates"]] == list(record.candidates)
        assert int(e["label_index"]) == record.label_index
    spec = source.get_dataset("test", shuffle=False).element_spec
    assert spec["candidates"].shape.as_list() == [None] and spec["candidates"].dtype == tf.string


def test_unknown_type_or_split_names_what_exists(written):
    directory, _ = written
    with pytest.raises(KeyError, match="p1_i0_t3"):
        list(storage.read_instructions(directory, "p9", "test"))
    with pytest.raises(KeyError, match="'test', 'train'"):
        list(storage.read_instructions(directory, "p1_i0_t3", "validation"))


def test_truncated_shard_is_a_clear_error(written, tmp_path):
    directory, section = written
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shard = copy / section["p1_i0_t3"]["train"]["files"][0]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataFormatError, match="truncated TFRecord at record 1"):
        list(storage.read_instructions(copy, "p1_i0_t3", "train"))


def test_missing_manifest_says_how_to_make_one(tmp_path):
    with pytest.raises(DataFormatError, match="instructrec prepare"):
        storage.read_manifest(tmp_path)
