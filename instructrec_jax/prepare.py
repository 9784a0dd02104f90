"""`instructrec prepare`: raw logs → a prepared dataset with instructions and a vocabulary.

One call reads a source, filters and splits it (data/preprocess.py), generates the instruction
records of every type (instructions/generator.py), writes them as TFRecord shards with a
manifest (instructions/storage.py), and trains or copies the SentencePiece vocabulary
(vocabulary.py). Everything is written into a temporary directory that is renamed into place only
when complete, so a crash or a bad input never leaves a half-written dataset under its name.

Layout of `<out-dir>/<name>/`: the files of `write_prepared` (items, sequences, splits, candidate
sets, stats), `instructions/` (shards and item_texts.json), `spiece.model` and `manifest.json`.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import multiprocessing
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from instructrec_jax.atomic import atomic_directory
from instructrec_jax.instructions import storage
from instructrec_jax.instructions.format import SCENARIOS
from instructrec_jax.instructions.generator import (GeneratorOptions, iter_instructions,
                                                    selected_types)
from instructrec_jax.instructions.render import (RENDER_STYLES, ItemRenderer, id_tokens,
                                                 render_catalogue)
from instructrec_jax.instructions.templates import TEMPLATES
from instructrec_jax.vocabulary import DEFAULT_VOCAB_SIZE, copy_vocabulary, train_vocabulary

MANIFEST_VERSION = 1
VOCABULARY_FILE = "spiece.model"
VOCAB_SAMPLE_RECORDS = 4000  # instruction records (inputs + targets) sampled for the vocabulary


def default_data_dir() -> Path:
    """$INSTRUCTREC_DATA_DIR, else ~/.cache/instructrec_jax/prepared."""
    env = os.environ.get("INSTRUCTREC_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "instructrec_jax" / "prepared"


def dataset_folder_name(name: str) -> str:
    """The folder (and SeqIO task) name of a dataset: lower-case letters and digits only."""
    folder = re.sub(r"[^a-z0-9]", "", name.lower())
    if not folder:
        raise ValueError(f"dataset name {name!r} has no letters or digits")
    return folder


class _PerTypeSample:
    """Passes records through while keeping, per type, a seeded reservoir of their texts.

    Per type, so that the vocabulary corpus is the same however types are spread over workers.
    """

    def __init__(self, size_per_type: int, seed: int):
        self.size, self.seed = size_per_type, seed
        self.texts: dict[str, list[tuple[str, str]]] = {}
        self._seen: dict[str, int] = {}
        self._rngs: dict[str, random.Random] = {}

    def __call__(self, triples):
        for type_name, split, record in triples:
            texts = self.texts.setdefault(type_name, [])
            seen = self._seen[type_name] = self._seen.get(type_name, 0) + 1
            if len(texts) < self.size:
                texts.append((record.inputs, record.targets))
            else:
                rng = self._rngs.get(type_name)
                if rng is None:
                    rng = self._rngs[type_name] = random.Random(f"{self.seed}|vocabulary|{type_name}")
                slot = rng.randrange(seen)
                if slot < self.size:
                    texts[slot] = (record.inputs, record.targets)
            yield type_name, split, record


@dataclasses.dataclass
class WrittenInstructions:
    """What `write_all_instructions` wrote: the manifest section and a sample of the texts."""

    section: dict[str, dict[str, dict]]
    texts: dict[str, list[tuple[str, str]]]  # type -> sampled (inputs, targets)
    seconds: float

    @property
    def total(self) -> int:
        return sum(entry["num_examples"] for splits in self.section.values()
                   for entry in splits.values())


def _write_types(directory: Path, data, options: GeneratorOptions, names: Sequence[str],
                 sample_per_type: int):
    sample = _PerTypeSample(sample_per_type, options.seed)
    typed = dataclasses.replace(options, types=tuple(names))
    section = storage.write_instructions(directory, sample(iter_instructions(data, typed)))
    return section, sample.texts


_WORKER_DATA = None  # the prepared data, loaded once per worker process


def _load_worker_data(directory: str) -> None:
    global _WORKER_DATA
    from instructrec_jax.data.preprocess import load_prepared

    _WORKER_DATA = load_prepared(directory)


def _worker_write(job: tuple[str, GeneratorOptions, tuple[str, ...], int]):
    directory, options, names, sample_per_type = job
    return _write_types(Path(directory), _WORKER_DATA, options, names, sample_per_type)


def write_all_instructions(directory: str | os.PathLike, data, options: GeneratorOptions, *,
                           workers: int = 1,
                           sample_records: int = VOCAB_SAMPLE_RECORDS) -> WrittenInstructions:
    """Generates and writes every selected type into `directory` (which must already hold
    `write_prepared`'s files when workers > 1: each worker process loads them).

    Types are independent (each has its own random stream), so spreading them over worker
    processes gives the same shards as one process. `sample_records` texts, spread over the
    types, are kept for the vocabulary.
    """
    directory = Path(directory)
    names = selected_types(data, options.types, options.neg99)
    sample_per_type = max(1, sample_records // max(len(names), 1))
    started = time.perf_counter()
    if workers <= 1 or len(names) <= 1:
        section, texts = _write_types(directory, data, options, names, sample_per_type)
        return WrittenInstructions(section, texts, time.perf_counter() - started)
    if callable(options.context):
        raise ValueError("a context function cannot be sent to worker processes; use workers=1")
    groups = [tuple(names[k::workers]) for k in range(min(workers, len(names)))]
    jobs = [(str(directory), options, group, sample_per_type) for group in groups]
    # spawn, not fork: the parent may hold TensorFlow's threads, which do not survive a fork.
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(groups), initializer=_load_worker_data,
                      initargs=(str(directory),)) as pool:
        results = pool.map(_worker_write, jobs, chunksize=1)
    section: dict[str, dict[str, dict]] = {}
    texts: dict[str, list[tuple[str, str]]] = {}
    for part_section, part_texts in results:
        section.update(part_section)
        texts.update(part_texts)
    return WrittenInstructions(dict(sorted(section.items())), texts,
                               time.perf_counter() - started)


def _vocabulary_corpus(data, item_texts: dict[str, str], written: WrittenInstructions) -> list[str]:
    texts = list(item_texts.values())
    texts += [item.title for item in data.items.values()]
    texts += sorted({c for item in data.items.values() for c in item.categories})
    texts += [t.text for t in TEMPLATES] + [t.target for t in TEMPLATES]
    for type_name in sorted(written.texts):
        for inputs, targets in written.texts[type_name]:
            texts += (inputs, targets)
    return texts


def _counts_table(section: dict[str, dict[str, dict]]) -> str:
    splits = ("train", "validation", "test")
    lines = ["| instruction type | train | validation | test |", "|---|---:|---:|---:|"]
    templates: collections.Counter[tuple[str, str]] = collections.Counter()
    for type_name in sorted(section):
        entry = section[type_name]
        cells = " | ".join(f"{entry.get(s, {}).get('num_examples', 0):,}" for s in splits)
        lines.append(f"| {type_name} | {cells} |")
        for split, info in entry.items():
            for template_id, n in info["templates"].items():
                templates[(template_id, split)] += n
    lines += ["", "| template | train | validation | test |", "|---|---:|---:|---:|"]
    for template in TEMPLATES:
        cells = " | ".join(f"{templates.get((template.template_id, s), 0):,}" for s in splits)
        lines.append(f"| {template.template_id} ({template.instruction_type}) | {cells} |")
    return "\n".join(lines) + "\n"


def prepare(source: str, path: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, *, name: str | None = None,
            meta_path: str | os.PathLike | None = None, config=None,
            renderer: ItemRenderer | str = "title", max_title_words: int | None = None,
            types: Sequence[str] | None = None, templates_per_example: int | str = 1,
            max_train_examples_per_type: int | None = None, train_negatives: int = 9,
            context: str | None = None, neg99: str = "scenarios",
            max_eval_examples: int | None = None, train_passes: int = 1,
            train_negative_popularity: float = 0.0,
            train_popular_negatives: int | None = None,
            train_related_negatives: int | None = None, train_next_items: int = 1,
            workers: int = 1,
            vocab_size: int = DEFAULT_VOCAB_SIZE,
            vocabulary: str | os.PathLike | None = None, overwrite: bool = False,
            reader_options: dict | None = None, log: Callable[[str], None] = print) -> Path:
    """Prepares one dataset and returns its directory `<out_dir>/<folder name>`.

    `config` is a `PreprocessConfig` (k-core, history length, candidate counts, seed; its seed
    also seeds the generator). `vocabulary` is a SentencePiece model to copy (e.g. Flan-T5's
    spiece.model) instead of training one of `vocab_size` pieces on the dataset's text.
    """
    from instructrec_jax.data.preprocess import PreprocessConfig, prepare_data, write_prepared
    from instructrec_jax.data.sources import read_source

    config = config or PreprocessConfig()
    item_renderer = renderer if isinstance(renderer, ItemRenderer) else ItemRenderer(
        renderer, max_title_words)
    options = GeneratorOptions(
        seed=config.seed, types=None if types is None else tuple(types), renderer=item_renderer,
        templates_per_example=templates_per_example,
        max_train_examples_per_type=max_train_examples_per_type, negatives=train_negatives,
        context=context, neg99=neg99, max_eval_examples=max_eval_examples,
        train_passes=train_passes, negative_popularity=train_negative_popularity,
        popular_negatives=train_popular_negatives, related_negatives=train_related_negatives,
        train_next_items=train_next_items)
    out_dir = Path(out_dir).expanduser() if out_dir is not None else default_data_dir()
    started = time.perf_counter()

    options_for_reader = dict(reader_options or {})
    if meta_path is not None:
        options_for_reader["meta_path"] = meta_path
    raw = read_source(source, path, **options_for_reader)
    dataset_name = name or raw.name
    final = out_dir / dataset_folder_name(dataset_name)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} already exists; pass --overwrite to replace it")
    data = prepare_data(raw, config)
    data.name = dataset_name
    log(data.stats_markdown())

    item_texts = render_catalogue(data.items, item_renderer)
    symbols = id_tokens(data.items) if item_renderer.uses_id_tokens else ()
    with atomic_directory(final, overwrite=overwrite) as tmp:
        if vocabulary is not None:  # checked first: a refused vocabulary should fail fast
            size = copy_vocabulary(vocabulary, tmp / VOCABULARY_FILE, symbols)
            vocabulary_source = str(vocabulary)
        write_prepared(data, tmp)
        written = write_all_instructions(tmp, data, options, workers=workers,
                                         sample_records=VOCAB_SAMPLE_RECORDS)
        storage.write_item_texts(tmp, item_texts)
        if vocabulary is None:
            size = train_vocabulary(_vocabulary_corpus(data, item_texts, written),
                                    tmp / VOCABULARY_FILE, vocab_size, symbols, log=log)
            vocabulary_source = "trained"
        storage.write_manifest(
            tmp, format_version=MANIFEST_VERSION, name=dataset_name, source=source,
            preprocess=config.as_dict(),
            generator={"seed": options.seed, "types": list(options.types or []) or None,
                       "templates_per_example": options.templates_per_example,
                       "max_train_examples_per_type": options.max_train_examples_per_type,
                       "train_negatives": options.negatives, "neg99": options.neg99,
                       "max_eval_examples": options.max_eval_examples,
                       "train_passes": options.train_passes,
                       "train_negative_popularity": options.negative_popularity,
                       "train_popular_negatives": options.popular_negatives,
                       "train_related_negatives": options.related_negatives,
                       "train_next_items": options.train_next_items,
                       "context": context if isinstance(context, str) or context is None
                       else "custom"},
            renderer=item_renderer.as_dict(), item_texts=storage.ITEM_TEXTS,
            vocabulary=VOCABULARY_FILE, vocabulary_size=size,
            vocabulary_source=vocabulary_source, scenarios=SCENARIOS,
            instructions=written.section)
    log(_counts_table(written.section))
    log(f"{written.total:,} instructions generated and written in {written.seconds:.1f} s "
        f"({written.total / max(written.seconds, 1e-9):,.0f}/s, {workers} worker(s)); "
        f"vocabulary: {size} pieces "
        f"({vocabulary_source}); total {time.perf_counter() - started:.1f} s")
    log(f"prepared dataset: {final}")
    return final


def _templates_per_example(value: str) -> int | str:
    if value == "all":
        return value
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {value!r}")
    return number


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}")


def _parser() -> argparse.ArgumentParser:
    from instructrec_jax.data.sources import SOURCES

    parser = argparse.ArgumentParser(
        prog="instructrec prepare",
        description="Read raw logs, filter and split them, generate the instruction records and "
                    "the vocabulary, and write the prepared dataset atomically.")
    parser.add_argument("--source", required=True, choices=sorted(SOURCES))
    parser.add_argument("--path", help="reviews file (amazon), folder (movielens, recbole)")
    parser.add_argument("--meta-path", help="amazon metadata file (default: found next to --path)")
    parser.add_argument("--name", help="dataset name (default: the source's); the folder is its "
                                       "letters and digits, lower-cased")
    parser.add_argument("--out-dir", help="where datasets live (default: $INSTRUCTREC_DATA_DIR or "
                                          "~/.cache/instructrec_jax/prepared)")
    parser.add_argument("--min-interactions", type=int, default=5, help="k of the k-core filter")
    parser.add_argument("--max-history", type=int, default=20)
    parser.add_argument("--negatives", type=_int_list, default=(9, 99),
                        help="negatives per evaluation candidate set, comma-separated (9,99)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--renderer", choices=RENDER_STYLES, default="title",
                        help="how items are written in instructions")
    parser.add_argument("--max-title-words", type=int, default=None)
    parser.add_argument("--types", type=lambda v: tuple(t for t in v.split(",") if t),
                        default=None, help="comma-separated instruction types (default: all)")
    parser.add_argument("--templates-per-example", type=_templates_per_example, default=1,
                        help="templates drawn per training example and type, or 'all'")
    parser.add_argument("--max-train-examples-per-type", type=int, default=None,
                        help="cap on training examples per type (seeded sample; default: all)")
    parser.add_argument("--train-negatives", type=int, default=9,
                        help="negatives listed in training reranking instructions")
    parser.add_argument("--context", choices=("none", "time"), default="none",
                        help="prefix each instruction with a context sentence")
    parser.add_argument("--neg99", choices=("scenarios", "all", "none"), default="scenarios",
                        help="which reranking types also get 99-negative evaluation records "
                             "(100 candidates listed per record)")
    parser.add_argument("--max-eval-examples", type=int, default=None,
                        help="cap on validation/test examples per split (a seeded sample of "
                             "users shared by every type; default: all)")
    parser.add_argument("--train-passes", type=int, default=1,
                        help="visit the training examples this many times, each pass with fresh "
                             "templates, negatives and order (for runs of several epochs)")
    parser.add_argument("--train-negative-popularity", type=float, default=0.0, metavar="BETA",
                        help="draw training negatives with probability ∝ (training count + 1)^BETA "
                             "(0: uniform, as the evaluation sets; 1: as popular as true items)")
    parser.add_argument("--train-popular-negatives", type=int, default=None, metavar="K",
                        help="with --train-negative-popularity, draw only K of each training "
                             "record's negatives that way and the rest uniformly (default: all)")
    parser.add_argument("--train-related-negatives", type=int, default=None, metavar="K",
                        help="draw K of each training record's negatives among the 50 items most "
                             "co-occurring in training with the history's last 5 items, the rest "
                             "as usual (default: none)")
    parser.add_argument("--train-next-items", type=int, default=1, metavar="K",
                        help="sequential T2/T3 training targets: the true item and the user's next "
                             "K-1 training items (evaluate with --gin.SCORE_EOS=False); default 1")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes generating and writing types in parallel (same output)")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    parser.add_argument("--vocabulary", help="a SentencePiece model to use instead of training one "
                                             "(e.g. Flan-T5's spiece.model)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    return parser


def main(argv: list[str] | None = None) -> int:
    from instructrec_jax.data.preprocess import PreprocessConfig
    from instructrec_jax.data.types import DataFormatError

    args = _parser().parse_args(argv)
    try:
        config = PreprocessConfig(min_interactions=args.min_interactions,
                                  max_history=args.max_history, negatives=args.negatives,
                                  seed=args.seed)
        prepare(args.source, args.path, args.out_dir, name=args.name, meta_path=args.meta_path,
                config=config, renderer=args.renderer, max_title_words=args.max_title_words,
                types=args.types, templates_per_example=args.templates_per_example,
                max_train_examples_per_type=args.max_train_examples_per_type,
                train_negatives=args.train_negatives,
                context=None if args.context == "none" else args.context, neg99=args.neg99,
                max_eval_examples=args.max_eval_examples, train_passes=args.train_passes,
                train_negative_popularity=args.train_negative_popularity,
                train_popular_negatives=args.train_popular_negatives,
                train_related_negatives=args.train_related_negatives,
                train_next_items=args.train_next_items, workers=args.workers,
                vocab_size=args.vocab_size, vocabulary=args.vocabulary, overwrite=args.overwrite)
    except (DataFormatError, FileExistsError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"instructrec prepare: error: {err}", file=sys.stderr)
        return 1
    return 0
