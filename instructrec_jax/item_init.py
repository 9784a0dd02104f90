"""Item-token embeddings initialised from the training log's next-item statistics (issue 6).

With the `id_token` renderer every item is one vocabulary piece, so the model has one input
embedding row and one output (logits) column per item. A randomly initialised model must learn
from scratch which items follow which; the training log already says it. This initialiser counts,
over the training examples only (never a validation or test target), how often item t is the next
item after item h appeared in the last `window` positions of the history, turns the counts into
positive pointwise mutual information (PPMI) and factorises it with a truncated SVD,
PPMI ≈ U·S·Vᵀ. The history side U·√S becomes the item rows of the input embedding and the target
side V·√S the item columns of the output projection, so that a decoder state equal to the sum of
the history's input embeddings would score item t by Σ_h PPMI(h, t): an item-to-item
recommender the network starts from instead of discovering it. Both sides are rescaled to the
root-mean-square of the random initialisation they replace, so the optimiser sees familiar scales.
Tokens that are not items (words, EOS, sentinels) keep their random initialisation.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import gin
import numpy as np

from instructrec_jax.data.preprocess import load_prepared
from instructrec_jax.data.types import SplitExample
# Imported here, not when called: gin locks its registry once the config is parsed.
from instructrec_jax.evaluate import resolve_dataset
from instructrec_jax.instructions.storage import read_manifest
from instructrec_jax.vocabulary import load_vocabulary

log = logging.getLogger("instructrec_jax.item_init")


def next_item_counts(train: Sequence[SplitExample], index: Mapping[str, int], window: int) -> np.ndarray:
    """C[h, t]: training examples whose target t follows h within the history's last `window` items
    (each history item counted once per example)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    counts = np.zeros((len(index), len(index)), np.float64)
    for example in train:
        target = index.get(example.target)
        if target is None:
            continue
        for h in set(example.history[-window:]):
            row = index.get(h)
            if row is not None and row != target:
                counts[row, target] += 1.0
    return counts


def ppmi(counts: np.ndarray) -> np.ndarray:
    """Positive pointwise mutual information of a count matrix (zero rows and columns stay zero)."""
    total = counts.sum()
    if total <= 0:
        return np.zeros_like(counts)
    rows = counts.sum(axis=1, keepdims=True)
    cols = counts.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(counts * total / (rows * cols))
    return np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)


def factorise(matrix: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(U·√S, V·√S) of the rank-`dim` truncated SVD; columns beyond the matrix's rank are zero."""
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    k = min(dim, len(s))
    root = np.sqrt(s[:k])
    left = np.zeros((matrix.shape[0], dim))
    right = np.zeros((matrix.shape[1], dim))
    left[:, :k] = u[:, :k] * root
    right[:, :k] = vt[:k].T * root
    return left, right


def _rescaled(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(values))))
    target = float(np.sqrt(np.mean(np.square(like))))
    return values * (target / rms) if rms > 0 else values


def _prepared_items(dataset: str):
    """(prepared data, its items sorted, each item's single vocabulary id) of a prepared dataset."""
    path, _ = resolve_dataset(dataset, None)
    data = load_prepared(path)
    manifest = read_manifest(Path(path))
    tokenizer = load_vocabulary(Path(path) / manifest.get("vocabulary", "spiece.model"))
    items = sorted(data.items)
    return data, items, item_token_ids(tokenizer, items)


def item_token_ids(tokenizer, item_ids: Sequence[str]) -> list[int]:
    """The single vocabulary id of each item's id token; an error if one is not a single piece."""
    from instructrec_jax.instructions.render import id_token

    ids = []
    for item in item_ids:
        pieces = [p for p in tokenizer.encode(id_token(item))]
        if len(pieces) != 1:
            raise ValueError(f"item {item!r}: its id token {id_token(item)!r} is {len(pieces)} pieces "
                             f"({pieces}) in this vocabulary; item-token initialisation (PPMI or "
                             "SASRec) needs a dataset prepared with --renderer id_token (or title_id)")
        ids.append(int(pieces[0]))
    return ids


def apply_item_factors(params: Mapping[str, Any], token_ids: Sequence[int], history_side: np.ndarray,
                       target_side: np.ndarray) -> dict:
    """A copy of `params` with the item rows of `token_embedder/embedding` and item columns of
    `decoder/logits_dense/kernel` replaced by the (rescaled) factors."""
    params = {k: dict(v) if isinstance(v, Mapping) else v for k, v in params.items()}
    embedding = np.array(params["token_embedder"]["embedding"], copy=True)
    ids = np.asarray(token_ids)
    embedding[ids] = _rescaled(history_side, embedding[ids]).astype(embedding.dtype)
    params["token_embedder"] = {**params["token_embedder"], "embedding": embedding}
    decoder = dict(params["decoder"])
    if "logits_dense" in decoder:  # untied output (T5.1.1 / Flan-T5)
        kernel = np.array(decoder["logits_dense"]["kernel"], copy=True)
        kernel[:, ids] = _rescaled(target_side, kernel[:, ids]).T.astype(kernel.dtype)
        decoder["logits_dense"] = {**decoder["logits_dense"], "kernel": kernel}
        params["decoder"] = decoder
    return params


@gin.configurable
@dataclasses.dataclass(frozen=True)
class CooccurrenceItemInit:
    """A trainer parameter initialiser (`train.param_initializers`): item-token embeddings from the
    PPMI of next-item counts in `dataset`'s training split (see the module docstring).

    dataset: a prepared dataset folder (or name under $INSTRUCTREC_DATA_DIR) whose vocabulary the
    model uses; window: how many of the last history items count as preceding the target.
    """

    dataset: str = gin.REQUIRED
    window: int = 5

    def __call__(self, params: Mapping[str, Any]) -> dict:
        data, items, token_ids = _prepared_items(self.dataset)
        counts = next_item_counts(data.train, {item: i for i, item in enumerate(items)}, self.window)
        dim = int(np.shape(params["token_embedder"]["embedding"])[1])
        history_side, target_side = factorise(ppmi(counts), dim)
        log.info("item embeddings of %d items initialised from next-item PPMI (%d training "
                 "examples, window %d, rank %d)", len(items), len(data.train), self.window, dim)
        return apply_item_factors(params, token_ids, history_side, target_side)


def sasrec_item_vectors(train: Sequence[SplitExample], items: Sequence[str], dim: int, *,
                        hidden: int | None = None, epochs: int = 40, seed: int = 0) -> np.ndarray:
    """[len(items), dim]: the item embeddings of a SASRec trained on `train` for a fixed number of
    epochs (no validation split, so no early stopping and nothing of a validation target), zero
    beyond its width `hidden` (default `dim`)."""
    from instructrec_jax.baselines.sasrec import fit_sasrec

    hidden = dim if hidden is None else hidden
    if not 0 < hidden <= dim:
        raise ValueError(f"SASRec width {hidden} must be in 1..{dim} (the model's embedding width)")
    model = fit_sasrec(train, items, hidden=hidden, epochs=epochs, seed=seed)
    table = np.asarray(model.params["item_embedding"]["embedding"], np.float64)
    vectors = np.zeros((len(items), dim))
    vectors[:, :hidden] = table[[model.index[item] for item in items]]
    return vectors


@gin.configurable
@dataclasses.dataclass(frozen=True)
class SASRecItemInit:
    """A trainer parameter initialiser (`train.param_initializers`): item-token embeddings from a
    SASRec trained on `dataset`'s training split, as collaborative item representations handed to
    a language model (the idea of LLaRA and CoLLM).

    SASRec shares one item table between its input and its output, so the same vector becomes the
    item's input-embedding row and its output-projection column (each side rescaled to the random
    initialisation's root-mean-square, as for the PPMI factors). The T5 still learns its own
    encoder, decoder and the mapping from its decoder state onto these vectors; the item geometry,
    rare items' included, is what it starts from. The SASRec is trained here, on the training
    split only, for `epochs` epochs (no early stopping: validation targets are not read), with
    `seed`; `hidden` (default: the model's width) may be smaller, the rest of each vector is zero.
    """

    dataset: str = gin.REQUIRED
    epochs: int = 40
    hidden: int | None = None
    seed: int | None = 0  # None (a run with a fresh seed): 0


    def __call__(self, params: Mapping[str, Any]) -> dict:
        data, items, token_ids = _prepared_items(self.dataset)
        dim = int(np.shape(params["token_embedder"]["embedding"])[1])
        seed = 0 if self.seed is None else self.seed
        vectors = sasrec_item_vectors(data.train, items, dim, hidden=self.hidden, epochs=self.epochs,
                                      seed=seed)
        log.info("item embeddings of %d items initialised from a SASRec (%d training examples, "
                 "%d epochs, width %d, seed %d)", len(items), len(data.train), self.epochs,
                 self.hidden or dim, seed)
        return apply_item_factors(params, token_ids, vectors, vectors)
