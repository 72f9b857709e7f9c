"""The TF-IDF text baseline and the complementarity script that sets text and LLM scores beside a CF model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from data_scripts.io import load_dataset_dict
from modeling_cl3mrec.configuration_cf import CFRecConfig
from modeling_cl3mrec.modeling_cf import CFRecModel
from trainers.inference.scoring import load_scorer
from trainers.inference.text_baseline import TextBaselineScorer

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llm_cf_complementarity.py"


@pytest.fixture(scope="module")
def synthetic(synthetic_data_dir):
    return load_dataset_dict(synthetic_data_dir)


def test_titles_alone_rank_the_synthetic_labels(synthetic):
    train, valid = synthetic["train"], synthetic["valid"]
    full = TextBaselineScorer(train)
    small = TextBaselineScorer(train, max_rows=64, seed=1)
    assert full.num_train_rows == len(train) and small.num_train_rows == 64
    labels = np.asarray(valid["label"])
    full_auc, small_auc = (roc_auc_score(labels, model.score(valid)) for model in (full, small))
    assert full_auc > 0.6 and full_auc > small_auc
    assert full.score(valid.select([3, 1])).tolist() == full.score(valid).take([3, 1]).tolist()
    title_only = TextBaselineScorer(train, fields=("title",))
    assert list(title_only.vectorizers) == ["title"] and not np.allclose(title_only.score(valid), full.score(valid))


def test_rejects_budgets_and_labels_it_cannot_fit(synthetic):
    train = synthetic["train"]
    with pytest.raises(ValueError, match="fields must be a non-empty subset"):
        TextBaselineScorer(train, fields=("genre",))
    with pytest.raises(ValueError, match="max_rows must be >= 2"):
        TextBaselineScorer(train, max_rows=1)
    one_label = train.filter(lambda row: row["label"] == 1)
    with pytest.raises(ValueError, match="one label only"):
        TextBaselineScorer(one_label)


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=300)


def test_complementarity_script_blends_the_text_baseline_with_a_cf_model(synthetic_data_dir, synthetic_mf_dir):
    result = run_script(
        "--data", synthetic_data_dir, "--cf", f"MF={synthetic_mf_dir}",
        "--text-baseline", "200", "--text-fields", "title",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| text TF-IDF")]
    assert len(rows) == 1 and rows[0].startswith("| text TF-IDF, title (200 train rows) | MF |")
    cells = rows[0].split("|")[4:7]
    assert all(0.0 < float(value) < 1.0 for cell in cells for value in cell.split("/"))


def test_complementarity_script_blends_every_combination_of_cf_models(synthetic_data_dir, synthetic_mf_dir, tmp_path):
    other = CFRecModel(CFRecConfig.from_pretrained(synthetic_mf_dir))  # untrained: a second, different scorer
    other.save_pretrained(tmp_path / "random")
    cf = ("--cf", f"MF={synthetic_mf_dir}", "--cf", f"Random={tmp_path / 'random'}")
    result = run_script("--data", synthetic_data_dir, *cf, "--cf-ensembles")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("| ")}
    assert {"MF", "Random", "MF + Random"} <= rows.keys()
    aucs = {name: float(rows[name].split("|")[3].split("/")[0]) for name in ("MF", "Random", "MF + Random")}
    split = load_dataset_dict(synthetic_data_dir)["valid_small"]
    alone = roc_auc_score(split["label"], load_scorer(synthetic_mf_dir).score(split))
    assert aucs["MF"] == pytest.approx(alone, abs=6e-5) and 0.0 < aucs["MF + Random"] < 1.0, aucs


@pytest.mark.parametrize(
    "args, message",
    [
        (["--text-baseline", "one"], "expected a number of train rows >= 2 or 'all'"),
        ([], "nothing to compare"),
        (["--cf-ensembles"], "--cf-ensembles blends two or more --cf models"),
    ],
)
def test_complementarity_script_rejects_bad_arguments(synthetic_data_dir, tmp_path, args, message):
    model = CFRecModel(CFRecConfig(encoder_type="mf", num_users=5, num_items=5, hidden_size=4))
    model.save_pretrained(tmp_path / "mf")
    result = run_script("--data", synthetic_data_dir, "--cf", f"MF={tmp_path / 'mf'}", *args)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr
