"""A data import is atomic: a kill or a full disk during a (re-)import leaves the previous dataset whole (or none),
never a broken one beside an old ``stats.json``; rerunning the command finishes it."""

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import DatasetDict

from data_scripts.io import load_dataset_dict
from test_data_collm import collm_frame
from trainers.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def collm_dir(tmp_path):
    collm_frame().to_pickle(tmp_path / "train.pkl")
    valid = collm_frame(0.0, uids=(1, 3, 2, 3), iids=(2, 3, 4, 1), labels=(1, 0, 0, 1), not_cold=0)
    valid.to_pickle(tmp_path / "valid.pkl")
    return tmp_path


def import_argv(folder, out):
    return ["data", "import-collm", "--allow-pickle", "--train", str(folder / "train.pkl"),
            "--valid", str(folder / "valid.pkl"), "--out", str(out)]


def snapshot(out: Path) -> dict:
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def hidden_siblings(out: Path) -> list[str]:
    return [path.name for path in out.parent.iterdir() if path.name.startswith(f".{out.name}.")]


def test_full_disk_during_a_reimport_keeps_the_old_dataset(collm_dir, monkeypatch):
    out = collm_dir / "data"
    assert main(import_argv(collm_dir, out)) == 0
    before = snapshot(out)

    def no_space(self, path, *args, **kwargs):
        Path(path, "train").mkdir(parents=True)
        Path(path, "train", "data-00000-of-00001.arrow").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(DatasetDict, "save_to_disk", no_space)
    assert main(import_argv(collm_dir, out)) == 2
    assert snapshot(out) == before and hidden_siblings(out) == []
    monkeypatch.undo()
    assert len(load_dataset_dict(out)["train"]) == 4


@pytest.mark.parametrize("reimport", [False, True])
def test_kill_9_during_an_import_then_rerun(reimport, collm_dir):
    out = collm_dir / "data"
    if reimport:
        assert main(import_argv(collm_dir, out)) == 0
    before = snapshot(out) if reimport else None
    command = [sys.executable, str(REPO / "tests" / "kill_points.py"), "datasets", "DatasetDict.save_to_disk",
               "after:1", "--", *import_argv(collm_dir, out)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-2000:]
    if reimport:
        assert snapshot(out) == before  # the old dataset, whole
    else:
        assert not out.exists()  # nothing that looks like a dataset
    assert hidden_siblings(out)  # the killed writer's staging folder is left ...
    assert main(import_argv(collm_dir, out)) == 0
    assert hidden_siblings(out) == []  # ... and removed by the rerun, its process being gone
    stats = json.loads((out / "stats.json").read_text())
    assert stats["splits"]["train"]["rows"] == 4 and len(load_dataset_dict(out)["valid"]) == 4


def test_import_refuses_a_folder_of_unrelated_files(collm_dir, caplog):
    out = collm_dir / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(import_argv(collm_dir, out)) == 2
    assert (out / "notes.txt").read_text() == "keep me" and "unrelated" in caplog.text


def test_stale_staging_of_a_live_process_is_kept(tmp_path):
    from trainers.atomic_io import remove_stale_staging

    live = tmp_path / f".data.{os.getpid()}.abc"
    dead = tmp_path / ".data.999999999.abc"
    live.mkdir()
    dead.mkdir()
    remove_stale_staging(tmp_path / "data")
    assert live.exists() and not dead.exists()
