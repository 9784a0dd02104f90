"""SeqIO tasks and mixtures for prepared InstructRec datasets; importing this module registers them.

For every prepared dataset (a folder with a `manifest.json`, written by `instructrec prepare`)
found under the data directories, this registers:

- `instructrec_<ds>_<type>`: one task per instruction type, e.g. `instructrec_ml100k_p1_i0_t3`
  (sequential recommendation); its `train` split holds training instructions, its `validation` and
  `test` splits (where the type is evaluated) one record per evaluation example and template;
- `instructrec_<ds>_eval_<scenario>`: the paper's evaluation scenarios under readable names
  (`sequential`, `product_search`, `personalized_p2`, `personalized_i1`, `personalized_i2`), with
  their `_neg99` variants where the dataset has 99-negative candidate sets;
- `instructrec_<ds>_all`: the training mixture of every type, rates proportional to example counts.

`<ds>` is the dataset name with everything but letters and digits removed (`ml-100k` → `ml100k`).
The data directories are `$INSTRUCTREC_DATA_DIR` (several joined by `os.pathsep`), defaulting to
`~/.cache/instructrec_jax/prepared`; `register_prepared_dataset(path)` adds one explicitly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path

import seqio

from instructrec_jax.data.types import DataFormatError

DATA_DIR_ENV = "INSTRUCTREC_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/instructrec_jax/prepared").expanduser()
MANIFEST = "manifest.json"
TASK_PREFIX = "instructrec"
NEG99_SUFFIX = "_neg99"
SPLITS = ("train", "validation", "test")

# The readable names of the paper's evaluation scenarios, and their instruction types.
SCENARIOS = {
    "sequential": "p1_i0_t3",
    "product_search": "p0_i2_t3",
    "personalized_p2": "p1p2_i0_t3",
    "personalized_i1": "p1_i1_t3",
    "personalized_i2": "p1_i2_t3",
}

# The training shuffle buffer; SeqIO's default (1,000) barely mixes a file's neighbouring records.
SHUFFLE_BUFFER_SIZE = 50_000


@dataclasses.dataclass(frozen=True)
class RegisteredDataset:
    """What was registered for one prepared dataset."""

    name: str
    path: Path
    tasks: tuple[str, ...]
    eval_tasks: tuple[str, ...]
    mixture: str | None


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """Where a registered task's records come from, with the manifest's counts for each split."""

    dataset_path: Path
    instruction_type: str
    splits: dict  # split -> {"files": [...], "num_examples": n, "templates": {template_id: n}}


_REGISTERED: dict[str, RegisteredDataset] = {}
_TASK_INFO: dict[str, TaskInfo] = {}


def dataset_key(name: str) -> str:
    """The dataset part of task names: lowercase letters and digits only."""
    key = re.sub(r"[^0-9a-z]", "", name.lower())
    if not key:
        raise ValueError(f"dataset name {name!r} has no letters or digits to name tasks after")
    return key


def task_name(dataset: str, type_name: str) -> str:
    return f"{TASK_PREFIX}_{dataset_key(dataset)}_{type_name}"


def eval_task_name(dataset: str, scenario: str) -> str:
    return f"{TASK_PREFIX}_{dataset_key(dataset)}_eval_{scenario}"


def mixture_name(dataset: str) -> str:
    return f"{TASK_PREFIX}_{dataset_key(dataset)}_all"


def data_dirs() -> list[Path]:
    """The folders searched for prepared datasets, in order."""
    value = os.environ.get(DATA_DIR_ENV)
    if not value:
        return [DEFAULT_DATA_DIR]
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p]


def read_manifest(path: Path) -> dict:
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(manifest_path, None, "no manifest.json: not a prepared dataset "
                              "(create one with `instructrec prepare`)") from None
    except json.JSONDecodeError as e:
        raise DataFormatError(manifest_path, e.lineno, f"invalid JSON: {e.msg}") from None
    for key in ("name", "instructions", "vocabulary"):
        if key not in manifest:
            raise DataFormatError(manifest_path, None, f"missing key {key!r}")
    return manifest


def _output_features(vocabulary_path: Path) -> dict[str, seqio.Feature]:
    vocabulary = seqio.SentencePieceVocabulary(str(vocabulary_path), extra_ids=100)
    return {
        "inputs": seqio.Feature(vocabulary=vocabulary, add_eos=True, required=False),
        "targets": seqio.Feature(vocabulary=vocabulary, add_eos=True),
    }


def _register_task(name: str, path: Path, type_name: str, splits: dict, output_features) -> None:
    from instructrec_jax.instructions.storage import FEATURE_DESCRIPTION

    files = {split: [str(path / f) for f in info["files"]] for split, info in splits.items()
             if info.get("num_examples", 0) > 0}
    counts = {split: int(splits[split]["num_examples"]) for split in files}
    source = seqio.TFExampleDataSource(
        split_to_filepattern=files,
        feature_description=FEATURE_DESCRIPTION,
        num_input_examples=counts,
    )
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name,
        source=source,
        output_features=output_features,
        preprocessors=[
            seqio.preprocessors.tokenize,
            seqio.CacheDatasetPlaceholder(),
            seqio.preprocessors.append_eos_after_trim,
        ],
        shuffle_buffer_size=min(SHUFFLE_BUFFER_SIZE, max(counts.values(), default=1)),
    )
    _TASK_INFO[name] = TaskInfo(path, type_name, {s: splits[s] for s in files})


def register_prepared_dataset(path: str | os.PathLike, *, vocabulary_path: str | None = None
                              ) -> RegisteredDataset:
    """Registers the tasks and the mixture of one prepared dataset folder; returns their names.

    Registering the same dataset again replaces its tasks (e.g. after `prepare --overwrite`).
    """
    path = Path(path).expanduser().resolve()
    manifest = read_manifest(path)
    name = manifest["name"]
    vocabulary = Path(vocabulary_path) if vocabulary_path else path / manifest["vocabulary"]
    if not vocabulary.exists():
        raise DataFormatError(path / MANIFEST, None, f"vocabulary file {vocabulary} does not exist")
    features = _output_features(vocabulary)

    tasks, eval_tasks, rates = [], [], []
    for type_name, splits in sorted(manifest["instructions"].items()):
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise DataFormatError(path / MANIFEST, None,
                                  f"instructions.{type_name}: unknown splits {sorted(unknown)}; "
                                  f"expected some of {list(SPLITS)}")
        if not any(info.get("num_examples", 0) for info in splits.values()):
            continue
        tname = task_name(name, type_name)
        _register_task(tname, path, type_name, splits, features)
        tasks.append(tname)
        train_examples = splits.get("train", {}).get("num_examples", 0)
        if train_examples and not type_name.endswith(NEG99_SUFFIX):
            rates.append((tname, float(train_examples)))

    for scenario, type_name in SCENARIOS.items():
        for suffix in ("", NEG99_SUFFIX):
            splits = manifest["instructions"].get(type_name + suffix)
            if not splits:
                continue
            eval_splits = {s: splits[s] for s in ("validation", "test")
                           if splits.get(s, {}).get("num_examples", 0)}
            if not eval_splits:
                continue
            ename = eval_task_name(name, scenario + suffix)
            _register_task(ename, path, type_name + suffix, eval_splits, features)
            eval_tasks.append(ename)

    mixture = None
    if rates:
        mixture = mixture_name(name)
        if mixture in seqio.MixtureRegistry.names():
            seqio.MixtureRegistry.remove(mixture)
        seqio.MixtureRegistry.add(mixture, rates)

    registered = RegisteredDataset(name, path, tuple(tasks), tuple(eval_tasks), mixture)
    _REGISTERED[dataset_key(name)] = registered
    return registered


def register_all(directories: list[Path] | None = None) -> list[RegisteredDataset]:
    """Registers every prepared dataset found directly under the data directories."""
    found = []
    for directory in directories if directories is not None else data_dirs():
        if not directory.is_dir():
            continue
        for child in sorted(directory.iterdir()):
            # Temporary folders of an unfinished `prepare` start with a dot and have no manifest.
            if child.name.startswith(".") or not (child / MANIFEST).is_file():
                continue
            found.append(register_prepared_dataset(child))
    return found


def registered_datasets() -> dict[str, RegisteredDataset]:
    return dict(_REGISTERED)


def registered_names() -> list[str]:
    """Every task and mixture registered by this module, sorted."""
    names = []
    for entry in _REGISTERED.values():
        names.extend(entry.tasks)
        names.extend(entry.eval_tasks)
        if entry.mixture:
            names.append(entry.mixture)
    return sorted(names)


def task_info(name: str) -> TaskInfo:
    """The manifest entry behind a task registered by this module."""
    return _TASK_INFO[name]


def get_task_or_mixture(name: str):
    """`seqio.get_mixture_or_task`, with an error that lists the registered names."""
    try:
        return seqio.get_mixture_or_task(name)
    except ValueError:
        known = registered_names()
        listing = "\n  ".join(known) if known else "(none: run `instructrec prepare` first)"
        raise ValueError(
            f"unknown task or mixture {name!r}. Registered InstructRec tasks and mixtures "
            f"(data dirs: {', '.join(map(str, data_dirs()))}):\n  {listing}") from None


register_all()
