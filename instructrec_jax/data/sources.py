"""One entry point to every reader, chosen by a source kind (what `instructrec prepare` takes)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from instructrec_jax.data.amazon import read_amazon2014, read_amazon2018
from instructrec_jax.data.embedded import read_embedded_ml100k
from instructrec_jax.data.movielens import read_ml100k, read_ml1m
from instructrec_jax.data.recbole_atomic import read_atomic
from instructrec_jax.data.types import RawDataset

SOURCES = frozenset({"amazon2018", "amazon2014", "ml-100k", "ml-1m", "recbole",
                     "embedded-ml-100k"})

_REVIEWS_NAME = re.compile(r"^(?:reviews_)?(?P<category>.+?)(?:_5)?\.json(?:\.gz)?$")


def find_meta_file(reviews_path: str | os.PathLike) -> Path:
    """The metadata file next to a reviews file: `meta_<Category>.json(.gz)`.

    The reviews file may be `<Category>.json(.gz)` (2018) or `reviews_<Category>(_5).json.gz`
    (2014).
    """
    reviews_path = Path(reviews_path)
    match = _REVIEWS_NAME.match(reviews_path.name)
    category = match.group("category") if match else reviews_path.name.split(".")[0]
    candidates = [reviews_path.parent / f"meta_{category}.json{ext}" for ext in (".gz", "")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{reviews_path}: no metadata file next to it (looked for "
                            f"{', '.join(c.name for c in candidates)}); pass meta_path=")


def read_source(kind: str, path: str | os.PathLike | None = None, **options) -> RawDataset:
    """Reads a dataset of the given kind from `path` (a file or folder, see each reader).

    amazon2018/amazon2014: `path` is the reviews file, the metadata is `meta_path=` or found next
    to it; ml-100k/ml-1m: the unpacked folder; recbole: the folder or `<folder>/<name>` prefix;
    embedded-ml-100k: no path (`cache_dir=` optional). Other options go to the reader.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown source kind {kind!r}; expected one of "
                         f"{', '.join(sorted(SOURCES))}")
    if kind == "embedded-ml-100k":
        if path is not None:
            raise ValueError("embedded-ml-100k takes no path (it is fetched into the cache); "
                             "use cache_dir= to choose where")
        return read_embedded_ml100k(**options)
    if path is None:
        raise ValueError(f"source kind {kind!r} needs a path")
    if kind in ("amazon2018", "amazon2014"):
        meta_path = options.pop("meta_path", None) or find_meta_file(path)
        reader = read_amazon2018 if kind == "amazon2018" else read_amazon2014
        return reader(path, meta_path, **options)
    if kind == "ml-100k":
        return read_ml100k(path, **options)
    if kind == "ml-1m":
        return read_ml1m(path, **options)
    return read_atomic(path, **options)
