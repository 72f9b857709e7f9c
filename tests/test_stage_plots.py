"""Stage plots: loss curves read from the Trainer's log history, AUC / UAUC bars beside the CF encoder's numbers."""

import json

from trainers.training.stage_plots import (
    CAPTIONS_FILE,
    CURVES_FILE,
    PLOTS_DIR,
    RANKING_FILE,
    cf_reference,
    ranking_caption,
    training_curves,
    write_stage_plots,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOG_HISTORY = [
    {"loss": 0.9, "loss/rec": 0.7, "loss/contrastive": 2.1, "contrastive/accuracy": 0.1, "step": 1},
    {"loss": 0.8, "loss/rec": 0.6, "loss/contrastive_user": float("nan"), "contrastive/item_accuracy": 0.2, "step": 2},
    {"eval_loss": 0.7, "eval_auc": 0.6, "step": 2},  # evaluation: not a training curve
    {"train_runtime": 3.0, "train_loss": 0.85, "step": 2},
    {"learning_rate": 1e-3, "grad_norm": 0.5, "step": 2},
]


def report(auc, rows=100):
    return {
        "auc": auc, "uauc": auc - 0.05, "n_rows": rows,
        "warm": {"auc": auc + 0.02, "uauc": None, "n_rows": rows - 20}, "cold": {"auc": None, "uauc": None},
    }


def test_training_curves_hold_every_loss_term_and_accuracy():
    curves = training_curves(LOG_HISTORY)
    assert set(curves) == {"loss", "loss/rec", "loss/contrastive", "contrastive/accuracy", "contrastive/item_accuracy"}
    assert curves["loss/rec"] == ([1, 2], [0.7, 0.6])  # NaN terms and eval / summary entries are left out


def test_cf_reference_only_for_valid_small_numbers(tmp_path):
    cf_dir = tmp_path / "cf"
    cf_dir.mkdir()
    assert cf_reference(None, "valid_small") == (None, "this stage reads no CF encoder")
    assert cf_reference(cf_dir, "valid_small")[1] == "the CF encoder's metrics.json has no valid_small numbers"
    (cf_dir / "metrics.json").write_text(json.dumps({"valid": report(0.74), "valid_small": report(0.72, 5200)}))
    assert cf_reference(cf_dir, "valid_small") == (report(0.72, 5200), "")
    cf_report, why = cf_reference(cf_dir, "valid")
    assert cf_report is None and "not this eval split (valid)" in why


def test_write_stage_plots_writes_pngs_and_captions(tmp_path):
    cf_dir = tmp_path / "cf"
    cf_dir.mkdir()
    (cf_dir / "metrics.json").write_text(json.dumps({"valid_small": report(0.72, 5200)}))
    captions = write_stage_plots(tmp_path / "out", LOG_HISTORY, "valid_small", report(0.66), cf_dir)
    plots = tmp_path / "out" / PLOTS_DIR
    assert [entry["file"] for entry in captions] == [f"{PLOTS_DIR}/{CURVES_FILE}", f"{PLOTS_DIR}/{RANKING_FILE}"]
    assert json.loads((plots / CAPTIONS_FILE).read_text()) == captions
    for name in (CURVES_FILE, RANKING_FILE):
        assert (plots / name).read_bytes().startswith(PNG_MAGIC)
    assert "beside the CF encoder it reads (CF encoder (cf): 5200 rows" in captions[1]["caption"]
    assert "subsample" in captions[1]["caption"]  # 100 stage rows vs 5200 CF rows


def test_without_cf_numbers_the_caption_says_why(tmp_path):
    captions = write_stage_plots(tmp_path / "out", [], "valid", report(0.66), tmp_path / "missing_cf")
    assert [entry["file"] for entry in captions] == [f"{PLOTS_DIR}/{RANKING_FILE}"]  # no loss logged: no curves
    assert "No CF encoder bars: the CF encoder's metrics.json reports valid_small" in captions[0]["caption"]
    assert ranking_caption(report(0.6), None, "this stage reads no CF encoder", "valid_small", "CF").endswith(
        "No CF encoder bars: this stage reads no CF encoder."
    )
