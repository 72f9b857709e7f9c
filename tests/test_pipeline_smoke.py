"""`cl3mrec pipeline --config configs/smoke.yaml` end to end (synthetic data, tiny LLM; ~45 s on 2 cores)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.cli.train_cli import register

SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_pipeline_runs_every_stage_and_reloads_identically(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pipeline", "--config", str(SMOKE_CONFIG), "--out-dir", str(tmp_path / "smoke")])
    assert args.func(args) == 0

    out = tmp_path / "smoke"
    results = json.loads((out / "pipeline_results.json").read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results  # logs went to stderr
    assert list(results["stages"]) == ["lora", "cie"]
    for metrics in results["stages"].values():
        assert 0.0 <= metrics["eval_auc"] <= 1.0 and "eval_uauc" in metrics
    assert "eval_contrastive/accuracy" in results["stages"]["cie"]  # lambda > 0 in the cie stage
    assert results["reload_identical"] and results["reload_max_abs_diff"] <= 1e-4
    merged = Path(results["export_dir"])
    config_json = json.loads((merged / "config.json").read_text())
    assert config_json["model_type"] == "cl3mrec" and "auto_map" in config_json
    assert (merged / "README.md").is_file() and (merged / "eval_results.json").is_file()
    assert list((out / "cache").glob("item_text_*.safetensors")), "text representations were not cached"

    summary = json.loads((merged / "training_summary.json").read_text())
    lora, cie = summary["stage_recipe"]
    assert (lora["stage"], lora["train_rows"], lora["epochs"]) == ("lora", 256, 1.0) and "contrastive_weight" not in lora
    assert (cie["stage"], cie["contrastive_weight"], cie["contrastive_temperature"]) == ("cie", 0.5, 0.1)
    assert [stage["cf_cross_fit_folds"] for stage in summary["hyperparameters"]] == [0, 3]
    assert summary["dataset_name"].startswith("synthetic")
    card = (merged / "README.md").read_text()
    assert "MovieLens" not in card and "base_model" not in card.split("---")[1]  # local tiny LLM: no Hub id
    assert not [path.name for path in out.iterdir() if path.name.startswith(".")]  # no staging left behind

    # The results script reads the finished stage: its valid_small scores as saved, the other half of valid
    # scored from the export (and cached under a name that carries the rows and the export's weights).
    script = Path(__file__).resolve().parents[1] / "scripts" / "ml1m_results.py"
    command = [sys.executable, str(script), "--data", str(out / "data"), "--model", f"cie={merged.parent}",
               "--model", f"MF={out / 'cf'}", "--compare", "cie:MF", "--other-half", "--resamples", "20",
               "--out", str(tmp_path / "table.md")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| cie |")).split("|")
    assert f"{results['stages']['cie']['eval_auc']:.4f}" == row[3].strip()
    assert 0.0 <= float(row[-3]) <= 1.0 and result.stdout.count("| cie − MF |") == 2
    assert len(list(merged.parent.glob("valid_rest_scores_*.npy"))) == 1
