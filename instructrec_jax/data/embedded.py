"""The embedded default dataset: ml-100k as shipped inside the `recbole==1.2.1` wheel.

The wheel is fetched once with `pip download recbole==1.2.1 --no-deps` into
`<cache>/wheels/` (so nothing is installed and recbole is never imported), and the three atomic
files under `recbole/dataset_example/ml-100k/` are unpacked from the zip into `<cache>/ml-100k/`.
The cache is `$INSTRUCTREC_CACHE`, or `~/.cache/instructrec_jax`. Offline machines can copy the
wheel into `<cache>/wheels/` by hand; its SHA-256 is checked either way.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from instructrec_jax.atomic import atomic_directory
from instructrec_jax.data.recbole_atomic import read_atomic
from instructrec_jax.data.types import RawDataset

REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


def cache_directory(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: the argument, else $INSTRUCTREC_CACHE, else ~/.cache/instructrec_jax."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("INSTRUCTREC_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "instructrec_jax"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(wheels: Path) -> Path:
    """Runs pip download into a temporary folder and moves the wheel into `wheels` atomically."""
    wheels.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    try:
        command = [sys.executable, "-m", "pip", "download", REQUIREMENT, "--no-deps",
                   "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(tmp)]
        result = subprocess.run(command, capture_output=True, text=True)
        downloaded = tmp / WHEEL_NAME
        if result.returncode != 0 or not downloaded.is_file():
            raise RuntimeError(
                f"could not fetch the embedded ml-100k: `{' '.join(command)}` failed "
                f"(exit {result.returncode}):\n{result.stderr.strip()[-2000:]}\n"
                f"Without network, copy {WHEEL_NAME} into {wheels}/ and run again.")
        os.replace(downloaded, wheels / WHEEL_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return wheels / WHEEL_NAME


def fetch_ml100k(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding ml-100k.{inter,item,user}, fetching and unpacking them when absent."""
    cache = cache_directory(cache_dir)
    target = cache / "ml-100k"
    if all((target / name).is_file() for name in FILES):
        return target
    wheel = cache / "wheels" / WHEEL_NAME
    if not wheel.is_file():
        wheel = _download_wheel(wheel.parent)
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: SHA-256 {digest} is not the published {WHEEL_SHA256}; "
                           "delete the file and run again to download it afresh")
    with zipfile.ZipFile(wheel) as archive, atomic_directory(target, overwrite=True) as tmp:
        for name in FILES:
            with archive.open(MEMBER_DIR + name) as source, open(tmp / name, "wb") as out:
                shutil.copyfileobj(source, out)
    return target


def read_embedded_ml100k(cache_dir: str | os.PathLike | None = None) -> RawDataset:
    """ml-100k from the recbole wheel: 943 users, 1,682 items, 100,000 ratings."""
    return read_atomic(fetch_ml100k(cache_dir), name="ml-100k")
