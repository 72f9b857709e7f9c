"""Cross-fitted CF inputs for stage cie: folds of user contexts, refitted CF models, Procrustes, and the model and
collator paths that carry precomputed CF inputs."""

import numpy as np
import pytest
import torch
from datasets import Dataset

from data_scripts.io import load_dataset_dict
from data_scripts.synthetic import generate_synthetic
from modeling_cl3mrec import CL3MRecProcessor
from trainers.cf_training import TRAIN_DEFAULTS, dataset_to_tensors, load_cf_data, save_run, train_cf_model
from trainers.inference.metrics import auc
from trainers.training.cross_fitting import (
    CROSS_FIT_COLUMNS,
    add_cross_fitted_columns,
    context_folds,
    cross_fit_split,
    procrustes_rotation,
    refit_fold_models,
)
from trainers.training.prompt_dataset import CL3MRecCollator, context_groups, tokenize_dataset
from trainers.training.training_args import CL3MRecTrainingArguments


def test_procrustes_recovers_a_rotation():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(50, 6, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator))
    found = procrustes_rotation(source, source @ rotation)
    torch.testing.assert_close(found, rotation, atol=1e-5, rtol=0)
    torch.testing.assert_close(found @ found.T, torch.eye(6), atol=1e-5, rtol=0)


def test_context_folds_keep_each_user_context_together():
    users = [1, 1, 1, 2, 2, 3, 3, 4, 5, 6, 7, 8]
    histories = [[9, 1, 2], [9, 1, 2], [5, 1, 2], [3], [3], [], [], [1], [2], [3], [4], [5]]
    rows = Dataset.from_dict({"user_id": users, "history_item_ids": histories})
    groups = context_groups(rows, recent_history=lambda history: history[-2:])
    folds = context_folds(groups, 3, seed=0)
    assert folds.shape == (12,) and set(folds) == {0, 1, 2}
    # rows 0-2: the same two most recent items (the prompt's context) -> one fold; so rows 3-4 and 5-6
    assert folds[0] == folds[1] == folds[2] and folds[3] == folds[4] and folds[5] == folds[6]
    np.testing.assert_array_equal(folds, context_folds(groups, 3, seed=0))
    assert not np.array_equal(folds, context_folds(groups, 3, seed=1))
    with pytest.raises(ValueError, match="at least 2 folds"):
        context_folds(groups, 1, seed=0)
    with pytest.raises(ValueError, match="needs at least 20 user contexts, found 8"):
        context_folds(groups, 20, seed=0)


@pytest.fixture(scope="module")
def synthetic_cf_run(tmp_path_factory):
    """A synthetic data set and an MF model (with biases) trained on all of its train split, saved as a CF run."""
    root = tmp_path_factory.mktemp("cross_fit")
    generate_synthetic(root / "data", num_users=60, num_items=80, interactions_per_user=30, seed=0)
    fields = {"encoder_type": "mf", "hidden_size": 8, "use_bias": True, "max_history": 5}
    splits, num_users, num_items = load_cf_data(str(root / "data"), 5)
    train_args = {**TRAIN_DEFAULTS, "epochs": 30, "patience": 30, "lr": 0.02, "batch_size": 128}
    model, summary = train_cf_model(fields, train_args, splits, num_users, num_items, seed=3)
    save_run(model, summary, root / "cf")
    return root, model.eval(), load_dataset_dict(root / "data")


def test_refit_fold_models_follow_the_saved_recipe_without_their_fold(synthetic_cf_run):
    root, full, dataset_dict = synthetic_cf_run
    train = dataset_dict["train"]
    folds = context_folds(context_groups(train, recent_history=lambda h: h[-5:]), 2, seed=0)
    models = refit_fold_models(root / "cf", dataset_dict, dataset_to_tensors(train, 5), folds)
    assert len(models) == 2
    for fold, model in enumerate(models):
        assert model.config.hidden_size == 8 and model.config.use_bias
        seen = set(np.asarray(train["item_id"])[folds != fold])
        warm = set(torch.nonzero(model.encoder.item_is_warm).flatten().tolist())
        assert warm == seen  # fitted on the rows outside its fold only


def test_cross_fitted_inputs_come_from_models_that_did_not_see_the_row(synthetic_cf_run):
    root, full, dataset_dict = synthetic_cf_run
    recent = lambda history: history[-5:]  # noqa: E731
    inputs = cross_fit_split(full.encoder, "embedding_bias", root / "cf", dataset_dict, "train", 3, 0, recent)
    train = dataset_to_tensors(dataset_dict["train"], 5)
    rows = len(train)
    assert inputs["cf_user_features"].shape == inputs["cf_item_features"].shape == (rows, 9)
    assert inputs["cf_logits"].shape == (rows,)
    # The rotation is orthogonal and turns users and items alike: embedding . embedding + biases = the fold's score.
    users, items = (torch.from_numpy(inputs[name]) for name in ("cf_user_features", "cf_item_features"))
    rebuilt = (users[:, :8] * items[:, :8]).sum(-1) + users[:, 8] + items[:, 8]
    np.testing.assert_allclose(rebuilt.numpy(), inputs["cf_logits"], atol=1e-4)
    # The leak the cross-fitting removes: the full model ranks its own train rows far better than unseen ones.
    labels = train.labels.numpy()
    full_logits = full.encoder.score(train.user_ids, train.item_ids, train.history_item_ids).detach().numpy()
    assert auc(labels, inputs["cf_logits"]) < auc(labels, full_logits) - 0.05


def test_add_cross_fitted_columns_follow_the_subsample(tiny_rows):
    rows = np.array([5, 2, 7])
    inputs = {
        "cf_user_features": np.arange(24 * 3, dtype=np.float32).reshape(24, 3),
        "cf_item_features": -np.arange(24 * 3, dtype=np.float32).reshape(24, 3),
        "cf_logits": np.arange(24, dtype=np.float32) / 10,
    }
    dataset = add_cross_fitted_columns(tiny_rows.select(rows), inputs, rows)
    assert dataset["cf_logits"] == pytest.approx([0.5, 0.2, 0.7])
    assert dataset["cf_user_features"][1] == [6.0, 7.0, 8.0]


def _cross_fitted_batch(model, tokenizer, tiny_rows, rows, prefix_parts=None):
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=True, max_history=5)
    base = processor.encode_rows([tiny_rows[int(row)] for row in rows])
    ids = CL3MRecCollator(processor)(base)
    users, items = model.cf_features(ids["user_ids"], ids["item_ids"], ids["history_item_ids"])
    logits = model.cf_encoder.score(ids["user_ids"], ids["item_ids"], ids["history_item_ids"])
    features = [
        {**row, "label": 1, "cf_user_features": u.tolist(), "cf_item_features": i.tolist(), "cf_logits": float(s)}
        for row, u, i, s in zip(base, users.detach(), items.detach(), logits.detach())
    ]
    return CL3MRecCollator(processor, prefix_parts)(features)


@pytest.mark.parametrize("shared", [False, True])
def test_model_reads_precomputed_cf_inputs(make_cl3mrec, tiny_rows, shared):
    """Given the encoder's own features and logits, the scores are the encoder path's; other values change them."""
    model, tokenizer = make_cl3mrec("llama", "mf", seed=1, cf_features="embedding_bias", score_fusion="residual")
    rows = [0, 20, 1, 21, 2]  # rows 0/20 and 1/21 share a user context (user 1 + i % 5, history by i % 4)
    batch = _cross_fitted_batch(model, tokenizer, tiny_rows, rows, model.shared_prefix_parts if shared else None)
    assert ("prefix_input_ids" in batch) == shared
    assert batch["cf_user_features"].shape == (5, 9) and batch["cf_logits"].shape == (5,)
    precomputed = ("cf_user_features", "cf_item_features", "cf_logits")
    plain = {key: value for key, value in batch.items() if key not in precomputed}
    with torch.no_grad():
        expected = model(**plain).logits
        given = model(**batch).logits
        torch.testing.assert_close(given, expected, atol=1e-5, rtol=0)
        moved = model(**{**batch, "cf_logits": batch["cf_logits"] + 1.0}).logits
        torch.testing.assert_close(moved - given, torch.full_like(given, model.score_fusion.weight.item()))
        other_items = model(**{**batch, "cf_item_features": batch["cf_item_features"].flip(0)}).logits
    assert not torch.allclose(other_items, given)
    with pytest.raises(ValueError, match="need cf_logits"):
        model(**{**batch, "cf_logits": None})
    with pytest.raises(ValueError, match="both cf_user_features and cf_item_features"):
        model(**{**batch, "cf_item_features": None})
    with pytest.raises(ValueError, match="cf_user_features has width 8, the projector reads 9"):
        model(**{**batch, "cf_user_features": batch["cf_user_features"][:, :8]})


def test_cross_fit_columns_survive_tokenising(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=True, max_history=5)
    rows = np.arange(4)
    inputs = {name: np.ones((24, 8), dtype=np.float32) for name in CROSS_FIT_COLUMNS[:2]}
    inputs["cf_logits"] = np.linspace(0, 1, 24, dtype=np.float32)
    tokenized = tokenize_dataset(add_cross_fitted_columns(tiny_rows.select(rows), inputs, rows), processor)
    assert set(CROSS_FIT_COLUMNS) <= set(tokenized.column_names)
    batch = CL3MRecCollator(processor)(list(tokenized))
    torch.testing.assert_close(batch["cf_logits"], torch.from_numpy(inputs["cf_logits"][:4]))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"cf_cross_fit_folds": 1}, "0 \\(off\\) or >= 2"),
        ({"cf_cross_fit_folds": 3, "train_cf_encoder": True}, "frozen"),
    ],
)
def test_cross_fit_settings_are_checked(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        CL3MRecTrainingArguments(output_dir=str(tmp_path), use_cpu=True, stage="cie", **values)


def test_a_cf_run_without_its_recipe_is_refused(synthetic_cf_run, tmp_path):
    root, _, dataset_dict = synthetic_cf_run
    train = dataset_to_tensors(dataset_dict["train"], 5)
    folds = np.arange(len(train)) % 2
    with pytest.raises(ValueError, match="no metrics.json"):
        refit_fold_models(tmp_path, dataset_dict, train, folds)
    (tmp_path / "metrics.json").write_text('{"seed": 1}')
    with pytest.raises(ValueError, match="no \\['train_args'\\]"):
        refit_fold_models(tmp_path, dataset_dict, train, folds)
