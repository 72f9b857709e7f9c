"""``cl3mrec evaluate`` on a saved tiny CF model, and ``load_scorer`` dispatch."""

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch

from modeling_cl3mrec.configuration_cf import CFRecConfig
from modeling_cl3mrec.modeling_cf import CFRecModel
from trainers.cli import evaluate_cli
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import CFScorer, load_scorer


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    model = CFRecModel(CFRecConfig(encoder_type="sasrec", num_users=10, num_items=15, hidden_size=8, max_history=3))
    model.encoder.fit_train_statistics(torch.arange(1, 8), torch.arange(1, 8), torch.tensor([1, 0, 1, 0, 1, 0, 1]))
    model.encoder.refresh_cold_rows()
    path = tmp_path_factory.mktemp("model")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def split_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows = []
    for n in range(60):
        history = [int(i) for i in rng.integers(1, 15, n % 5)]
        item = int(rng.integers(1, 15))
        rows.append({
            "user_id": int(1 + n % 9), "item_id": item, "label": int(rng.integers(0, 2)), "timestamp": n,
            "history_item_ids": history, "history_titles": [f"m{h}" for h in history], "title": f"m{item}",
            "user_warm": n % 9 < 7, "item_warm": item < 8, "warm": n % 9 < 7 and item < 8,
        })
    path = tmp_path_factory.mktemp("split") / "valid.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def run_cli(argv):
    parser = argparse.ArgumentParser()
    evaluate_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_evaluate_prints_one_json_report(saved_model, split_file, tmp_path, capsys):
    from data_scripts.io import load_split_file

    output = tmp_path / "reports" / "valid.json"
    argv = ["evaluate", "--model", str(saved_model), "--split-file", str(split_file), "--batch-size", "7"]
    assert run_cli(argv + ["--output", str(output)]) == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert printed == json.loads(output.read_text())
    assert {"auc", "uauc", "n_rows", "n_users_uauc", "warm", "cold", "rows_per_second"} <= set(printed)
    assert printed["n_rows"] == 60 and printed["rows_per_second"] > 0
    dataset = load_split_file(split_file)
    scores = CFScorer.from_pretrained(saved_model).score(dataset)
    expected = ranking_report(dataset["user_id"], dataset["label"], scores, dataset["warm"])
    assert printed["auc"] == pytest.approx(expected["auc"])
    assert printed["cold"]["uauc"] == pytest.approx(expected["cold"]["uauc"], nan_ok=True)
    assert [p.name for p in output.parent.iterdir()] == ["valid.json"]  # no temp file left behind


def test_scores_do_not_depend_on_batch_size(saved_model, split_file):
    from data_scripts.io import load_split_file

    dataset = load_split_file(split_file)
    small = load_scorer(saved_model, batch_size=4).score(dataset)
    large = load_scorer(saved_model).score(dataset)
    assert small.shape == (60,) and np.allclose(small, large, atol=1e-6)
    reordered = load_scorer(saved_model).score(dataset.select(range(59, -1, -1)))
    assert np.allclose(reordered[::-1], large, atol=1e-6)


def test_load_scorer_rejects_unknown_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_scorer(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="'bert' is not a cl3mrec model"):
        load_scorer(tmp_path)


def test_evaluate_reports_ids_outside_the_model(saved_model, tmp_path):
    row = {
        "user_id": 12, "item_id": 1, "label": 1, "timestamp": 0, "history_item_ids": [], "history_titles": [],
        "title": "m1", "user_warm": False, "item_warm": True, "warm": False,
    }
    frame = pd.DataFrame([{**row, "user_id": 2, "label": 0}, row])
    frame.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="'user_id' has id 12 at row 1 outside the valid range 1..9"):
        run_cli(["evaluate", "--model", str(saved_model), "--split-file", str(tmp_path / "bad.parquet")])


def test_through_the_cl3mrec_entry_point(saved_model, split_file, tmp_path, capsys):
    from trainers.cli import main

    assert main(["evaluate", "--model", str(saved_model), "--split-file", str(split_file)]) == 0
    assert json.loads(capsys.readouterr().out)["n_rows"] == 60
    assert main(["evaluate", "--model", str(tmp_path), "--split-file", str(split_file)]) == 2  # no config.json


def test_a_split_of_another_data_set_is_refused_by_its_stats(synthetic_data_dir, synthetic_mf_dir, tmp_path, capsys):
    """A smaller data set's ids all fit the model's tables, so only its stats.json shows that they name other users
    and items: ``DIR::split`` of it is refused before scoring; the model's own data set scores."""
    from data_scripts.synthetic import generate_synthetic

    own = ["evaluate", "--model", str(synthetic_mf_dir), "--split-file", f"{synthetic_data_dir}::valid_small"]
    assert run_cli(own) == 0 and json.loads(capsys.readouterr().out)["n_rows"] > 0
    generate_synthetic(tmp_path / "small", num_users=20, num_items=30, interactions_per_user=10)
    other = ["evaluate", "--model", str(synthetic_mf_dir), "--split-file", f"{tmp_path / 'small'}::valid"]
    with pytest.raises(ValueError, match=r"::valid: its data set has num_users = 21 \(stats.json\), but the model's "
                                         r"tables have 201: a split of other data"):
        run_cli(other)
    assert capsys.readouterr().out == ""
