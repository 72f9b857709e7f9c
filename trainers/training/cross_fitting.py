"""Cross-fitted CF inputs for stage `cie`: each train row gets the CF features and logit of a CF model that never
saw the row.

Why: the CF model behind stage `cie` was fitted on the train split, so on train rows its view is close to an oracle
(MF ranks its own train rows at AUC 0.957, valid_small at 0.725). A projector (and a residual fusion weight) trained
on those rows learns to lean on the CF input, then meets valid rows where that input is far weaker. Cross-fitting,
as in stacking (Wolpert, "Stacked generalization", 1992) and double machine learning (Chernozhukov et al., 2018):
split train into K folds of user contexts, refit the CF model's own recipe (its saved config, train arguments and
seed: ``metrics.json``) on the other K − 1 folds, and give each row the view of the model that did not see it.
Validation and test rows keep the full-train CF model, as before.

A refitted model's embeddings come out in its own rotation of the latent space (a dot-product score does not change
when one orthogonal matrix turns users and items alike), so each fold model is turned onto the full model by
orthogonal Procrustes over the item table it shares with it (Schönemann, 1966): the projector reads one space.

Rows of one user context (user and recent history, ``CL3MRecProcessor.context_key``) share a fold: they share a
prompt prefix, whose user placeholder is filled once for them all.
"""

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import torch

from modeling_cl3mrec.configuration_cf import CFRecConfig
from modeling_cl3mrec.modeling_cf import CFRecModel
from modeling_cl3mrec.modeling_cl3mrec import entity_features

from ..cf_training import REPORT_SPLITS, CFTensors, dataset_to_tensors, train_cf_model
from ..inference.metrics import auc
from .prompt_dataset import CROSS_FIT_COLUMNS, context_groups

logger = logging.getLogger(__name__)


def context_folds(groups, num_folds: int, seed: int) -> np.ndarray:
    """Fold `[N]` (0 … K − 1) of each row from its user context `groups [N]` (`prompt_dataset.context_groups`):
    contexts are dealt to folds at random, so all rows of a context share a fold and every fold gets one.
    Deterministic for a given `seed`."""
    if num_folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {num_folds}")
    count = int(np.max(groups)) + 1 if len(groups) else 0
    if count < num_folds:
        raise ValueError(
            f"cross-fitting into {num_folds} folds needs at least {num_folds} user contexts, found {count}"
        )
    fold_of_context = np.random.default_rng(seed).permutation(np.arange(count) % num_folds)
    return fold_of_context[np.asarray(groups)]


def procrustes_rotation(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The orthogonal `R [d, d]` minimising `‖source @ R − target‖` for `source, target [n, d]` (rows paired)."""
    left, _, right = torch.linalg.svd(source.T.double() @ target.double())
    return (left @ right).to(source.dtype)


def _cf_recipe(cf_model_dir) -> tuple[CFRecConfig, dict, dict, int]:
    """`(config, model fields, train arguments, seed)` a saved CF run was trained with (`config.json`,
    `metrics.json`)."""
    path = Path(cf_model_dir)
    if not (path / "metrics.json").is_file():
        raise ValueError(f"{path}: no metrics.json (a `cl3mrec cf train` run): cross-fitting refits its recipe")
    metrics = json.loads((path / "metrics.json").read_text())
    missing = [key for key in ("train_args", "seed") if key not in metrics]
    if missing:
        raise ValueError(f"{path / 'metrics.json'}: no {missing}: cross-fitting refits the CF model's own recipe")
    config = CFRecConfig.from_pretrained(path)
    values = config.to_dict()
    own_fields = set(inspect.signature(CFRecConfig.__init__).parameters) - {"self", "kwargs", "num_users", "num_items"}
    fields = {key: values[key] for key in own_fields if key in values}
    return config, fields, metrics["train_args"], int(metrics["seed"])


def refit_fold_models(cf_model_dir, dataset_dict, train: CFTensors, folds: np.ndarray) -> list[CFRecModel]:
    """One CF model per fold k, trained with the recipe of `cf_model_dir` on the rows of `train` (the train split as
    tensors) outside fold k (early stopping on the recipe's selection split of `dataset_dict`, as the full model
    was)."""
    config, fields, train_args, seed = _cf_recipe(cf_model_dir)
    missing = [name for name in REPORT_SPLITS if name not in dataset_dict]
    if missing:
        raise ValueError(f"cross-fitting refits CF models with their selection split: the data has no {missing}")
    splits = {name: dataset_to_tensors(dataset_dict[name], config.max_history) for name in REPORT_SPLITS}
    models = []
    for fold in range(int(folds.max()) + 1):
        fold_train = train.select(torch.from_numpy(np.flatnonzero(folds != fold)))
        model, summary = train_cf_model(
            fields, train_args, {**splits, "train": fold_train}, config.num_users, config.num_items, seed
        )
        logger.info(
            "cross-fitting: fold %d model (%d train rows) valid_small AUC %.4f",
            fold, len(fold_train), summary["valid_small"]["auc"],
        )  # fmt: skip
        models.append(model.eval())
    return models


@torch.no_grad()
def cross_fitted_inputs(encoder, fold_models, folds: np.ndarray, train: CFTensors, cf_features: str) -> dict:
    """What each train row's CF placeholders and residual fusion read, from the fold model that did not see it.

    Args:
        encoder: the full-train `CollaborativeEncoder` the stage reads (fold models are turned onto its space).
        fold_models: :func:`refit_fold_models`; folds `[N]`: the fold of each row of `train`.
        cf_features: `CL3MRecConfig.cf_features`.

    Returns `{"cf_user_features": [N, f], "cf_item_features": [N, f], "cf_logits": [N]}` (float32 numpy arrays).
    """
    width = encoder.config.hidden_size
    all_items = torch.arange(encoder.config.num_items)
    target = encoder.encode_items(all_items)  # [I, d]
    rows, parts = [], []
    for fold, model in enumerate(fold_models):  # every fold holds rows (context_folds)
        fold_rows = torch.from_numpy(np.flatnonzero(folds == fold))
        fold_encoder = model.encoder
        shared = fold_encoder.item_is_warm & encoder.item_is_warm
        rotation = procrustes_rotation(fold_encoder.encode_items(all_items)[shared], target[shared])  # [d, d]
        ids = (train.user_ids[fold_rows], train.item_ids[fold_rows], train.history_item_ids[fold_rows])
        users, items = entity_features(fold_encoder, *ids, cf_features)  # [n, f] each
        turned = [torch.cat([part[:, :width] @ rotation, part[:, width:]], dim=-1) for part in (users, items)]
        rows.append(fold_rows)
        parts.append((*turned, fold_encoder.score(*ids)))
    order = torch.cat(rows).argsort()  # back to row order
    return {
        name: torch.cat(columns)[order].float().numpy() for name, columns in zip(CROSS_FIT_COLUMNS, zip(*parts))
    }


def cross_fit_split(
    encoder, cf_features: str, cf_model_dir, dataset_dict, train_split: str, num_folds: int, seed: int, recent_history
) -> dict:
    """Cross-fitted CF inputs (:func:`cross_fitted_inputs`) of every row of `dataset_dict[train_split]`.

    Args:
        encoder: the stage's CF encoder (`CL3MRecModel.cf_encoder`), loaded from the CF run `cf_model_dir`.
        cf_features: `CL3MRecConfig.cf_features`.
        num_folds, seed: folds of user contexts (:func:`context_folds`), cut by `recent_history` as the prompts are.
    """
    train_set = dataset_dict[train_split]
    folds = context_folds(context_groups(train_set, recent_history), num_folds, seed)
    train = dataset_to_tensors(train_set, encoder.config.max_history)
    fold_models = refit_fold_models(cf_model_dir, dataset_dict, train, folds)
    inputs = cross_fitted_inputs(encoder, fold_models, folds, train, cf_features)
    with torch.no_grad():
        full_logits = encoder.score(train.user_ids, train.item_ids, train.history_item_ids).float().numpy()
    labels = train.labels.numpy()
    logger.info(
        "cross-fitting: %d folds; train-row CF AUC %.4f cross-fitted vs %.4f from the full-train model",
        num_folds, auc(labels, inputs["cf_logits"]), auc(labels, full_logits),
    )  # fmt: skip
    return inputs


def add_cross_fitted_columns(dataset, inputs: dict, rows: np.ndarray):
    """Rows `rows` of the split `inputs` were computed for (in that order: `dataset`) with :data:`CROSS_FIT_COLUMNS`."""
    for name in CROSS_FIT_COLUMNS:
        dataset = dataset.add_column(name, inputs[name][rows].tolist())
    return dataset
