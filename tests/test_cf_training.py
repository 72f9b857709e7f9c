"""CF training on a tiny latent-factor dataset, the batch tensors, and the ``cf train``/``cf tune`` CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict

from data_scripts.schema import FEATURES
from trainers.cli import cf_cli
from trainers.cf_training import (
    TRAIN_DEFAULTS,
    dataset_to_tensors,
    load_cf_yaml,
    pad_histories,
    parameter_groups,
    train_cf_model,
)

NUM_USERS, NUM_ITEMS = 41, 61  # ids 1..40 / 1..60


def latent_factor_frames(seed=0, per_user=30, dim=4):
    """Rows ``label = 1[<p_u, q_i> + noise > 0]`` (no biases: only latent factors carry signal).

    Each user's first 22 interactions are train, the rest valid; history = earlier positives.
    """
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(NUM_USERS, dim))
    q = rng.normal(size=(NUM_ITEMS, dim))
    splits = {"train": [], "valid": []}
    for user in range(1, NUM_USERS):
        items = rng.choice(np.arange(1, NUM_ITEMS), size=per_user, replace=False)
        history = []
        for step, item in enumerate(items):
            label = int(p[user] @ q[item] + 0.5 * rng.normal() > 0)
            row = {
                "user_id": user, "item_id": int(item), "label": label, "timestamp": step,
                "history_item_ids": list(history), "history_titles": [f"m{h}" for h in history],
                "title": f"m{item}", "user_warm": True, "item_warm": True, "warm": True,
            }
            splits["train" if step < 22 else "valid"].append(row)
            if label:
                history.append(int(item))
    train_items = {row["item_id"] for row in splits["train"]}
    for row in splits["valid"]:
        row["item_warm"] = row["warm"] = row["item_id"] in train_items
    return splits


@pytest.fixture(scope="module")
def dataset_dict():
    splits = latent_factor_frames()
    data = {name: Dataset.from_list(rows, features=FEATURES) for name, rows in splits.items()}
    data["valid_small"] = data["valid"].select(range(0, len(data["valid"]), 2))
    return DatasetDict(data)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, dataset_dict):
    path = tmp_path_factory.mktemp("latent")
    dataset_dict.save_to_disk(str(path))
    (path / "stats.json").write_text(
        json.dumps({"num_users": NUM_USERS, "num_items": NUM_ITEMS, "splits": {}, "source": "test"})
    )
    return path


def test_pad_histories_matches_naive_reference():
    import pyarrow as pa

    lists = [[], [4], [1, 2, 3, 4, 5], [7, 8], [9, 10, 11]]
    array = pa.array(lists, type=pa.list_(pa.int64())).slice(1)  # sliced: offsets do not start at 0
    expected = [[0, 0, 4], [3, 4, 5], [0, 7, 8], [9, 10, 11]]
    assert pad_histories(array, 3).tolist() == expected


def test_dataset_to_tensors_keeps_row_order(dataset_dict):
    valid = dataset_dict["valid"]
    order = list(reversed(range(len(valid))))
    tensors = dataset_to_tensors(valid.select(order), max_history=5)
    assert tensors.user_ids.tolist() == [valid[i]["user_id"] for i in order]
    last = valid[order[0]]["history_item_ids"][-5:]
    assert tensors.history_item_ids[0].tolist() == [0] * (5 - len(last)) + last
    assert tensors.warm.dtype == torch.bool


def splits_as_tensors(dataset_dict, max_history=8):
    return {name: dataset_to_tensors(split, max_history) for name, split in dataset_dict.items()}


def test_mf_learns_latent_factors(dataset_dict):
    train_args = dict(lr=0.02, weight_decay=0.0, batch_size=128, epochs=15, patience=4, selection_split="valid")
    fields = dict(encoder_type="mf", hidden_size=8, use_bias=False, initializer_range=0.1)
    model, summary = train_cf_model(fields, train_args, splits_as_tensors(dataset_dict), NUM_USERS, NUM_ITEMS, seed=0)
    assert summary["valid"]["auc"] > 0.6, summary["valid"]
    assert summary["best_epoch"] == max(summary["history"], key=lambda h: h["select_auc"])["epoch"]
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    assert set(summary["valid_small"]) >= {"auc", "uauc", "warm", "cold"}


@pytest.mark.parametrize("encoder_type", ["popularity", "lightgcn", "sasrec", "din"])
def test_other_encoders_train(dataset_dict, encoder_type):
    train_args = dict(lr=0.01, weight_decay=0.0, batch_size=256, epochs=2, patience=2, selection_split="valid_small")
    fields = dict(encoder_type=encoder_type, hidden_size=8, max_history=8, num_layers=1)
    model, summary = train_cf_model(fields, train_args, splits_as_tensors(dataset_dict), NUM_USERS, NUM_ITEMS, seed=0)
    assert 0.0 <= summary["valid"]["auc"] <= 1.0
    if encoder_type == "popularity":  # fitted, not trained
        assert summary["best_epoch"] == 0 and summary["history"] == []
    else:
        assert summary["best_epoch"] >= 1 and np.isfinite(summary["history"][0]["loss"])


def write_yaml(path, data_dir, out_dir, **extra):
    spec = {
        "data": str(data_dir), "out": str(out_dir), "seed": 1,
        "model": {"encoder_type": "mf", "hidden_size": 8, "use_bias": True},
        "train": {"lr": 0.02, "batch_size": 256, "epochs": 3, "patience": 2},
        **extra,
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(argv):
    parser = argparse.ArgumentParser()
    cf_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cf_train_cli_saves_model_and_metrics(tmp_path, dataset_dir, capsys):
    from modeling_cl3mrec.modeling_cf import CFRecModel

    config = write_yaml(tmp_path / "mf.yaml", dataset_dir, tmp_path / "unused")
    assert run_cli(["cf", "train", "--config", str(config), "--out", str(tmp_path / "run"), "--seed", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["seed"] == 3 and printed["valid"]["auc"] == metrics["valid"]["auc"]
    assert not (tmp_path / "unused").exists()
    model = CFRecModel.from_pretrained(tmp_path / "run")
    assert model.config.num_users == NUM_USERS and model.encoder.user_is_warm[1]
    # Rerunning replaces the directory as a whole.
    assert run_cli(["cf", "train", "--config", str(config), "--out", str(tmp_path / "run")]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mf.yaml", "run"]


def test_cf_tune_ranks_grid(tmp_path, dataset_dir, capsys):
    search = {"model.hidden_size": [4, 8], "train.lr": [0.02]}
    config = write_yaml(tmp_path / "mf.yaml", dataset_dir, tmp_path / "tune", search=search)
    assert run_cli(["cf", "tune", "--config", str(config)]) == 0
    results = json.loads((tmp_path / "tune" / "search.json").read_text())["results"]
    assert len(results) == 2
    assert results[0]["select_auc"] >= results[1]["select_auc"]
    assert {r["overrides"]["model.hidden_size"] for r in results} == {4, 8}


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"model": {"encoder_type": "mf"}, "trian": {}}, "unknown top-level field"),
        ({"model": {"hidden_size": 8}}, "model.encoder_type"),
        ({"model": {"encoder_type": "mf"}, "train": {"learning_rate": 1}}, "unknown train field"),
        ({"model": {"encoder_type": "mf"}, "search": {"hidden_size": [1]}}, "search key 'hidden_size'"),
    ],
)
def test_load_cf_yaml_rejects_bad_specs(tmp_path, spec, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=message):
        load_cf_yaml(str(path))


def test_parameter_groups_split_biases():
    from modeling_cl3mrec.configuration_cf import CFRecConfig
    from modeling_cl3mrec.modeling_cf import CFRecModel

    model = CFRecModel(CFRecConfig(encoder_type="din", num_users=5, num_items=6, hidden_size=4))
    groups = parameter_groups(model, {**TRAIN_DEFAULTS, "weight_decay": 0.1, "bias_weight_decay": 0.0})
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in groups[1]["params"]) == [
        "encoder.global_bias", "encoder.item_bias.weight", "encoder.user_bias.weight"
    ]
    assert (groups[0]["weight_decay"], groups[1]["weight_decay"]) == (0.1, 0.0)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(names)
    same = parameter_groups(model, {**TRAIN_DEFAULTS, "weight_decay": 0.1})
    assert same[1]["weight_decay"] == 0.1  # bias_weight_decay None: follows weight_decay
