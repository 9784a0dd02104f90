"""Atomic outputs never leave a half-written result under the final name."""

import pytest

from instructrec_jax.atomic import atomic_directory, atomic_file, write_text_atomic


class Boom(RuntimeError):
    pass


def test_directory_appears_only_when_complete(tmp_path):
    final = tmp_path / "prepared"
    with atomic_directory(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_failed_directory_leaves_nothing(tmp_path):
    final = tmp_path / "prepared"
    with pytest.raises(Boom):
        with atomic_directory(final) as tmp:
            (tmp / "a.txt").write_text("x")
            raise Boom()
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_kept_unless_overwrite(tmp_path):
    final = tmp_path / "prepared"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_directory(final):
            pass
    with pytest.raises(Boom):
        with atomic_directory(final, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
            raise Boom()
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    with atomic_directory(final, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]


def test_failed_file_keeps_previous_content(tmp_path):
    final = tmp_path / "out.jsonl"
    write_text_atomic(final, "first\n")
    with pytest.raises(Boom):
        with atomic_file(final) as handle:
            handle.write("partial")
            raise Boom()
    assert final.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
