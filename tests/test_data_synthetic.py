"""The synthetic generator: schema, split, cold rows, and a label signal a simple model can learn."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder

from data_scripts.io import load_dataset_dict
from data_scripts.schema import FEATURES
from data_scripts.synthetic import generate_synthetic, make_titles


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("syn") / "ds"
    stats = generate_synthetic(out)
    return load_dataset_dict(out), stats


def test_schema_and_size(synthetic):
    data, stats = synthetic
    assert list(data) == ["train", "valid", "valid_small", "test"]
    assert all(data[n].features == FEATURES for n in data)
    assert 6000 <= sum(stats["splits"][n]["rows"] for n in ("train", "valid", "test")) <= 10000
    assert stats["num_users"] == 201 and stats["num_items"] <= 301
    assert stats["splits"]["train"]["cold_rows"] == 0 and stats["splits"]["valid"]["cold_rows"] > 100
    assert data["train"]["timestamp"][-1] < data["valid"]["timestamp"][0]
    row = data["valid"][0]
    assert len(row["history_item_ids"]) == len(row["history_titles"]) and row["title"].startswith("The ")


def test_labels_carry_signal(synthetic):
    data, _ = synthetic
    train, valid = data["train"].to_pandas(), data["valid"].to_pandas()
    encoder = OneHotEncoder(handle_unknown="ignore").fit(train[["user_id", "item_id"]])
    model = LogisticRegression(max_iter=1000).fit(encoder.transform(train[["user_id", "item_id"]]), train["label"])
    scores = model.predict_proba(encoder.transform(valid[["user_id", "item_id"]]))[:, 1]
    assert roc_auc_score(valid["label"], scores) > 0.7
    rng = np.random.default_rng(0)
    assert abs(roc_auc_score(valid["label"], rng.random(len(valid))) - 0.5) < 0.05  # and chance is ~0.5


def test_deterministic_and_titles(tmp_path):
    first = generate_synthetic(tmp_path / "a", num_users=30, num_items=50, interactions_per_user=20, seed=3)
    second = generate_synthetic(tmp_path / "b", num_users=30, num_items=50, interactions_per_user=20, seed=3)
    assert first["splits"] == second["splits"]
    titles = make_titles(300, np.random.default_rng(0))
    assert len(set(titles)) == 300 and all(t.startswith("The ") and t.endswith(")") for t in titles)
    with pytest.raises(ValueError, match="interactions_per_user=60 exceeds num_items=50"):
        generate_synthetic(tmp_path / "c", num_users=5, num_items=50, interactions_per_user=60)
