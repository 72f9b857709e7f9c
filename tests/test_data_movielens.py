"""Raw MovieLens-1M → CoLLM time split, on a small generated raw fixture."""

import numpy as np
import pandas as pd
import pytest

from data_scripts.io import load_dataset_dict, read_stats
from data_scripts.movielens import prepare_movielens


def month_start(year, month):
    return int(pd.Timestamp(year=year, month=month, day=1, tz="UTC").timestamp())


def write_raw(raw_dir, seed=0):
    """22 months (2000-11 .. 2002-08) of ratings for 8 users / 12 movies, with same-second ties."""
    rng = np.random.default_rng(seed)
    rows = []
    months = pd.period_range("2000-11", "2002-08", freq="M")
    for user in range(1, 9):
        for month in months:
            start = month_start(month.year, month.month)
            for _ in range(rng.integers(0, 3)):
                rows.append((user, int(rng.integers(1, 13)), int(rng.integers(1, 6)), start + int(rng.integers(0, 20 * 86400))))
        # two ratings in the same second: neither may see the other in its history
        rows.append((user, 11, 5, month_start(2002, 1) + 3600))
        rows.append((user, 12, 5, month_start(2002, 1) + 3600))
    # month boundaries: the last second of a month and the first of the next
    rows.append((1, 3, 5, month_start(2001, 11) - 1))
    rows.append((2, 4, 1, month_start(2001, 11)))
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows), encoding="latin-1")
    (raw_dir / "movies.dat").write_text(
        "".join(f"{i}::Movie {i} Ã© ({1980 + i})::Drama\n" for i in range(1, 13)), encoding="latin-1"
    )
    return pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    raw = write_raw(root / "raw")
    prepare_movielens(root / "raw", root / "out")
    return raw, root


def months_of(frame):
    return set(pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m"))


def test_month_window_and_boundaries(prepared):
    raw, root = prepared
    data = load_dataset_dict(root / "out")
    frames = {name: data[name].to_pandas() for name in data}
    assert months_of(frames["train"]) <= {str(p) for p in pd.period_range("2001-01", "2001-10", freq="M")}
    assert months_of(frames["valid"]) <= {str(p) for p in pd.period_range("2001-11", "2002-03", freq="M")}
    assert months_of(frames["test"]) <= {str(p) for p in pd.period_range("2002-04", "2002-08", freq="M")}
    assert frames["train"]["timestamp"].max() < month_start(2001, 11) <= frames["valid"]["timestamp"].min()
    assert month_start(2001, 11) - 1 in set(frames["train"]["timestamp"])
    assert month_start(2001, 11) in set(frames["valid"]["timestamp"])
    kept = raw[raw["timestamp"] >= month_start(2001, 1)]
    assert sum(len(frames[n]) for n in ("train", "valid", "test")) == len(kept)
    assert sorted(frames["train"]["label"]) == sorted((raw.loc[raw["timestamp"].between(month_start(2001, 1), month_start(2001, 11) - 1), "rating"] >= 4).astype(int))


def test_history_strictly_earlier_positives_only(prepared):
    raw, root = prepared
    data = load_dataset_dict(root / "out")
    kept = raw[raw["timestamp"] >= month_start(2001, 1)].sort_values(["timestamp", "user", "item"], kind="stable")
    kept = kept.assign(title=[f"Movie {i} Ã© ({1980 + i})" for i in kept["item"]])
    titles_seen = 0
    checked = 0
    for name in ("train", "valid", "test"):
        frame = data[name].to_pandas()
        for row in frame.itertuples():
            candidates = kept[(kept["timestamp"] == row.timestamp) & (kept["title"] == row.title)]
            assert len(candidates) >= 1
            raw_user = candidates["user"].iloc[0] if candidates["user"].nunique() == 1 else None
            if raw_user is None:
                continue
            earlier = kept[(kept["user"] == raw_user) & (kept["timestamp"] < row.timestamp) & (kept["rating"] >= 4)]
            assert list(row.history_titles) == list(earlier["title"])
            assert len(row.history_item_ids) == len(row.history_titles) and 0 not in list(row.history_item_ids)
            titles_seen += len(row.history_titles)
            checked += 1
    assert titles_seen > 50 and checked > 150


def test_same_second_items_do_not_see_each_other(prepared):
    _, root = prepared
    valid = load_dataset_dict(root / "out")["valid"].to_pandas()
    tied = valid[valid["timestamp"] == month_start(2002, 1) + 3600]
    assert len(tied) == 16 and tied["user_id"].nunique() == 8
    for _, pair in tied.groupby("user_id"):
        first, second = pair["history_item_ids"].map(tuple)
        assert first == second  # both liked, yet neither is in the other's history
        later = valid[(valid["user_id"] == pair["user_id"].iloc[0]) & (valid["timestamp"] > pair["timestamp"].iloc[0])]
        for history in later["history_item_ids"]:
            assert set(pair["item_id"]) <= set(history)  # visible from the next timestamp on


def test_ids_and_stats(prepared):
    _, root = prepared
    data = load_dataset_dict(root / "out")
    stats = read_stats(root / "out")
    train = data["train"].to_pandas()
    assert train.loc[0, "user_id"] == 1 and train.loc[0, "item_id"] == 1  # first appearance gets id 1
    all_users = np.concatenate([data[n]["user_id"] for n in ("train", "valid", "test")])
    assert set(all_users) == set(range(1, stats["num_users"]))
    assert stats["num_items"] == 13
    assert stats["splits"]["train"]["cold_rows"] == 0
    assert stats["splits"]["valid"]["rows"] == len(data["valid"])
    warm_users = set(train["user_id"])
    valid = data["valid"].to_pandas()
    assert (valid["user_warm"] == valid["user_id"].isin(warm_users)).all()


def test_valid_small_is_deterministic_half(prepared, tmp_path):
    raw, root = prepared
    prepare_movielens(root / "raw", tmp_path / "again")
    first = load_dataset_dict(root / "out")
    second = load_dataset_dict(tmp_path / "again")
    small = first["valid_small"].to_pandas()
    valid = first["valid"].to_pandas()
    assert len(small) == round(len(valid) * 0.5)
    assert small.equals(second["valid_small"].to_pandas())
    keys = set(zip(valid["user_id"], valid["item_id"], valid["timestamp"]))
    assert set(zip(small["user_id"], small["item_id"], small["timestamp"])) <= keys


def test_bad_raw_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.dat"):
        prepare_movielens(tmp_path, tmp_path / "out")
    write_raw(tmp_path)
    with (tmp_path / "ratings.dat").open("a", encoding="latin-1") as handle:
        handle.write("1::2::3\n")
    with pytest.raises(ValueError, match=r"ratings.dat: line \d+ has 3"):
        prepare_movielens(tmp_path, tmp_path / "out")
    write_raw(tmp_path)
    with (tmp_path / "ratings.dat").open("a", encoding="latin-1") as handle:
        handle.write("1::99::3::1000000000\n")
    with pytest.raises(ValueError, match="MovieID 99 is not in movies.dat"):
        prepare_movielens(tmp_path, tmp_path / "out")
