"""Raw Amazon 2018 Books → CoLLM's Amazon-Book split, on a generated gzipped JSON-lines fixture."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from data_scripts.amazon_book import filter_min_ratings, prepare_amazon_book
from data_scripts.io import load_dataset_dict, read_stats


def day(text):
    return int(pd.Timestamp(text, tz="UTC").timestamp())


def write_fixture(root, seed=0):
    """30 core users x 30 core items with many 2017 ratings, plus noise that the filters must drop."""
    rng = np.random.default_rng(seed)
    reviews = []
    for user in range(30):
        items = rng.choice(30, size=25, replace=False)
        for item in items:
            date = pd.Timestamp("2017-01-01", tz="UTC") + pd.Timedelta(days=int(rng.integers(0, 365)))
            reviews.append({"reviewerID": f"U{user}", "asin": f"B{item:03d}", "overall": float(rng.integers(1, 6)),
                            "unixReviewTime": int(date.timestamp())})
    reviews.append({"reviewerID": "U0", "asin": "B000", "overall": 5.0, "unixReviewTime": day("2016-12-31")})  # wrong year
    for user in range(30):  # an item rated by everyone, but it has no title → dropped
        reviews.append({"reviewerID": f"U{user}", "asin": "NOTITLE", "overall": 5.0, "unixReviewTime": day("2017-03-01")})
    for k in range(5):  # a light user → dropped by the user filter
        reviews.append({"reviewerID": "LIGHT", "asin": f"B{k:03d}", "overall": 5.0, "unixReviewTime": day("2017-04-01")})
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "Books_5.json.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in reviews)
    with gzip.open(root / "meta_Books.json.gz", "wt") as handle:
        for item in range(30):
            meta = {"asin": f"B{item:03d}", "title": f"Book {item}"}
            handle.write((json.dumps(meta) if item % 2 else repr(meta)) + "\n")  # both JSON and Python-literal lines
        handle.write(json.dumps({"asin": "NOTITLE", "title": ""}) + "\n")
    return pd.DataFrame(reviews)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("book")
    raw = write_fixture(root)
    prepare_amazon_book(root / "Books_5.json.gz", root / "meta_Books.json.gz", root / "out")
    return raw, root


def test_split_protocol(prepared):
    raw, root = prepared
    data = load_dataset_dict(root / "out")
    train, valid, test = (data[n].to_pandas() for n in ("train", "valid", "test"))
    assert train["timestamp"].max() < day("2017-12-01") <= valid["timestamp"].min()
    assert valid["timestamp"].max() < test["timestamp"].min()  # halved at a day boundary
    december = len(valid) + len(test)
    assert abs(len(valid) - len(test)) <= 0.2 * december
    assert test["timestamp"].max() < day("2018-01-01")
    titles = set(pd.concat([train, valid, test])["title"])
    assert "" not in titles and titles <= {f"Book {i}" for i in range(30)}
    core = raw[raw["asin"].str.startswith("B") & (raw["reviewerID"] != "LIGHT") & (raw["unixReviewTime"] >= day("2017-01-01"))]
    while True:  # brute-force reference of the iterated > 20 filter
        keep = (core.groupby("reviewerID")["asin"].transform("size") > 20) & (core.groupby("asin")["asin"].transform("size") > 20)
        if keep.all():
            break
        core = core[keep]
    assert 600 < len(core) == sum(len(data[n]) for n in ("train", "valid", "test"))
    assert (train["label"].mean() - (core["overall"] == 5).mean()) < 0.1
    assert set(train["label"]) == {0, 1}
    for row in test.itertuples():
        assert all(t for t in row.history_titles) and len(row.history_item_ids) == len(row.history_titles)
    assert len(data["valid_small"]) == round(len(valid) / 2)
    assert read_stats(root / "out")["splits"]["train"]["cold_rows"] == 0


def test_filter_iterates_until_stable():
    # one pass keeps u1's a and b; but then u1 has only 2 ratings, so the second pass drops everything
    reviews = pd.DataFrame(
        {"raw_user": ["u1", "u1", "u1", "u2", "u2", "u3", "u3"], "raw_item": ["a", "b", "c", "a", "b", "a", "b"]}
    )
    assert filter_min_ratings(reviews, min_ratings=2).empty
    reviews = pd.DataFrame(
        {"raw_user": ["u1"] * 3 + ["u2"] * 3 + ["u3"] * 3 + ["u4"], "raw_item": list("abc") * 3 + ["a"]}
    )
    kept = filter_min_ratings(reviews, min_ratings=2)
    assert set(kept["raw_user"]) == {"u1", "u2", "u3"} and len(kept) == 9


def test_bad_inputs(tmp_path):
    (tmp_path / "empty.json.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.json.gz: empty file"):
        prepare_amazon_book(tmp_path / "empty.json.gz", tmp_path / "meta.json.gz", tmp_path / "out")
    with gzip.open(tmp_path / "bad.json.gz", "wt") as handle:
        handle.write('{"reviewerID": "u", "asin": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.json.gz: line 1: needs reviewerID, asin, overall, unixReviewTime"):
        prepare_amazon_book(tmp_path / "bad.json.gz", tmp_path / "meta.json.gz", tmp_path / "out")
