"""The SentencePiece vocabulary of a prepared dataset: trained on its own text, or a Flan-T5 one.

Trained vocabularies keep T5's special ids (PAD 0, EOS 1, UNK 2, no BOS) and fall back to bytes
for characters they have not seen, so any title encodes and decodes losslessly. When items are
written as id tokens (render.py), every token becomes one user-defined piece, stored with the
word-boundary mark ("▁<item_12>") so that " <item_12>" in running text is exactly one piece.
`load_vocabulary` adds the 100 T5 sentinel ids on top, as SeqIO does for Flan-T5.
"""

from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Sequence

EXTRA_IDS = 100
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
WORD_BOUNDARY = "\u2581"  # SentencePiece's "▁"
DEFAULT_VOCAB_SIZE = 8000
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


def train_vocabulary(texts: Iterable[str], path: str | os.PathLike,
                     vocab_size: int = DEFAULT_VOCAB_SIZE,
                     user_defined_symbols: Sequence[str] = (), *, max_sentences: int = 2_000_000,
                     log=print) -> int:
    """Trains a unigram SentencePiece model on `texts` and writes it to `path`; returns its size.

    `vocab_size` counts every piece, user-defined symbols included; if the text is too small for
    it, the largest size the trainer accepts is used instead and a message says so. Each of
    `user_defined_symbols` becomes one piece, word-boundary-marked (see the module docstring).
    """
    import sentencepiece as spm

    symbols = [s if s.startswith(WORD_BOUNDARY) else WORD_BOUNDARY + s
               for s in user_defined_symbols]
    if len(set(symbols)) != len(symbols):
        raise ValueError("user_defined_symbols must be distinct")
    minimum = len(symbols) + 3 + 256 + 1  # symbols, specials, byte pieces, at least one more
    size = max(vocab_size, minimum)
    if size != vocab_size:
        log(f"vocabulary: {vocab_size} pieces cannot hold {len(symbols)} item tokens, the special "
            f"ids and 256 byte pieces; using {size}")
    corpus = [t for t in texts if t and t.strip()]
    if not corpus:
        raise ValueError("cannot train a vocabulary on no text")
    while True:
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(corpus), model_writer=model, model_type="unigram",
                vocab_size=size, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
                byte_fallback=True, character_coverage=0.9995,
                user_defined_symbols=symbols, input_sentence_size=max_sentences,
                shuffle_input_sentence=True, max_sentence_length=16384, minloglevel=2,
                num_threads=2)
        except RuntimeError as err:
            match = _TOO_HIGH.search(str(err))
            if not match or int(match.group(2)) >= size:
                raise
            lower = int(match.group(2))
            log(f"vocabulary: the text supports at most {lower} pieces; lowering the requested "
                f"{size} to {lower}")
            size = lower
            continue
        break
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return size


def pieces_missing(path: str | os.PathLike, symbols: Iterable[str]) -> list[str]:
    """The symbols that are not single pieces of the model at `path` (with or without "▁")."""
    import sentencepiece as spm

    processor = spm.SentencePieceProcessor(model_file=str(path))
    unk = processor.unk_id()
    missing = []
    for symbol in symbols:
        bare = symbol.removeprefix(WORD_BOUNDARY)
        if unk == processor.piece_to_id(WORD_BOUNDARY + bare) == processor.piece_to_id(bare):
            missing.append(bare)
    return missing


def copy_vocabulary(source: str | os.PathLike, path: str | os.PathLike,
                    required_symbols: Sequence[str] = ()) -> int:
    """Copies a user-given SentencePiece model (e.g. Flan-T5's spiece.model) to `path`.

    Refuses, with the missing examples named, if `required_symbols` (the id tokens of an id-token
    renderer) are not already pieces of it: a pretrained vocabulary cannot gain pieces without
    resizing the model's embeddings.
    """
    import sentencepiece as spm

    source = Path(source).expanduser()
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such SentencePiece model file")
    try:
        processor = spm.SentencePieceProcessor(model_file=str(source))
    except (RuntimeError, OSError) as err:
        raise ValueError(f"{source}: not a SentencePiece model ({err})") from None
    missing = pieces_missing(source, required_symbols) if required_symbols else []
    if missing:
        raise ValueError(
            f"{source}: {len(missing)} of {len(required_symbols)} item id tokens are not pieces of "
            f"this vocabulary (e.g. {', '.join(missing[:3])}); use the 'title' or 'title_year' "
            "renderer with a pretrained vocabulary, or let prepare train one")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, path)
    return processor.get_piece_size()


def load_vocabulary(path: str | os.PathLike):
    """The dataset's vocabulary as SeqIO uses it: the model plus 100 sentinel ids at the top."""
    import seqio

    return seqio.SentencePieceVocabulary(str(path), extra_ids=EXTRA_IDS)

