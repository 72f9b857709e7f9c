"""``trainers.atomic_io``: targets appear complete or not at all; failures leave the old target untouched."""

import json

import pytest

from trainers.atomic_io import staging_dir, staging_file, write_json_atomic, write_text_atomic


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
