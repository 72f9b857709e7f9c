"""Schema validation and split-file loading: every bad input raises a ValueError naming the problem."""

import json
import re

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from data_scripts.builder import save_dataset_dict
from data_scripts.io import load_dataset_dict, load_split_file, read_stats
from data_scripts.schema import COLUMNS, FEATURES


def frame(users=(1, 2, 2, 3), items=(1, 2, 3, 1), labels=(1, 0, 1, 0)):
    return pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "label": list(labels),
            "timestamp": [10, 20, 30, 40],
            "history_item_ids": [[], [], [2], []],
            "history_titles": [[], [], ["B"], []],
            "title": ["A", "B", "C", "A"],
            "user_warm": True,
            "item_warm": True,
            "warm": True,
        }
    )


@pytest.fixture
def saved(tmp_path):
    frames = {"train": frame(), "valid": frame(users=(1, 4, 2, 3)), "valid_small": frame()}
    stats = save_dataset_dict(frames, tmp_path / "ds", source="unit")
    return tmp_path / "ds", stats


def test_round_trip_and_stats(saved):
    data_dir, stats = saved
    assert read_stats(data_dir) == stats
    assert (stats["num_users"], stats["num_items"]) == (5, 4)
    assert stats["splits"]["valid"] == {
        "rows": 4, "users": 4, "items": 3, "positive_rate": 0.5, "warm_rows": 3, "cold_rows": 1
    }
    data = load_dataset_dict(data_dir)
    assert data["train"].features == FEATURES and list(data) == ["train", "valid", "valid_small"]
    valid = load_split_file(f"{data_dir}::valid")
    assert valid.column_names == list(COLUMNS) and valid["user_warm"] == [True, False, True, True]


def test_parquet_split(tmp_path):
    frame().to_parquet(tmp_path / "split.parquet")
    dataset = load_split_file(tmp_path / "split.parquet")
    assert len(dataset) == 4 and dataset[2]["history_item_ids"] == [2]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["title"]), r"missing column\(s\) \['title'\]"),
        (lambda f: f.assign(user_id=[1, -2, 2, 3]), r"column 'user_id' has id -2 at row 1"),
        (lambda f: f.assign(item_id=[1, 0, 2, 3]), r"column 'item_id' has id 0 at row 1 .*0 is padding"),
        (lambda f: f.assign(label=[1, 2, 0, 1]), r"column 'label' must be 0/1, found 2 at row 1"),
        (lambda f: f.assign(label=[1, 1, 1, 1]), r"column 'label' has a single class"),
        (lambda f: f.iloc[:0], r"no rows"),
        (lambda f: f.assign(history_titles=[[], [], [], []]), r"row 2: history_item_ids has 1 entries but history_titles 0"),
        (lambda f: f.assign(history_item_ids=[[], [], [-1], []]), r"column 'history_item_ids' has id -1"),
    ],
)
def test_bad_parquet_inputs(tmp_path, change, message):
    path = tmp_path / "bad.parquet"
    change(frame()).to_parquet(path)
    with pytest.raises(ValueError, match=message) as error:
        load_split_file(path)
    assert "bad.parquet" in str(error.value)


def test_ids_beyond_the_id_space(tmp_path, saved):
    path = tmp_path / "split.parquet"
    frame(items=(1, 2, 9, 1)).to_parquet(path)
    with pytest.raises(ValueError, match=r"column 'item_id' has id 9 at row 2 outside the valid range 1..3"):
        load_split_file(path, num_items=4)
    data_dir, _ = saved
    with pytest.raises(ValueError, match=r"::valid: its data set has num_users = \d+ \(stats.json\), but the model's "
                                         r"tables have 4: a split of other data"):
        load_split_file(f"{data_dir}::valid", num_users=4)
    with pytest.raises(ValueError, match=r"::valid: its data set has num_items = \d+ \(stats.json\), but the model's "
                                         r"tables have 99: a split of other data"):
        load_split_file(f"{data_dir}::valid", num_items=99)


def test_bad_paths(tmp_path, saved):
    data_dir, _ = saved
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.parquet: empty file"):
        load_split_file(tmp_path / "empty.parquet")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.pkl: empty file"):
        load_split_file(tmp_path / "empty.pkl", allow_pickle=True)
    (tmp_path / "x.csv").write_text("a\n1\n")
    with pytest.raises(ValueError, match="unknown split file type '.csv'"):
        load_split_file(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="nope.parquet"):
        load_split_file(tmp_path / "nope.parquet")
    with pytest.raises(ValueError, match="is a directory; name a split"):
        load_split_file(data_dir)
    with pytest.raises(ValueError, match="no split 'test'"):
        load_split_file(f"{data_dir}::test")
    with pytest.raises(FileNotFoundError, match="no stats.json"):
        read_stats(tmp_path)


def test_bad_dataset_dirs(tmp_path):
    Dataset.from_pandas(frame(), features=FEATURES, preserve_index=False).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(ValueError, match="holds a single Dataset"):
        load_dataset_dict(tmp_path / "single")
    save_dataset_dict({"train": frame(), "valid": frame(), "valid_small": frame()}, tmp_path / "ok", source="unit")
    stats = json.loads((tmp_path / "ok" / "stats.json").read_text())
    del stats["num_items"]
    (tmp_path / "ok" / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="missing field 'num_items'"):
        read_stats(tmp_path / "ok")
    with pytest.raises(ValueError, match=r"unknown split name\(s\) \['dev'\]"):
        save_dataset_dict({"train": frame(), "dev": frame()}, tmp_path / "dev", source="unit")
    with pytest.raises(ValueError, match=r"unit \[valid\]: column 'label' has a single class"):
        save_dataset_dict({"train": frame(), "valid": frame(labels=(0, 0, 0, 0))}, tmp_path / "one", source="unit")


def test_float_labels_0_and_1_pass_and_the_bad_value_is_the_one_named():
    """0.0 / 1.0 are labels (pandas turns int columns with gaps into floats); a 0.5 is named at its own row."""
    from data_scripts.schema import validate_frame

    rows = [{"user_id": 1, "item_id": 2, "label": label, "timestamp": 0, "history_item_ids": [3],
             "history_titles": ["m3"], "title": "m2", "user_warm": True, "item_warm": True, "warm": True}
            for label in (1.0, 0.0, 1.0, 0.5)]
    validate_frame(pd.DataFrame(rows[:3]), "ok.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: column 'label' must be 0/1, found 0.5 at row 3"):
        validate_frame(pd.DataFrame(rows), "bad.parquet")


@pytest.mark.parametrize(
    ("history", "found"), [([3, True], "True"), ([3, [4]], "[4]"), ([3, "4"], "'4'"), ([3, None], "None")]
)
def test_history_ids_name_the_first_entry_that_is_not_an_integer_id(history, found):
    from data_scripts.schema import history_ids

    with pytest.raises(ValueError, match=rf"^f: row 7: column 'his' holds {re.escape(found)}, not an integer item id"):
        history_ids(history, "f", "his", 7)
    assert history_ids(np.array([3, 4]), "f", "his", 7).tolist() == [3, 4]
    assert history_ids([], "f", "his", 7).dtype == np.int64
