"""Model cards: metadata parses back with the right metrics; the text documents recipe, use and citations."""

import argparse
import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from trainers.hub.model_card import dataset_name_from_source, render_model_card, split_reports, write_model_card

LLM_CONFIG = {
    "model_type": "cl3mrec",
    "tokens_per_entity": 2,
    "use_history_embeddings": True,
    "answer_score": "yes_minus_no",
    "text_config": {"model_type": "llama", "hidden_size": 576, "_name_or_path": "/tmp/smollm2-135m"},
    "cf_config": {"model_type": "cl3mrec_cf", "encoder_type": "lightgcn", "hidden_size": 64, "num_users": 839},
}
CF_CONFIG = {"model_type": "cl3mrec_cf", "encoder_type": "sasrec", "hidden_size": 32, "num_users": 839, "num_items": 3256}


def report(auc, uauc, cold_auc=None):
    return {
        "auc": auc,
        "uauc": uauc,
        "n_rows": 100,
        "n_users_uauc": 9,
        "warm": {"auc": auc + 0.01, "uauc": uauc + 0.01, "n_rows": 80, "n_users_uauc": 8},
        "cold": {"auc": cold_auc, "uauc": None, "n_rows": 20, "n_users_uauc": 0},
    }


CIE_RECIPE = [{"stage": "lora"}, {"stage": "cie", "contrastive_weight": 0.25, "contrastive_temperature": 0.07}]


def make_dir(path: Path, config: dict, eval_results=None, summary=None, processor_config=None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if processor_config is not None:
        (path / "processor_config.json").write_text(json.dumps(processor_config))
    if eval_results is not None:
        (path / "eval_results.json").write_text(json.dumps(eval_results))
    if summary is not None:
        (path / "training_summary.json").write_text(json.dumps(summary))
    return path


def results_by_key(card: ModelCard) -> dict:
    return {(r.dataset_split, r.metric_type, r.metric_config): r.metric_value for r in card.data.eval_results}


def test_card_metadata_round_trips_per_split_results(tmp_path):
    evals = {"valid_small": report(0.7111, 0.6611, cold_auc=0.6), "valid": report(0.7222, 0.6722)}
    summary = {"stage_recipe": CIE_RECIPE, "train_runtime_s": 42}
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, evals, summary, processor_config={"max_history": 10})
    path = write_model_card(
        model_dir, base_model="HuggingFaceTB/SmolLM2-135M-Instruct", datasets=["ml-1m"], repo_id="org/rec"
    )
    assert path == model_dir / "README.md"
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "README.md",
        "config.json",
        "eval_results.json",
        "processor_config.json",
        "training_summary.json",
    ]  # the temporary file of the atomic write is gone
    assert path.stat().st_mode & 0o777 == 0o644

    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "transformers"
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data.datasets == ["ml-1m"]
    assert {"recommendation", "cl3mrec", "lightgcn"} <= set(data.tags)
    assert data.model_name == "rec"
    results = results_by_key(card)
    assert results[("valid_small", "roc_auc", "all")] == pytest.approx(0.7111)
    assert results[("valid_small", "uauc", "all")] == pytest.approx(0.6611)
    assert results[("valid", "roc_auc", "all")] == pytest.approx(0.7222)
    assert results[("valid", "uauc", "warm")] == pytest.approx(0.6822)
    assert results[("valid_small", "roc_auc", "cold")] == pytest.approx(0.6)
    # Undefined metrics (None) are not published.
    assert ("valid", "roc_auc", "cold") not in results and ("valid_small", "uauc", "cold") not in results
    assert len(results) == 9  # 2 splits x (all, warm) x 2 metrics + the one defined cold metric
    assert {r.task_type for r in data.eval_results} == {"recommendation"}
    assert {r.dataset_type for r in data.eval_results} == {"ml-1m"}

    text = card.text
    assert "| valid_small | all | 0.7111 | 0.6611 | 100 | 9 |" in text
    assert "| valid | cold | n/a | n/a | 20 | 0 |" in text
    assert "| 2 | `cie` | contrastive_weight = 0.25, contrastive_temperature = 0.07 |" in text
    assert "at most 10 history items" in text
    assert '"Yes" − "No" logit' in text
    assert 'pipeline("cl3mrec-scoring", model="org/rec", trust_remote_code=True)' in text
    assert 'AutoProcessor.from_pretrained("org/rec", trust_remote_code=True)' in text
    assert '"user_id": 12,' in text and '"item_id": 733' in text and "<|hist_emb|>" in text
    assert "| train_runtime_s | 42 |" in text
    assert "## Limitations" in text
    assert "arXiv:2310.19488" in text and "ICDM" in text and "2025" in text


def test_flat_report_from_file_gets_default_split_and_local_base_model_is_kept_out(tmp_path):
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, report(0.7, 0.65))
    card = render_model_card(model_dir, stage_recipe="lora -> cie", default_split="valid_small")
    assert card.data.base_model is None  # /tmp/smollm2-135m is no Hub id
    assert "`smollm2-135m`, a local folder" in card.text  # the text names the LLM, never its local path
    assert "/tmp" not in card.text
    results = results_by_key(ModelCard(str(card)))
    assert results[("valid_small", "roc_auc", "all")] == pytest.approx(0.7)
    assert {split for split, _, _ in results} == {"valid_small"}
    assert "| 1 | `lora` | defaults |" in card.text and "| 2 | `cie` | defaults |" in card.text
    assert "history items" not in card.text  # no processor_config.json: the card does not guess max_history
    assert card.data.model_name == "m"


def test_explicit_eval_results_win_over_file_and_no_results_means_no_model_index(tmp_path):
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, report(0.5, 0.5))
    card = render_model_card(model_dir, eval_results={"valid": report(0.8, 0.75)})
    assert results_by_key(card)[("valid", "roc_auc", "all")] == pytest.approx(0.8)

    bare = render_model_card(make_dir(tmp_path / "bare", LLM_CONFIG))
    assert bare.data.eval_results is None
    assert "model-index" not in str(bare)
    assert "No evaluation results were recorded" in bare.text
    assert "The stage recipe was not recorded" in bare.text


def test_cf_model_card(tmp_path):
    card = render_model_card(make_dir(tmp_path / "cf", CF_CONFIG, report(0.69, 0.64)), repo_id="org/cf")
    assert "collaborative-filtering recommender" in card.text and "`sasrec` encoder" in card.text
    assert 'AutoModel.from_pretrained("org/cf", trust_remote_code=True)' in card.text
    assert "AutoTokenizer" not in card.text
    assert "sasrec" in card.data.tags


def test_write_model_card_overwrites_existing_readme(tmp_path):
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, report(0.6, 0.6))
    (model_dir / "README.md").write_text("old card")
    write_model_card(model_dir, eval_results=report(0.61, 0.62))
    assert results_by_key(ModelCard.load(model_dir / "README.md"))[("valid", "uauc", "all")] == pytest.approx(0.62)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        render_model_card(tmp_path)
    with pytest.raises(ValueError, match="model_type 'llama'"):
        render_model_card(make_dir(tmp_path / "llama", {"model_type": "llama"}))
    with pytest.raises(ValueError, match=r"eval_results\['valid'\] is not a ranking_report"):
        split_reports({"valid": {"uauc": 0.5}})
    bad_json = make_dir(tmp_path / "bad", LLM_CONFIG)
    (bad_json / "eval_results.json").write_text("{not json")
    with pytest.raises(ValueError, match="eval_results.json is not valid JSON"):
        render_model_card(bad_json)
    with pytest.raises(ValueError, match=r"stage_recipe\[0\]"):
        render_model_card(make_dir(tmp_path / "r", LLM_CONFIG), stage_recipe=[{"epochs": 1}])


def test_text_only_llm_card_has_no_cf_parts(tmp_path):
    config = {**LLM_CONFIG, "cf_config": None, "use_history_embeddings": False, "answer_score": "yes"}
    card = render_model_card(make_dir(tmp_path / "text", config, {"valid_small": report(0.6, 0.55)}))
    assert "text-only LLM recommender" in card.text
    assert 'pipeline("cl3mrec-scoring"' in card.text and "model(**batch)" in card.text
    assert "<|user_emb|>" not in card.text and "Users / items" not in card.text
    assert card.data.tags == ["recommendation", "cl3mrec", "collm", "collaborative-filtering", "llm-rec"]


def test_dataset_name_from_training_summary(tmp_path):
    summary = {"dataset_name": "Synthetic (80 users)", "init_from": None, "train": {"steps": 4}}
    card = render_model_card(make_dir(tmp_path / "s", LLM_CONFIG, report(0.6, 0.6), summary))
    assert {(r.dataset_name, r.dataset_type) for r in card.data.eval_results} == {
        ("Synthetic (80 users)", "synthetic-80-users")
    }
    assert "- Evaluation data: Synthetic (80 users)." in card.text
    assert "| train.steps | 4 |" in card.text and "init_from" not in card.text


@pytest.mark.parametrize(
    "source, name",
    [
        ("collm:../shared/data/ml-1m", "MovieLens-1M (CoLLM time split)"),
        ("collm:/data/book", "Amazon-Book (CoLLM time split)"),
        ("synthetic:users=80,items=120,seed=0", "synthetic (users=80,items=120,seed=0)"),
        ("movielens-1m:raw/ml-1m", "MovieLens-1M (last 20 months)"),
        ("something-else", "something-else"),
    ],
)
def test_dataset_name_from_stats_source(source, name):
    assert dataset_name_from_source(source) == name


def test_base_model_metadata_only_for_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "llm").mkdir(parents=True)  # a local folder that also looks like "org/name"
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, report(0.6, 0.6))
    assert render_model_card(model_dir, base_model="runs/llm").data.base_model is None
    hub = render_model_card(model_dir, base_model="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert hub.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_hyperparameters_versions_and_plots_from_the_export(tmp_path):
    summary = {
        "stage_recipe": CIE_RECIPE,
        "hyperparameters": [{"stage": "lora", "learning_rate": 5e-4, "lora_r": 8}, {"stage": "cie", "learning_rate": 1e-3}],
        "base_model": None,
        "base_model_folder": "smollm2-135m",
        "framework_versions": {"torch": "2.13.0", "transformers": "5.24.0"},
        "init_from": str(tmp_path / "runs" / "lora"),
        "data_source": f"collm:{tmp_path}/data",
    }
    model_dir = make_dir(tmp_path / "m", LLM_CONFIG, report(0.7, 0.65), summary)
    (model_dir / "plots").mkdir()
    (model_dir / "plots" / "eval_auc_uauc.png").write_bytes(b"png")
    captions = [
        {"file": "plots/eval_auc_uauc.png", "title": "AUC and UAUC on valid", "caption": "No CF encoder bars: why."},
        {"file": "plots/training_curves.png", "title": "Training curves", "caption": "missing file: not embedded"},
    ]
    (model_dir / "plots" / "captions.json").write_text(json.dumps(captions))
    text = render_model_card(model_dir).text
    assert "| hyper-parameter | `lora` | `cie` |" in text
    assert "| learning_rate | 0.0005 | 0.001 |" in text and "| lora_r | 8 |  |" in text
    assert "- Framework versions used in training: torch 2.13.0, transformers 5.24.0." in text
    assert "- Base model: `smollm2-135m`, a local folder." in text
    assert "![AUC and UAUC on valid](plots/eval_auc_uauc.png)" in text and "No CF encoder bars: why." in text
    assert "training_curves.png" not in text
    assert str(tmp_path) not in text and "/tmp" not in text


def test_card_without_recorded_versions_names_the_rendering_environment(tmp_path):
    text = render_model_card(make_dir(tmp_path / "m", CF_CONFIG, report(0.69, 0.64))).text
    assert "Framework versions (not recorded in training; those that rendered this card): torch " in text
    assert "The hyper-parameters were not recorded for this model." in text


def cf_train(data_dir: Path, out: Path, tmp_path: Path) -> dict:
    """``cl3mrec cf train`` (in process) of a tiny MF for one epoch on ``data_dir``; returns its ``metrics.json``."""
    import yaml

    from trainers.cli import cf_cli

    spec = {"model": {"encoder_type": "mf", "hidden_size": 4}, "train": {"lr": 0.02, "epochs": 1, "patience": 1}}
    (tmp_path / "mf.yaml").write_text(yaml.safe_dump(spec))
    parser = argparse.ArgumentParser()
    cf_cli.register(parser.add_subparsers(dest="command", required=True))
    argv = ["cf", "train", "--config", str(tmp_path / "mf.yaml"), "--data", str(data_dir), "--out", str(out)]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    return json.loads((out / "metrics.json").read_text())


def test_cf_card_of_a_cf_train_run_on_synthetic_data(tmp_path, synthetic_data_dir):
    metrics = cf_train(synthetic_data_dir, tmp_path / "mf", tmp_path)
    source = json.loads((synthetic_data_dir / "stats.json").read_text())["source"]
    assert source.startswith("synthetic:")
    assert metrics["data_source"] == source and metrics["data"] == str(synthetic_data_dir)
    assert {"seed", "train_args", "valid", "valid_small", "config_file"} <= set(metrics)  # readers' keys kept

    card = render_model_card(tmp_path / "mf", repo_id="org/mf")
    auc = metrics["valid_small"]["auc"]
    assert results_by_key(card)[("valid_small", "roc_auc", "all")] == pytest.approx(auc)
    assert {r.dataset_name for r in card.data.eval_results} == {dataset_name_from_source(source)}
    text = card.text
    assert f"| valid_small | all | {auc:.4f} |" in text
    assert f"- Evaluation data: {dataset_name_from_source(source)}." in text and "MovieLens" not in text
    assert "Trained with `cl3mrec cf train`" in text
    assert "| hyper-parameter | `mf` |" in text and "| lr | 0.02 |" in text and "| epochs | 1 |" in text
    assert "| seed | 42 |" in text and "| epochs_run | 1 |" in text
    for llm_text in ("Stages: `lora`", "stage recipe was not recorded", "Base model", "LLM's own biases", "λ"):
        assert llm_text not in text
    assert "hyper-parameters were not recorded" not in text and "trained was not recorded" not in text
    assert str(tmp_path) not in text and str(synthetic_data_dir) not in text  # data / config paths stay out


def test_old_cf_folder_card_says_not_recorded_and_llm_card_never_guesses_movielens(tmp_path):
    old_cf = make_dir(tmp_path / "cf", CF_CONFIG)
    (old_cf / "metrics.json").write_text(json.dumps({"valid_small": report(0.69, 0.64), "seed": 1}))
    card = render_model_card(old_cf)
    assert results_by_key(card)[("valid_small", "roc_auc", "all")] == pytest.approx(0.69)
    assert "- Evaluation data: not recorded." in card.text and "MovieLens" not in card.text
    assert "How this model was trained was not recorded" in card.text
    assert "The hyper-parameters were not recorded for this model." in card.text

    llm = make_dir(tmp_path / "llm", LLM_CONFIG, report(0.6, 0.6), {"stage_recipe": CIE_RECIPE})
    assert "- Evaluation data: not recorded." in render_model_card(llm).text
    assert "MovieLens" not in str(render_model_card(llm))
    named = render_model_card(llm, datasets="org/synthetic-recs")  # the Hub dataset id names the data set
    assert {(r.dataset_name, r.dataset_type) for r in named.data.eval_results} == {
        ("org/synthetic-recs", "org/synthetic-recs")
    }
