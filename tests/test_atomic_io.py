"""``trainers.atomic_io``: targets appear complete or not at all; failures leave the old target untouched."""

import json

import pytest

from trainers.atomic_io import require_empty_or_own, staging_dir, staging_file, write_json_atomic, write_text_atomic


def leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if path.name.startswith("."))


def test_staging_dir_replaces_an_existing_dir_only_on_success(tmp_path):
    out = tmp_path / "run"
    with staging_dir(out) as staging:
        assert staging.parent == tmp_path and not out.exists()
        (staging / "a.txt").write_text("first")
    assert (out / "a.txt").read_text() == "first" and oct(out.stat().st_mode & 0o777) == "0o755"

    with staging_dir(out) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(path.name for path in out.iterdir()) == ["b.txt"]  # the old content is gone, not merged

    with pytest.raises(RuntimeError, match="boom"):
        with staging_dir(out) as staging:
            (staging / "c.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(path.name for path in out.iterdir()) == ["b.txt"]
    assert leftovers(tmp_path) == []


def test_write_text_and_json_atomic(tmp_path):
    target = write_json_atomic(tmp_path / "sub" / "r.json", {"auc": 0.5})
    assert json.loads(target.read_text()) == {"auc": 0.5} and target.read_text().endswith("\n")
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    write_text_atomic(target, "replaced")
    assert target.read_text() == "replaced"

    with pytest.raises(ValueError, match="bad"):
        with staging_file(target) as temporary:
            temporary.write_text("half")
            raise ValueError("bad")
    assert target.read_text() == "replaced" and leftovers(target.parent) == []


def test_a_folder_replaced_whole_must_hold_only_its_own_entries(tmp_path):
    """Replacing a folder deletes what is in it: a user's file beside an output's files refuses the replacement; a
    folder written into (a stage's) needs only one entry of its own."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    require_empty_or_own(folder, ("config.json", "*.safetensors"))  # a previous output of the same kind
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds 1 entries this output does not write \(e.g. \['notes.txt'\]\)"):
        require_empty_or_own(folder, ("config.json", "*.safetensors"))
    require_empty_or_own(folder, ("config.json", "*.safetensors"), replaced=False)
    with pytest.raises(ValueError, match=r"holds 3 unrelated entries"):
        require_empty_or_own(folder, ("stage_complete.json",), replaced=False)
    assert (folder / "notes.txt").read_text() == "keep me"
