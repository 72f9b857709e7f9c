"""CoLLM pickle import: a small generated DataFrame, and the real shared ML-1M files when present."""

import json
from pathlib import Path

import pandas as pd
import pytest

from data_scripts.collm_import import import_collm
from data_scripts.io import load_dataset_dict, load_split_file, read_stats

SHARED_ML1M = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


def collm_frame(flag=-1.0, uids=(1, 1, 2, 2), iids=(1, 2, 3, 1), labels=(1, 0, 1, 0), not_cold=1):
    """A CoLLM-style split; the first row has his=[0] but his_title=[] as in CoLLM's train file."""
    his = [[0], [0, 1], [0], [0, 3]]
    his_title = [[], ["", "A (1990)"], [""], ["", "C (1992)"]]
    titles = {1: "A (1990)", 2: "B (1991)", 3: "C (1992)", 4: "D (1993)"}
    return pd.DataFrame(
        {
            "uid": list(uids),
            "iid": list(iids),
            "label": list(labels),
            "timestamp": [100, 200, 300, 400],
            "his": his,
            "his_title": his_title,
            "title": [titles[i] for i in iids],
            "flag": flag,
            "not_cold": not_cold,
        }
    )


@pytest.fixture
def collm_files(tmp_path):
    collm_frame().to_pickle(tmp_path / "train.pkl")
    collm_frame(0.0, uids=(1, 3, 2, 3), iids=(2, 3, 4, 1), labels=(1, 0, 0, 1), not_cold=0).to_pickle(tmp_path / "valid.pkl")
    return tmp_path


def test_import_small_collm(collm_files):
    stats = import_collm(collm_files / "out", collm_files / "train.pkl", collm_files / "valid.pkl", allow_pickle=True)
    assert stats["num_users"] == 4 and stats["num_items"] == 5
    data = load_dataset_dict(collm_files / "out")
    train = data["train"].to_pandas()
    assert [list(h) for h in train["history_item_ids"]] == [[], [1], [], [3]]
    assert [list(h) for h in train["history_titles"]] == [[], ["A (1990)"], [], ["C (1992)"]]
    valid = data["valid"].to_pandas()
    # recomputed from train, not copied from not_cold: user 3 and item 4 are cold, (1, 2) and (2, ...) warm
    assert list(valid["user_warm"]) == [True, False, True, False]
    assert list(valid["item_warm"]) == [True, True, False, True]
    assert list(valid["warm"]) == [True, False, False, False]
    assert stats["splits"]["valid"]["warm_rows"] == 1 and stats["splits"]["valid"]["cold_rows"] == 3
    assert len(data["valid_small"]) == 2  # sampled from valid when no file is given
    assert json.loads((collm_files / "out" / "stats.json").read_text()) == stats


def test_pickle_needs_explicit_permission(collm_files):
    with pytest.raises(ValueError, match="allow_pickle=True"):
        import_collm(collm_files / "out", collm_files / "train.pkl", collm_files / "valid.pkl")
    with pytest.raises(ValueError, match="--allow-pickle"):
        load_split_file(collm_files / "train.pkl")


def test_lone_file_uses_not_cold(collm_files):
    valid = load_split_file(collm_files / "valid.pkl", allow_pickle=True)
    assert valid.features["history_item_ids"].feature.dtype == "int64"
    assert not any(valid["warm"]) and not any(valid["user_warm"])
    assert list(valid["history_item_ids"][1]) == [1]


def test_real_history_mismatch_raises(tmp_path):
    frame = collm_frame()
    frame.at[1, "his_title"] = ["", "A (1990)", "extra"]
    frame.to_pickle(tmp_path / "bad.pkl")
    with pytest.raises(ValueError, match=r"bad.pkl: row 1: 'his' has 2 entries but 'his_title' has 3"):
        load_split_file(tmp_path / "bad.pkl", allow_pickle=True)


@pytest.mark.skipif(not SHARED_ML1M.is_dir(), reason="shared ML-1M CoLLM files not present")
def test_real_shared_ml1m(tmp_path):
    stats = import_collm(
        tmp_path / "ml1m",
        SHARED_ML1M / "train_ood2.pkl",
        SHARED_ML1M / "valid_ood2.pkl",
        SHARED_ML1M / "valid_small_ood2.pkl",
        allow_pickle=True,
    )
    assert stats == read_stats(tmp_path / "ml1m")
    assert (stats["num_users"], stats["num_items"]) == (839, 3256)
    rows = {name: split["rows"] for name, split in stats["splits"].items()}
    assert rows == {"train": 33891, "valid": 10401, "valid_small": 5200}
    assert stats["splits"]["train"]["users"] == 740 and stats["splits"]["valid"]["items"] == 2506
    assert stats["splits"]["valid"]["warm_rows"] == 6609  # equals CoLLM's not_cold count
    first = load_split_file(f"{tmp_path / 'ml1m'}::train")[1]
    assert first["history_item_ids"] == [1] and first["history_titles"] == ["Shawshank Redemption, The (1994)"]
