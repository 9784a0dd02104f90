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
from instructrec_jax.instructions.generator import GeneratorOptions, iter_instructions
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


class _VocabularySample:
    """Passes records through while keeping a seeded reservoir sample of their texts."""

    def __init__(self, size: int, seed: int):
        self.size, self.rng = size, random.Random(f"{seed}|vocabulary")
        self.texts: list[tuple[str, str]] = []
        self.seen = 0
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.templates: collections.Counter[tuple[str, str]] = collections.Counter()

    def __call__(self, triples):
        for type_name, split, record in triples:
            self.seen += 1
            self.counts[(type_name, split)] += 1
            self.templates[(record.template_id, split)] += 1
            if len(self.texts) < self.size:
                self.texts.append((record.inputs, record.targets))
            else:
                slot = self.rng.randrange(self.seen)
                if slot < self.size:
                    self.texts[slot] = (record.inputs, record.targets)
            yield type_name, split, record


def _vocabulary_corpus(data, item_texts: dict[str, str], sample: _VocabularySample) -> list[str]:
    texts = list(item_texts.values())
    texts += [item.title for item in data.items.values()]
    texts += sorted({c for item in data.items.values() for c in item.categories})
    texts += [t.text for t in TEMPLATES] + [t.target for t in TEMPLATES]
    for inputs, targets in sample.texts:
        texts += (inputs, targets)
    return texts


def _counts_table(sample: _VocabularySample) -> str:
    splits = ("train", "validation", "test")
    lines = ["| instruction type | train | validation | test |", "|---|---:|---:|---:|"]
    for type_name in sorted({t for t, _ in sample.counts}):
        cells = " | ".join(f"{sample.counts.get((type_name, s), 0):,}" for s in splits)
        lines.append(f"| {type_name} | {cells} |")
    lines += ["", "| template | train | validation | test |", "|---|---:|---:|---:|"]
    for template in TEMPLATES:
        cells = " | ".join(f"{sample.templates.get((template.template_id, s), 0):,}"
                           for s in splits)
        lines.append(f"| {template.template_id} ({template.instruction_type}) | {cells} |")
    return "\n".join(lines) + "\n"


def prepare(source: str, path: str | os.PathLike | None = None,
            out_dir: str | os.PathLike | None = None, *, name: str | None = None,
            meta_path: str | os.PathLike | None = None, config=None,
            renderer: ItemRenderer | str = "title", max_title_words: int | None = None,
            types: Sequence[str] | None = None, templates_per_example: int | str = 1,
            max_train_examples_per_type: int | None = None, train_negatives: int = 9,
            context: str | None = None, neg99: str = "scenarios",
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
        context=context, neg99=neg99)
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
        sample = _VocabularySample(VOCAB_SAMPLE_RECORDS, config.seed)
        generated = time.perf_counter()
        section = storage.write_instructions(tmp, sample(iter_instructions(data, options)))
        generated = time.perf_counter() - generated
        storage.write_item_texts(tmp, item_texts)
        if vocabulary is None:
            size = train_vocabulary(_vocabulary_corpus(data, item_texts, sample),
                                    tmp / VOCABULARY_FILE, vocab_size, symbols, log=log)
            vocabulary_source = "trained"
        storage.write_manifest(
            tmp, format_version=MANIFEST_VERSION, name=dataset_name, source=source,
            preprocess=config.as_dict(),
            generator={"seed": options.seed, "types": list(options.types or []) or None,
                       "templates_per_example": options.templates_per_example,
                       "max_train_examples_per_type": options.max_train_examples_per_type,
                       "train_negatives": options.negatives, "neg99": options.neg99,
                       "context": context if isinstance(context, str) or context is None
                       else "custom"},
            renderer=item_renderer.as_dict(), item_texts=storage.ITEM_TEXTS,
            vocabulary=VOCABULARY_FILE, vocabulary_size=size,
            vocabulary_source=vocabulary_source, scenarios=SCENARIOS, instructions=section)
    log(_counts_table(sample))
    log(f"{sample.seen:,} instructions generated and written in {generated:.1f} s "
        f"({sample.seen / max(generated, 1e-9):,.0f}/s); vocabulary: {size} pieces "
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
                vocab_size=args.vocab_size, vocabulary=args.vocabulary, overwrite=args.overwrite)
    except (DataFormatError, FileExistsError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"instructrec prepare: error: {err}", file=sys.stderr)
        return 1
    return 0
