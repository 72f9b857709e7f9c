"""``cl3mrec data ...`` through a local argparse harness, and the download error path (no network)."""

import argparse
import logging
import urllib.error
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from data_scripts import download
from data_scripts.cli import register
from data_scripts.download import DownloadError, download_dataset
from data_scripts.io import read_stats
from trainers.cli import main


def parser():
    root = argparse.ArgumentParser(prog="cl3mrec")
    register(root.add_subparsers(dest="command", required=True))
    return root


def run(argv):
    args = parser().parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize(
    "argv",
    [["data"], ["data", "import-collm"], ["data", "prepare-ml1m"], ["data", "prepare-amazon-book"],
     ["data", "download"], ["data", "synthetic"]],
)
def test_help_everywhere(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(argv + ["--help"])
    assert stop.value.code == 0
    assert "usage: cl3mrec data" in capsys.readouterr().out


def test_synthetic_and_import_through_cli(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert run(["data", "synthetic", "--out", str(tmp_path / "syn"), "--num-users", "40", "--num-items", "60",
                    "--interactions-per-user", "30", "--seed", "1"]) == 0
    assert str(tmp_path / "syn") in caplog.text and '"num_users": 41' in caplog.text
    assert read_stats(tmp_path / "syn")["source"].startswith("synthetic:")


def test_import_collm_refuses_pickles_without_flag(tmp_path):
    collm = pd.DataFrame(
        {"uid": [1, 1, 2, 2], "iid": [1, 2, 2, 1], "label": [1, 0, 1, 0], "timestamp": [1, 2, 3, 4],
         "his": [[0], [0, 1], [0], [0, 2]], "his_title": [[""], ["", "A"], [""], ["", "B"]],
         "title": ["A", "B", "B", "A"], "flag": -1.0, "not_cold": 1}
    )
    collm.to_pickle(tmp_path / "train.pkl")
    collm.assign(timestamp=collm["timestamp"] + 10).to_pickle(tmp_path / "valid.pkl")  # later ratings
    argv = ["data", "import-collm", "--train", str(tmp_path / "train.pkl"), "--valid", str(tmp_path / "valid.pkl"),
            "--valid-small", str(tmp_path / "valid.pkl"), "--out", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--allow-pickle"):
        run(argv)
    assert run(argv + ["--allow-pickle"]) == 0
    assert read_stats(tmp_path / "out")["splits"]["train"]["rows"] == 4


def test_download_unreachable_is_a_clear_error(tmp_path, monkeypatch, caplog):
    def refuse(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(download.urllib.request, "urlopen", refuse)
    with pytest.raises(DownloadError, match=r"could not download ml-1m from https://files.grouplens.org/.*by hand"):
        download_dataset("ml-1m", tmp_path)
    assert not (tmp_path / "ml-1m.zip").exists()
    with caplog.at_level(logging.ERROR):  # the cl3mrec command: one line, exit status 2
        assert main(["data", "download", "ml-1m", "--out", str(tmp_path), "--url", "http://127.0.0.1:9/none.zip"]) == 2
    assert "could not download ml-1m from http://127.0.0.1:9/none.zip" in caplog.text
    with pytest.raises(ValueError, match="unknown dataset 'ml-20m'"):
        download_dataset("ml-20m", tmp_path)


def test_download_unzips(tmp_path, monkeypatch):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("ml-1m/ratings.dat", "1::1::5::978300760\n")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: archive.open("rb"))
    folder = download_dataset("ml-1m", tmp_path / "out")
    assert (folder / "ratings.dat").read_text() == "1::1::5::978300760\n"


def test_an_unzip_that_fails_leaves_no_half_filled_folder(tmp_path, monkeypatch):
    archive = tmp_path / "src.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("ml-1m/ratings.dat", "1::1::5::978300760\n")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: archive.open("rb"))

    def full_disk(self, path):
        (Path(path) / "ml-1m").mkdir()
        (Path(path) / "ml-1m" / "ratings.dat").write_text("1::1::")  # cut short
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full_disk)
    with pytest.raises(OSError, match="No space left"):
        download_dataset("ml-1m", tmp_path / "out")
    assert not (tmp_path / "out" / "ml-1m").exists()
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["ml-1m.zip"]  # the complete archive stays


def test_the_unzip_does_not_replace_a_folder_of_unrelated_files(tmp_path, monkeypatch):
    (tmp_path / "out" / "ml-1m").mkdir(parents=True)
    (tmp_path / "out" / "ml-1m" / "notes.txt").write_text("mine")
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: pytest.fail("downloaded anyway"))
    with pytest.raises(ValueError, match=r"ml-1m: folder holds 1 unrelated entries"):
        download_dataset("ml-1m", tmp_path / "out")
    assert (tmp_path / "out" / "ml-1m" / "notes.txt").read_text() == "mine"
