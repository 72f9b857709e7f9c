"""Bad input to ``cl3mrec data ...`` and damaged dataset folders: one line naming the file / split / row / field,
exit status 2, nothing half-written left behind. Tiny synthetic inputs, CLI called in-process."""

import gzip
import logging
import shutil

import pandas as pd
import pytest

from data_scripts.synthetic import generate_synthetic
from trainers.cli import main

COLLM_ROW = {"uid": 1, "iid": 2, "label": 1, "timestamp": 0, "his": [0, 3], "his_title": ["", "m3"], "title": "m2",
             "flag": -1, "not_cold": 1}

SPLIT_TIMES = {"train": 0, "valid": 10, "valid_small": 10, "test": 20}
REVIEW = b'{"reviewerID": "u", "asin": "a", "overall": 5.0, "unixReviewTime": 1500000000}\n'


def collm_split(root, name, **changes):
    """A two-row CoLLM pickle (labels 1 and 0, index labels 10 and 11) with ``changes`` applied to the second row;
    each split's rows are rated at a time of their own (a split never repeats another's ratings)."""
    first = {**COLLM_ROW, "timestamp": SPLIT_TIMES[name]}
    rows = [first, {**first, "uid": 2, "label": 0, **changes}]
    path = root / f"{name}.pkl"
    pd.DataFrame(rows, index=[10, 11]).to_pickle(path)
    return path


def import_argv(root, train=None, valid=None):
    train = train or collm_split(root, "train")
    valid = valid or collm_split(root, "valid")
    return ["data", "import-collm", "--allow-pickle", "--train", str(train), "--valid", str(valid),
            "--valid-small", str(valid), "--out", str(root / "data")]


def a_folder(root, name="somedir"):
    path = root / name
    path.mkdir()
    return path


def a_file(root, name, content=b"no, not gzip"):
    path = root / name
    path.write_bytes(content)
    return path


def amazon_argv(root, reviews=None):
    reviews = reviews or a_file(root, "Books_5.json.gz", gzip.compress(b'{"asin": "a"}\n'))
    meta = a_file(root, "meta_Books.json.gz", gzip.compress(b'{"asin": "a", "title": "A"}\n'))
    return ["data", "prepare-amazon-book", "--reviews", str(reviews), "--meta", str(meta), "--out", str(root / "data")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny saved synthetic dataset (copied before each damage)."""
    out = tmp_path_factory.mktemp("dataset") / "data"
    generate_synthetic(out, num_users=12, num_items=20, interactions_per_user=12)
    return out


def damaged(root, dataset, damage):
    """A copy of ``dataset`` under ``root`` with ``damage(folder)`` applied."""
    folder = root / "damaged"
    shutil.copytree(dataset, folder)
    damage(folder)
    return folder


def truncate(path, keep=0.1):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def cf_argv(root, data):
    config = root / "cf.yaml"
    config.write_text("model: {encoder_type: mf, hidden_size: 4}\ntrain: {epochs: 1}\n")
    return ["cf", "train", "--config", str(config), "--data", str(data), "--out", str(root / "cf")]


def pipeline_argv(root, data):
    config = root / "pipeline.yaml"
    config.write_text(f"out_dir: {root / 'data'}\nstages: [{{stage: lora, use_cpu: true}}]\ndata: {data}\n")
    return ["pipeline", "--config", str(config)]


CASES = {
    "import, uid 5000 in valid": (
        lambda r: import_argv(r, valid=collm_split(r, "valid", uid=5000)),
        "{root}/valid.pkl [valid]: row 11: column 'user_id': id 5000 with only 3 distinct user ids"),
    "import, item id 10^9 in valid": (
        lambda r: import_argv(r, valid=collm_split(r, "valid", iid=10**9)),
        "{root}/valid.pkl [valid]: row 11: column 'item_id': id 1000000000"),
    "import, history id 99999 in valid": (
        lambda r: import_argv(r, valid=collm_split(r, "valid", his=[0, 99999], his_title=["", "m9"])),
        "{root}/valid.pkl [valid]: row 11: column 'history_item_ids': id 99999"),
    "import, one item with two titles": (
        lambda r: import_argv(r, valid=collm_split(r, "valid", title="other")),
        "{root}/valid.pkl [valid]: row 11: item 2 is titled 'other', but 'm2' at {root}/train.pkl [train] row 10"),
    "import, --train is a folder": (
        lambda r: import_argv(r, train=a_folder(r)), "{root}/somedir: is a directory, not a file"),
    "amazon, --reviews is a folder": (
        lambda r: amazon_argv(r, reviews=a_folder(r)), "{root}/somedir: is a directory, not a file"),
    "amazon, reviews not gzip": (
        lambda r: amazon_argv(r, reviews=a_file(r, "Books_5.json.gz")), "{root}/Books_5.json.gz: not a gzip file"),
    "amazon, reviews gzip cut short": (
        lambda r: amazon_argv(r, reviews=a_file(r, "Books_5.json.gz", gzip.compress(REVIEW * 50)[:-10])),
        "{root}/Books_5.json.gz: the gzip file is cut short"),
    "download, not a zip archive": (
        lambda r: ["data", "download", "ml-1m", "--out", str(r / "w" / "dl"), "--url",
                   (a_file(r, "notgz.bin")).as_uri()],
        "the download from file://{root}/notgz.bin is not a zip archive"),
    "download, connection refused": (
        lambda r: ["data", "download", "ml-1m", "--out", str(r / "w" / "dl"), "--url", "http://127.0.0.1:9/x.zip"],
        "could not download ml-1m from http://127.0.0.1:9/x.zip"),
    "pipeline data, num_users: 0": (
        lambda r: pipeline_argv(r, "{num_users: 0}"), "synthetic data: num_users must be an integer >= 1, got 0"),
    "pipeline data, unknown key num_user": (
        lambda r: pipeline_argv(r, "{num_user: 5}"),
        "pipeline.yaml: data: unknown key(s) ['num_user'] ('num_user': did you mean 'num_users'?)"),
}


def run_cli(argv, caplog):
    """``main(argv)``'s exit status and its ERROR lines on the ``cl3mrec`` logger."""
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        status = main(argv)
    return status, [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def assert_one_clear_error(status, lines, expected):
    assert status == 2, lines
    assert len(lines) == 1 and "\n" not in lines[0] and expected in lines[0], lines


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_input_is_one_clear_error(case, tmp_path, caplog):
    make_argv, expected = CASES[case]
    status, lines = run_cli(make_argv(tmp_path), caplog)
    assert_one_clear_error(status, lines, expected.replace("{root}", str(tmp_path)))
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("url", ["notgz", "http://127.0.0.1:9/x.zip"])
def test_a_failed_download_leaves_nothing_behind(url, tmp_path, caplog):
    out = tmp_path / "w" / "dl2"
    url = a_file(tmp_path, "notgz.bin").as_uri() if url == "notgz" else url
    status, lines = run_cli(["data", "download", "ml-1m", "--out", str(out), "--url", url], caplog)
    assert_one_clear_error(status, lines, url)
    assert not (tmp_path / "w").exists()
    existing = a_folder(tmp_path, "kept")
    status, lines = run_cli(["data", "download", "ml-1m", "--out", str(existing), "--url", url], caplog)
    assert status == 2 and list(existing.iterdir()) == []  # no ml-1m.zip, no hidden partial download


DAMAGES = {
    "broken stats.json": (lambda d: (d / "stats.json").write_text('{\n"num_'), "stats.json: not valid JSON"),
    "stats.json not an object": (lambda d: (d / "stats.json").write_text("[]"), "stats.json: expected a JSON object"),
    "truncated arrow file": (
        lambda d: truncate(d / "valid" / "data-00000-of-00001.arrow"),
        "valid/data-00000-of-00001.arrow: cannot be read"),
    "arrow file cut in its body": (
        lambda d: truncate(d / "train" / "data-00000-of-00001.arrow", keep=0.6),
        "train/data-00000-of-00001.arrow: cannot be read"),
    "broken state.json": (
        lambda d: (d / "test" / "state.json").write_text('{"_data'), "test/state.json: cannot be read"),
    "missing arrow file": (
        lambda d: (d / "train" / "data-00000-of-00001.arrow").unlink(), "train/data-00000-of-00001.arrow: cannot"),
}


@pytest.mark.parametrize("case", list(DAMAGES))
def test_a_damaged_dataset_folder_names_the_file(case, dataset, tmp_path, caplog):
    damage, expected = DAMAGES[case]
    folder = damaged(tmp_path, dataset, damage)
    status, lines = run_cli(cf_argv(tmp_path, folder), caplog)
    assert_one_clear_error(status, lines, f"{folder}/{expected}")
    assert "damaged" in lines[0]


@pytest.mark.parametrize(("argv", "expected"), [
    (["synthetic", "--num-users", "0"], "argument --num-users: must be an integer >= 1, got 0"),
    (["synthetic", "--interactions-per-user", "0"], "argument --interactions-per-user: must be an integer >= 1"),
    (["synthetic", "--interactions-per-user", "-2"], "argument --interactions-per-user: must be an integer >= 1"),
    (["synthetic", "--num-items", "many"], "argument --num-items: must be an integer >= 1, got 'many'"),
    (["prepare-ml1m", "--raw-dir", "raw", "--skip-last-months", "-1"],
     "argument --skip-last-months: must be an integer >= 0, got -1"),
])
def test_bad_counts_are_refused_by_argparse(argv, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as refused:
        main(["data", *argv, "--out", str(tmp_path / "data")])
    lines = capsys.readouterr().err.splitlines()  # one line, no usage block
    assert refused.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("fields", "expected"), [
    ({"num_users": 0}, "num_users must be an integer >= 1, got 0"),
    ({"interactions_per_user": -2}, "interactions_per_user must be an integer >= 1, got -2"),
    ({"num_items": 2.5}, "num_items must be an integer >= 1, got 2.5"),
    ({"num_users": True}, "num_users must be an integer >= 1, got True"),
])
def test_the_synthetic_generator_names_a_bad_field(fields, expected, tmp_path):
    with pytest.raises(ValueError, match=r"^synthetic data: ") as refused:
        generate_synthetic(tmp_path / "data", **fields)
    assert expected in str(refused.value)
    assert not (tmp_path / "data").exists()


def test_skip_last_months_is_refused_below_zero_in_the_library():
    from data_scripts.movielens import assign_month_splits

    with pytest.raises(ValueError, match="skip_last_months must be >= 0, got -1"):
        assign_month_splits(pd.DataFrame({"timestamp": [0]}), skip_last_months=-1)


def test_warm_flags_that_contradict_each_other_are_refused():
    """`warm` drives the warm / cold metrics: it must be `user_warm and item_warm` on every row."""
    from data_scripts.schema import validate_frame

    row = {"user_id": 1, "item_id": 2, "label": 1, "timestamp": 0, "history_item_ids": [3], "history_titles": ["m3"],
           "title": "m2", "user_warm": True, "item_warm": True, "warm": True}  # fmt: skip
    frame = pd.DataFrame([row, {**row, "label": 0}])
    validate_frame(frame, "split.parquet")
    frame.loc[1, "user_warm"] = False
    with pytest.raises(ValueError, match=r"split.parquet: row 1: warm is True but user_warm and item_warm are False"):
        validate_frame(frame, "split.parquet")
