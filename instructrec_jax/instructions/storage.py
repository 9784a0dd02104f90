"""Instruction records on disk: TFRecord shards of tf.train.Example, a manifest, and readers.

Layout inside a prepared dataset directory (INTERFACES §3):

    instructions/<type_name>/<split>-<k:05d>-of-<n:05d>.tfrecord   split: train|validation|test
    instructions/item_texts.json                                  item id -> rendered text
    manifest.json      {"instructions": {type: {split: {"files", "num_examples", "templates"}}},
                        "vocabulary": "spiece.model", ...}

Examples are encoded by hand (the tf.train.Example wire format is four nested messages of
length-delimited fields), which is several times faster than building protos in Python, and
written with TensorFlow's TFRecordWriter (for its CRC-32C framing). `read_instructions` parses
shards in pure Python (it does not verify the CRCs; tf.data does), so the evaluator can read
records without TensorFlow; SeqIO reads the same shards with `FEATURE_DESCRIPTION`.
"""

from __future__ import annotations

import collections
import json
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from instructrec_jax.atomic import write_text_atomic
from instructrec_jax.data.types import DataFormatError
from instructrec_jax.instructions.format import InstructionRecord

INSTRUCTIONS_DIR = "instructions"
MANIFEST = "manifest.json"
ITEM_TEXTS = f"{INSTRUCTIONS_DIR}/item_texts.json"
MAX_RECORDS_PER_SHARD = 50_000
STRING_FIELDS = ("inputs", "targets", "instruction_type", "template_id", "user_id", "target_item",
                 "example_id")
LIST_FIELDS = ("candidates", "candidate_targets")
INT_FIELDS = ("label_index",)


def feature_description() -> dict[str, Any]:
    """The tf.io parsing spec for `seqio.TFExampleDataSource`; lists parse to dense 1-D tensors."""
    import tensorflow as tf

    spec: dict[str, Any] = {name: tf.io.FixedLenFeature([], tf.string) for name in STRING_FIELDS}
    spec.update({name: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
                 for name in LIST_FIELDS})
    spec["label_index"] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def __getattr__(name: str):
    # FEATURE_DESCRIPTION needs TensorFlow; built on first use so that importing this module
    # (e.g. by the pure-Python reader) does not import TensorFlow.
    if name == "FEATURE_DESCRIPTION":
        return feature_description()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- tf.train.Example wire format -----------------------------------------------------------

def _varint(value: int) -> bytes:
    if 0 <= value < _SMALL:
        return _SMALL_VARINTS[value]
    return _slow_varint(value & ((1 << 64) - 1))  # negative int64: two's complement, ten bytes


def _slow_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


_SMALL = 1 << 14  # every length below 16 KiB is a table lookup (encoding is the writer's hot path)
_SMALL_VARINTS = [_slow_varint(v) for v in range(_SMALL)]


def _delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _entry(name: str, feature: bytes) -> bytes:
    """One Features map entry: {key(1): name, value(2): feature}, as field 1 of Features."""
    return _delimited(b"\n", _delimited(b"\n", name.encode()) + _delimited(b"\x12", feature))


# Encoding is the writer's hot path (millions of records): lengths below 16 KiB are table
# lookups, the key of each map entry is precomputed, and encoded pieces that repeat (item texts
# and ids, type names and template ids, users, labels) are cached.
_KEY = {name: _delimited(b"\n", name.encode()) + b"\x12"
        for name in STRING_FIELDS + LIST_FIELDS + INT_FIELDS}
_CACHE_LIMIT = 2_000_000
_CACHED_MAX_CHARS = 200
_VALUES: dict[str, bytes] = {}  # string -> BytesList value field (tag, length, utf-8)
_ENTRIES: dict[tuple[str, object], bytes] = {}  # (feature name, value) -> whole map entry


def _value(text: str, cache: bool = True) -> bytes:
    data = text.encode("utf-8")
    n = len(data)
    encoded = b"\n" + (_SMALL_VARINTS[n] if n < _SMALL else _varint(n)) + data
    if cache and len(text) <= _CACHED_MAX_CHARS and len(_VALUES) < _CACHE_LIMIT:
        _VALUES[text] = encoded
    return encoded


def _bytes_entry(name: str, bytes_list: bytes) -> bytes:
    table, small = _SMALL_VARINTS, _SMALL
    n = len(bytes_list)
    feature = b"\n" + (table[n] if n < small else _varint(n)) + bytes_list
    n = len(feature)
    entry = _KEY[name] + (table[n] if n < small else _varint(n)) + feature
    n = len(entry)
    return b"\n" + (table[n] if n < small else _varint(n)) + entry


def _cached_entry(name: str, value) -> bytes:
    """The map entry of a scalar feature (a short string, or the int label), cached."""
    if name == "label_index":
        # Feature{int64_list(3): Int64List{value(1), packed}}
        entry = _entry(name, _delimited(b"\x1a", _delimited(b"\n", _varint(value))))
    else:
        entry = _bytes_entry(name, _VALUES.get(value) or _value(value))
    if len(_ENTRIES) < _CACHE_LIMIT:
        _ENTRIES[(name, value)] = entry
    return entry


# The records of one example under several templates share their candidate tuples (the same
# objects): the last encoded list of each field is kept and reused when the tuple is the same.
_LAST_LISTS: dict[str, tuple[tuple[str, ...], bytes]] = {}


def _list_entry(name: str, items: tuple[str, ...]) -> bytes:
    last = _LAST_LISTS.get(name)
    if last is not None and last[0] is items:
        return last[1]
    values = _VALUES.get
    entry = _bytes_entry(name, b"".join([values(v) or _value(v) for v in items]))
    _LAST_LISTS[name] = (items, entry)
    return entry


def encode_record(record: InstructionRecord) -> bytes:
    """The serialized tf.train.Example of a record (features in a fixed order)."""
    values, entries = _VALUES.get, _ENTRIES.get
    features = b"".join((
        _bytes_entry("inputs", _value(record.inputs, cache=False)),
        # targets are cached only when already seen as a candidate's text (an item's text)
        _bytes_entry("targets", values(record.targets) or _value(record.targets, cache=False)),
        entries(("instruction_type", record.instruction_type))
        or _cached_entry("instruction_type", record.instruction_type),
        entries(("template_id", record.template_id))
        or _cached_entry("template_id", record.template_id),
        entries(("user_id", record.user_id)) or _cached_entry("user_id", record.user_id),
        entries(("target_item", record.target_item))
        or _cached_entry("target_item", record.target_item),
        _bytes_entry("example_id", _value(record.example_id, cache=False)),
        _list_entry("candidates", record.candidates),
        _list_entry("candidate_targets", record.candidate_targets),
        entries(("label_index", record.label_index))
        or _cached_entry("label_index", record.label_index),
    ))
    n = len(features)
    return b"\n" + (_SMALL_VARINTS[n] if n < _SMALL else _varint(n)) + features


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    pos += 1
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(data: bytes, pos: int, wire: int) -> int:
    """Position after a field's value of the given wire type (for fields we do not read)."""
    if wire == 0:
        return _read_varint(data, pos)[1]
    if wire == 2:
        length, pos = _read_varint(data, pos)
        return pos + length
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(data: bytes, start: int, end: int, key: str) -> list:
    """The values of one Feature message in data[start:end]: bytes or ints."""
    values: list = []
    pos = start
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag == 0x0A or tag == 0x1A:  # bytes_list (1) or int64_list (3), length-delimited
            length, pos = _read_varint(data, pos)
            stop = pos + length
            while pos < stop:
                inner, pos = _read_varint(data, pos)
                if inner == 0x0A:  # value(1), length-delimited: bytes, or packed int64s
                    size, pos = _read_varint(data, pos)
                    if tag == 0x0A:
                        values.append(data[pos:pos + size])
                        pos += size
                    else:
                        packed_end = pos + size
                        while pos < packed_end:
                            number, pos = _read_varint(data, pos)
                            values.append(_signed(number))
                elif inner == 0x08 and tag == 0x1A:  # one unpacked int64
                    number, pos = _read_varint(data, pos)
                    values.append(_signed(number))
                else:
                    pos = _skip(data, pos, inner & 7)
        elif tag == 0x12:
            raise ValueError(f"feature {key!r}: float lists are not instruction fields")
        else:
            pos = _skip(data, pos, tag & 7)
    return values


def decode_example(data: bytes) -> dict[str, list]:
    """A serialized tf.train.Example as {feature name: list of bytes or ints} (no floats)."""
    out: dict[str, list] = {}
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        if tag != 0x0A:  # Example.features (1)
            pos = _skip(data, pos, tag & 7)
            continue
        length, pos = _read_varint(data, pos)
        features_end = pos + length
        while pos < features_end:
            tag, pos = _read_varint(data, pos)
            length, pos = _read_varint(data, pos)
            entry_end = pos + length
            if tag != 0x0A:  # Features.feature (1): map entries
                pos = entry_end
                continue
            key, values = "", []
            while pos < entry_end:
                field, pos = _read_varint(data, pos)
                if field == 0x0A:  # key
                    size, pos = _read_varint(data, pos)
                    key = data[pos:pos + size].decode("utf-8")
                    pos += size
                elif field == 0x12:  # value: Feature
                    size, pos = _read_varint(data, pos)
                    values = _feature_values(data, pos, pos + size, key)
                    pos += size
                else:
                    pos = _skip(data, pos, field & 7)
            out[key] = values
    return out


def decode_record(data: bytes) -> InstructionRecord:
    """The InstructionRecord of a serialized example written by `encode_record`."""
    features = decode_example(data)
    try:
        strings = {name: features[name][0].decode("utf-8") for name in STRING_FIELDS}
        lists = {name: tuple(v.decode("utf-8") for v in features.get(name, ()))
                 for name in LIST_FIELDS}
        label = features["label_index"][0]
    except (KeyError, IndexError) as err:
        raise ValueError(f"not an instruction record: missing feature {err}") from None
    return InstructionRecord(**strings, **lists, label_index=int(label))


def _tfrecords(path: Path) -> Iterator[bytes]:
    """The payloads of a TFRecord file (length, length CRC, data, data CRC; CRCs not checked)."""
    with open(path, "rb") as handle:
        index = 0
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise DataFormatError(path, None, f"truncated TFRecord header after record {index}")
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                raise DataFormatError(path, None, f"truncated TFRecord at record {index + 1}")
            index += 1
            yield data


# ---- writing ---------------------------------------------------------------------------------

class _ShardedWriter:
    """Writes one (type, split) into shards of at most `shard_size` records."""

    def __init__(self, directory: Path, type_name: str, split: str, shard_size: int):
        import tensorflow as tf

        self._tf = tf
        self.folder = directory / INSTRUCTIONS_DIR / type_name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.split, self.shard_size = split, shard_size
        self.parts: list[Path] = []
        self.count = 0
        self.templates: collections.Counter[str] = collections.Counter()
        self._writer = None
        self._in_shard = 0

    def write(self, record: InstructionRecord) -> None:
        if self._writer is None or self._in_shard >= self.shard_size:
            self._open_next()
        self._writer.write(encode_record(record))
        self._in_shard += 1
        self.count += 1
        self.templates[record.template_id] += 1

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        part = self.folder / f".{self.split}-{len(self.parts):05d}.partial"
        self.parts.append(part)
        self._writer = self._tf.io.TFRecordWriter(str(part))
        self._in_shard = 0

    def close(self) -> list[str]:
        """Closes and names the shards `<split>-k-of-n.tfrecord`; returns their names."""
        if self._writer is not None:
            self._writer.close()
        names = []
        for k, part in enumerate(self.parts):
            name = f"{self.split}-{k:05d}-of-{len(self.parts):05d}.tfrecord"
            os.replace(part, self.folder / name)
            names.append(name)
        return names


def write_instructions(directory: str | os.PathLike,
                       records: Iterable[tuple[str, str, InstructionRecord]],
                       *, shard_size: int = MAX_RECORDS_PER_SHARD) -> dict[str, dict[str, dict]]:
    """Writes (type, split, record) triples into `directory`/instructions/ and returns the
    manifest's "instructions" section. `directory` is the (temporary) dataset directory of an
    atomic write; the manifest itself is written by `write_manifest`."""
    directory = Path(directory)
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    writers: dict[tuple[str, str], _ShardedWriter] = {}
    for type_name, split, record in records:
        writer = writers.get((type_name, split))
        if writer is None:
            writer = writers[(type_name, split)] = _ShardedWriter(directory, type_name, split,
                                                                  shard_size)
        writer.write(record)
    section: dict[str, dict[str, dict]] = {}
    for (type_name, split), writer in sorted(writers.items()):
        files = [f"{INSTRUCTIONS_DIR}/{type_name}/{name}" for name in writer.close()]
        section.setdefault(type_name, {})[split] = {
            "files": files, "num_examples": writer.count,
            "templates": dict(sorted(writer.templates.items()))}
    return section


def write_item_texts(directory: str | os.PathLike, item_texts: Mapping[str, str]) -> str:
    """Writes item id → rendered text (what candidate_targets and constrained decoding use)."""
    path = Path(directory) / ITEM_TEXTS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(item_texts, ensure_ascii=False, indent=0) + "\n")
    return ITEM_TEXTS


def write_manifest(directory: str | os.PathLike, **sections: Any) -> dict[str, Any]:
    """Merges `sections` into `directory`/manifest.json (created if absent) and returns it."""
    path = Path(directory) / MANIFEST
    manifest = read_manifest(directory) if path.exists() else {}
    manifest.update(sections)
    write_text_atomic(path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


# ---- reading ---------------------------------------------------------------------------------

def read_manifest(prepared_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(prepared_dir) / MANIFEST
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, None, "missing; is this a prepared dataset directory? "
                              "(create one with `instructrec prepare`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(path, None, f"not valid UTF-8 JSON ({err})") from None


def instruction_files(prepared_dir: str | os.PathLike, type_name: str, split: str) -> list[Path]:
    """The shard paths of one type and split, from the manifest; KeyError lists what exists."""
    instructions = read_manifest(prepared_dir).get("instructions", {})
    if type_name not in instructions:
        raise KeyError(f"{prepared_dir}: no instruction type {type_name!r}; it has "
                       f"{sorted(instructions)}")
    if split not in instructions[type_name]:
        raise KeyError(f"{prepared_dir}: type {type_name!r} has no split {split!r}; it has "
                       f"{sorted(instructions[type_name])}")
    return [Path(prepared_dir) / f for f in instructions[type_name][split]["files"]]


def split_to_filepattern(prepared_dir: str | os.PathLike, type_name: str) -> dict[str, str]:
    """{split: glob of its shards} for `seqio.TFExampleDataSource(split_to_filepattern=...)`."""
    instructions = read_manifest(prepared_dir).get("instructions", {})
    if type_name not in instructions:
        raise KeyError(f"{prepared_dir}: no instruction type {type_name!r}; it has "
                       f"{sorted(instructions)}")
    folder = Path(prepared_dir) / INSTRUCTIONS_DIR / type_name
    return {split: str(folder / f"{split}-*-of-*.tfrecord") for split in instructions[type_name]}


def read_instructions(prepared_dir: str | os.PathLike, type_name: str,
                      split: str) -> Iterator[InstructionRecord]:
    """The records of one type and split, in written order (pure Python, no TensorFlow)."""
    for path in instruction_files(prepared_dir, type_name, split):
        for index, data in enumerate(_tfrecords(path), start=1):
            try:
                yield decode_record(data)
            except (ValueError, IndexError, UnicodeDecodeError) as err:
                raise DataFormatError(path, None, f"record {index}: {err}") from None


def read_item_texts(prepared_dir: str | os.PathLike) -> dict[str, str]:
    """item id → the text the dataset's renderer writes for it."""
    path = Path(prepared_dir) / ITEM_TEXTS
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, None, "missing; prepare the dataset again") from None
