"""Atomic writers never delete what they did not create."""

from __future__ import annotations

import pytest

from steer._io import atomic_dir, atomic_file, check_writable_dir, write_json_atomic
from steer.cli import main


def _user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return folder


def test_file_writer_refuses_a_folder_and_leaves_it_whole(tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(ValueError, match="is a folder"):
        write_json_atomic(folder, {"x": 1})
    assert (folder / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="is a folder"):
        with atomic_file(folder):
            pytest.fail("the body must not run")


def test_file_writer_replaces_a_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})
    write_json_atomic(target, {"x": 2})
    assert target.read_text().strip().endswith("}") and '"x": 2' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_folder_writer_refuses_a_folder_it_did_not_write(tmp_path):
    folder = _user_folder(tmp_path)
    with pytest.raises(ValueError, match="did not write"):
        with atomic_dir(folder, "made.json"):
            pytest.fail("the body must not run")
    assert (folder / "notes.txt").read_text() == "keep me"


def test_folder_writer_replaces_its_own_folder_in_one_step(tmp_path):
    target = tmp_path / "out"
    for version in ("1", "2"):
        with atomic_dir(target, "made.json") as tmp:
            tmp.mkdir()
            (tmp / "made.json").write_text(version)
    assert (target / "made.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_folder_writer_keeps_the_old_folder_when_the_work_fails(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target, "made.json") as tmp:
        tmp.mkdir()
        (tmp / "made.json").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target, "made.json") as tmp:
            tmp.mkdir()
            raise RuntimeError("boom")
    assert (target / "made.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_writable_check_names_the_cause(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_writable_dir(a_file)
    assert check_writable_dir(tmp_path / "new" / "deep").is_dir()


def test_identify_into_an_existing_folder_writes_inside_it(tmp_stats_dir, tmp_path, capsys):
    folder = _user_folder(tmp_path)
    assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(folder)]) == 0
    assert (folder / "notes.txt").read_text() == "keep me"
    assert (folder / "neurons.json").is_file()
    # --out equal to the stats folder keeps the stats
    before = sorted(p.name for p in tmp_stats_dir.iterdir())
    assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(tmp_stats_dir)]) == 0
    assert set(before) <= {p.name for p in tmp_stats_dir.iterdir()}


@pytest.fixture
def tmp_stats_dir(tiny_stats, tmp_path):
    return tiny_stats.save(tmp_path / "stats")
