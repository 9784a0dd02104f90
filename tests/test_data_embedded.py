"""The embedded ml-100k: fetched once from PyPI as the recbole wheel, read without importing recbole.

The first test really fetches (PyPI is reachable in CI; the wheel is cached under
$INSTRUCTREC_CACHE or ~/.cache/instructrec_jax, so later runs are offline). The others run on a
copy of that cached wheel, with pip replaced by a stub.
"""

import shutil
import subprocess
import sys

import pytest

from instructrec_jax.data import embedded
from instructrec_jax.data.embedded import WHEEL_NAME, fetch_ml100k, read_embedded_ml100k
from instructrec_jax.data.types import Item


@pytest.fixture(scope="module")
def real_wheel():
    fetch_ml100k()
    return embedded.cache_directory() / "wheels" / WHEEL_NAME


def test_embedded_ml100k_has_the_published_counts(real_wheel):
    data = read_embedded_ml100k()
    assert len({x.user_id for x in data.interactions}) == 943
    assert len(data.items) == 1682
    assert len(data.interactions) == 100_000
    assert data.skipped.as_dict() == {}
    assert data.items["1"] == Item("1", "Toy Story", ("Animation", "Children's", "Comedy"),
                                   year=1995)
    assert data.items["543"].title == "Misérables, Les"
    assert data.users["1"]["occupation"] == "technician"
    assert "recbole" not in sys.modules


def _no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not run when the wheel is cached: {args}")


def test_cached_wheel_is_unpacked_without_pip(real_wheel, tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    shutil.copy(real_wheel, tmp_path / "wheels" / WHEEL_NAME)
    monkeypatch.setattr(subprocess, "run", _no_pip)
    folder = fetch_ml100k(tmp_path)
    assert folder == tmp_path / "ml-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item",
                                                        "ml-100k.user"]
    assert (folder / "ml-100k.inter").read_text().startswith(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949\n")
    # Only the folder and the wheels remain: no temporary directories left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k", "wheels"]


def test_missing_wheel_runs_pip_download_into_the_cache(real_wheel, tmp_path, monkeypatch):
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        destination = command[command.index("-d") + 1]
        shutil.copy(real_wheel, f"{destination}/{WHEEL_NAME}")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    monkeypatch.setenv("INSTRUCTREC_CACHE", str(tmp_path))
    folder = fetch_ml100k()
    assert folder == tmp_path / "ml-100k"
    assert calls[0][:6] == [sys.executable, "-m", "pip", "download", "recbole==1.2.1", "--no-deps"]
    assert (tmp_path / "wheels" / WHEEL_NAME).is_file()
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [WHEEL_NAME]


def test_failed_download_explains_the_offline_route(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "ERROR: No matching distribution found for recbole==1.2.1"))
    with pytest.raises(RuntimeError, match=r"(?s)No matching distribution.*copy "
                       + WHEEL_NAME.replace(".", r"\.")):
        fetch_ml100k(tmp_path)
    assert not (tmp_path / "ml-100k").exists()


def test_corrupt_cached_wheel_is_refused(tmp_path, monkeypatch):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / WHEEL_NAME).write_bytes(b"not a wheel")
    monkeypatch.setattr(subprocess, "run", _no_pip)
    with pytest.raises(RuntimeError, match="SHA-256 .* is not the published"):
        fetch_ml100k(tmp_path)
    assert not (tmp_path / "ml-100k").exists()
