"""Atomic writers never delete what they did not create."""

from __future__ import annotations

import pytest

from steer._io import OUT_MARKER, atomic_dir, atomic_file, prepare_out, read_out_marker, remove_owned, write_json_atomic
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


def test_output_rule_accepts_new_empty_and_own_folders_and_creates_nothing_early(tmp_path):
    fresh = prepare_out(tmp_path / "new" / "deep", "collect")
    assert not fresh.exists(), "prepare_out made the folder before anything was written"
    write_json_atomic(fresh / "stats.json", {"x": 1})
    assert read_out_marker(fresh)["files"] == ["stats.json"] and read_out_marker(fresh)["verb"] == "collect"
    assert prepare_out(fresh, "collect") == fresh  # a folder steer made for the same verb
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_out(empty, "bench") == empty


@pytest.mark.parametrize("make, message", [
    (lambda root: _user_folder(root), r"steer did not write \(it holds notes\.txt\)"),
    (lambda root: _dotfiles(root), r"steer did not write \(it holds \.env, \.git\)"),
    (lambda root: _a_file(root), r"is a file; --out must be a folder"),
    (lambda root: _made_by(root, "collect"), r"holds the output of `steer collect`; give a new or empty folder for `steer bench`"),
])
def test_output_rule_refuses_what_is_not_steers_for_this_verb(tmp_path, make, message):
    target = make(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=message):
        prepare_out(target, "bench")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("out", ["", "   ", None])
def test_output_rule_refuses_an_empty_path(out):
    with pytest.raises(ValueError, match=r"--out is empty \(an unset shell variable\?\)"):
        prepare_out(out, "collect")


@pytest.mark.parametrize("where, how", [(".", "is"), ("inside", "sits inside"), ("..", "contains")])
def test_output_rule_refuses_an_output_overlapping_an_input(tmp_path, where, how):
    source = tmp_path / "data"
    source.mkdir()
    out = {".": source, "inside": source / "inside", "..": tmp_path}[where]
    with pytest.raises(ValueError, match=rf"--out '.*' {how} the input '.*data'"):
        prepare_out(out, "collect", inputs=[source])


def test_inside_its_folder_steer_replaces_only_its_own_files(tmp_path):
    out = prepare_out(tmp_path / "run", "bench")
    write_json_atomic(out / "report.json", {"v": 1})
    (out / "notes.txt").write_text("mine")  # the user adds a file later ...
    (out / "summary.json").write_text("also mine")  # ... with a name steer might want
    write_json_atomic(out / "report.json", {"v": 2})  # its own file: replaced
    with pytest.raises(ValueError, match=r"summary\.json' is in steer's output folder .* steer did not write it"):
        write_json_atomic(out / "summary.json", {"v": 3})
    assert (out / "summary.json").read_text() == "also mine" and (out / "notes.txt").read_text() == "mine"
    write_json_atomic(out / "sub" / "a.json", {})
    (out / "sub" / "user.txt").write_text("keep")
    remove_owned(out / "sub")  # deletes what steer wrote there, and nothing else
    assert not (out / "sub" / "a.json").exists() and (out / "sub" / "user.txt").read_text() == "keep"
    assert "sub/a.json" not in read_out_marker(out)["files"]


def test_a_damaged_marker_is_a_clear_error(tmp_path):
    out = prepare_out(tmp_path / "run", "bench")
    write_json_atomic(out / "a.json", {})
    (out / OUT_MARKER).write_text("{not json")
    with pytest.raises(ValueError, match=r"\.steer-out\.json' is damaged"):
        prepare_out(out, "bench")


def test_identify_out_follows_the_rule(tmp_stats_dir, tmp_path, capsys):
    folder = _user_folder(tmp_path)
    assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(folder)]) == 2
    assert "steer did not write" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    notes = tmp_path / "thesis.json"
    notes.write_text('{"chapter": 1}')
    assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(notes)]) == 2
    assert "is not a neuron set steer wrote" in capsys.readouterr().err and notes.read_text() == '{"chapter": 1}'
    before = sorted(p.name for p in tmp_stats_dir.iterdir())
    for out in (tmp_stats_dir, tmp_stats_dir / "neurons.json", tmp_stats_dir / "stats.safetensors"):
        assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(out)]) == 2
        assert "the input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_stats_dir.iterdir()) == before
    for _ in range(2):  # a new folder, then the same folder again
        assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(tmp_path / "ns")]) == 0
    for _ in range(2):  # a new .json file, then the same file again
        assert main(["identify", str(tmp_stats_dir), "--method", "lape", "--out", str(tmp_path / "n.json")]) == 0


def _dotfiles(root):
    folder = root / "repo"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / ".env").write_text("SECRET=1")
    return folder


def _a_file(root):
    path = root / "taken"
    path.write_text("a file")
    return path


def _made_by(root, verb):
    out = prepare_out(root / "made", verb)
    write_json_atomic(out / "x.json", {})
    return out


def _snapshot(root):
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def tmp_stats_dir(tiny_stats, tmp_path):
    return tiny_stats.save(tmp_path / "stats")


def _write_many(out, rank, n):
    for i in range(n):
        write_json_atomic(out / "checkpoint" / f"rank{rank}-{i}.json", {"i": i})


def test_processes_writing_into_one_folder_lose_no_listing(tmp_path):
    """torchrun ranks write their checkpoints into one output folder at once: every file stays listed."""
    import multiprocessing

    out = prepare_out(tmp_path / "run", "collect")
    write_json_atomic(out / "stats.json", {})
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_many, args=(out, rank, 25)) for rank in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert all(worker.exitcode == 0 for worker in workers)
    listed = set(read_out_marker(out)["files"])
    assert {f"checkpoint/rank{r}-{i}.json" for r in range(3) for i in range(25)} <= listed
