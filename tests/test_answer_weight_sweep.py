"""scripts/answer_weight_sweep.py: recovers a weighted-fusion run's answer and re-weights it against the CF logit."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_scripts.io import load_dataset_dict
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "answer_weight_sweep.py"


@pytest.fixture(scope="module")
def setup(synthetic_data_dir, synthetic_mf_dir, tmp_path_factory):
    """A fake weighted-fusion run on the synthetic valid_small: score = 0.5 · answer + 1.5 · MF logit."""
    split = load_dataset_dict(synthetic_data_dir)["valid_small"]
    rows = np.arange(0, len(split), 2)
    cf = load_scorer(synthetic_mf_dir).score(split)[rows]
    answer = np.random.default_rng(0).normal(size=len(rows)) + np.asarray(split["label"])[rows]
    run = tmp_path_factory.mktemp("sweep") / "run"
    run.mkdir()
    np.save(run / "eval_rows.npy", rows)
    np.save(run / "eval_scores.npy", 0.5 * answer + 1.5 * cf)
    metrics = {"auc": 0.5, "fusion/weight": 1.5, "fusion/answer_weight": 0.5}
    (run / "eval_results.json").write_text(json.dumps({"valid_small": metrics}))
    users, labels = np.asarray(split["user_id"])[rows], np.asarray(split["label"])[rows]
    return run, users, labels, answer, cf


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def cell(scores, users, labels) -> str:
    return "{auc:.4f} / {uauc:.4f}".format(**ranking_report(users, labels, scores))


def test_recovers_the_answer_and_reweights_it(setup, synthetic_data_dir, synthetic_mf_dir):
    run, users, labels, answer, cf = setup
    result = run_script(
        "--data", synthetic_data_dir, "--cf", synthetic_mf_dir, "--run", run, "--answer-weights", "0", "2"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| run |"))
    assert row.split("|")[5:7] == [" a = 0 ", " a = 2 "]
    cells = [value.strip() for value in result.stdout.splitlines()[-1].split("|")[1:-1]]
    assert cells[:3] == ["run", "0.50", "1.50"]
    assert cells[3] == cell(answer, users, labels)
    assert cells[4] == cell(cf, users, labels)
    assert cells[5] == cell(2 * answer + 1.5 * cf, users, labels) != cells[4]


def test_rejects_a_run_without_a_weighted_fusion(synthetic_data_dir, synthetic_mf_dir, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    np.save(plain / "eval_rows.npy", np.arange(2))
    np.save(plain / "eval_scores.npy", np.zeros(2))
    (plain / "eval_results.json").write_text(json.dumps({"valid_small": {"auc": 0.5}}))
    result = run_script("--data", synthetic_data_dir, "--cf", synthetic_mf_dir, "--run", plain)
    assert result.returncode == 2 and "not a `score_fusion: weighted` run" in result.stderr
    result = run_script("--data", synthetic_data_dir, "--cf", synthetic_mf_dir, "--run", tmp_path / "missing")
    assert result.returncode == 2 and "missing: no such folder" in result.stderr
    assert "Traceback" not in result.stderr
