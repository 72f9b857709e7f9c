"""Training collaborative encoders (``CFRecModel``) with BCE, early stopping on a validation AUC.

The YAML of ``configs/cf/<name>.yaml`` (see :func:`load_cf_yaml`) names the data, the model fields
(:class:`CFRecConfig`), the optimiser and the stopping rule; ``search:`` optionally lists a small grid
that ``cl3mrec cf tune`` explores (``cf train`` uses the fixed values only).
"""

import copy
import inspect
import itertools
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple, Optional

import numpy as np
import pyarrow as pa
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import set_seed

from modeling_cl3mrec.configuration_cf import CFRecConfig
from modeling_cl3mrec.modeling_cf import CFRecModel
from trainers.atomic_io import require_empty_or_own, staging_dir, write_json_atomic
from trainers.inference.metrics import auc, ranking_report
from trainers.training.config_values import checked_value, load_yaml_file, refuse_unknown

logger = logging.getLogger(__name__)

REPORT_SPLITS = ("valid", "valid_small")
CF_CONFIG_KEYS = ("data", "out", "seed", "model", "train", "search")  # a CF experiment YAML's top level


class TrainField(NamedTuple):
    """One ``train:`` field of a CF config: its annotation (for ``config_values.checked_value``), default, and
    smallest allowed value (``None``: no range), which ``inclusive`` says is allowed itself."""

    annotation: object
    default: object
    minimum: float | None = None
    inclusive: bool = True


TRAIN_FIELDS = {
    "lr": TrainField(float, 1e-3, 0.0, inclusive=False),
    "weight_decay": TrainField(float, 0.0, 0.0),
    "bias_weight_decay": TrainField(Optional[float], None, 0.0),  # None: the same as weight_decay
    "batch_size": TrainField(int, 1024, 1),
    "epochs": TrainField(int, 50, 1),
    "patience": TrainField(int, 5, 1),
    "selection_split": TrainField(Literal[REPORT_SPLITS], "valid"),
}
TRAIN_DEFAULTS = {name: field.default for name, field in TRAIN_FIELDS.items()}
# Model fields a YAML may set → annotation (None: unannotated): CFRecConfig's own arguments but the id-space sizes,
# which come from the data. Ranges are CFRecConfig's own checks.
MODEL_FIELDS = {
    name: None if parameter.annotation is inspect.Parameter.empty else parameter.annotation
    for name, parameter in inspect.signature(CFRecConfig.__init__).parameters.items()
    if name not in ("self", "kwargs", "num_users", "num_items")
}
# History length the CF data is padded to when the model fields leave it out: CFRecConfig's own default.
DEFAULT_MAX_HISTORY = inspect.signature(CFRecConfig.__init__).parameters["max_history"].default
# A saved CF run: model, its remote code, records, and the card `cl3mrec push` writes beside them.
CF_MODEL_FILES = ("config.json", "model.safetensors", "*.py", "metrics.json", "search.json", "README.md")
BIAS_PARAMETERS = ("encoder.global_bias", "encoder.user_bias.weight", "encoder.item_bias.weight")


@dataclass
class CFTensors:
    """One split as tensors: ``user_ids [N]``, ``item_ids [N]``, ``history_item_ids [N, L]`` (left-padded
    with 0, most recent last), ``labels [N]`` (float 0/1), ``warm [N]`` (bool)."""

    user_ids: torch.LongTensor
    item_ids: torch.LongTensor
    history_item_ids: torch.LongTensor
    labels: torch.FloatTensor
    warm: torch.BoolTensor

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def select(self, index: torch.LongTensor) -> "CFTensors":
        """The rows ``index [n]`` as their own :class:`CFTensors`."""
        return CFTensors(self.user_ids[index], self.item_ids[index], self.history_item_ids[index], self.labels[index],
                         self.warm[index])  # fmt: skip

    def batch(self, index: torch.LongTensor) -> dict:
        """The rows ``index [B]`` as ``CFRecModel.forward`` keyword arguments (with ``labels``)."""
        return {
            "user_ids": self.user_ids[index],
            "item_ids": self.item_ids[index],
            "history_item_ids": self.history_item_ids[index],
            "labels": self.labels[index],
        }


def pad_histories(histories: pa.Array, max_history: int) -> np.ndarray:
    """Keep the ``max_history`` most recent ids of each list and left-pad with 0 → ``[N, max_history]``.

    Vectorised over the Arrow list offsets (no per-row Python loop).
    """
    if isinstance(histories, pa.ChunkedArray):
        histories = histories.combine_chunks()
    offsets = histories.offsets.to_numpy().astype(np.int64)  # [N + 1], absolute into .values
    values = histories.values.to_numpy(zero_copy_only=False).astype(np.int64)
    ends = offsets[1:]
    lengths = np.minimum(ends - offsets[:-1], max_history)  # [N]
    slots = np.arange(max_history)[None, :]  # [1, L]
    index = ends[:, None] - max_history + slots  # [N, L]
    valid = slots >= (max_history - lengths)[:, None]
    out = np.zeros((len(ends), max_history), dtype=np.int64)
    out[valid] = values[index[valid]]
    return out


def dataset_to_tensors(dataset: Dataset, max_history: int) -> CFTensors:
    """Convert a split in the ``data_scripts.schema`` format into :class:`CFTensors` (row order kept)."""
    for column in ("user_id", "item_id", "label", "history_item_ids"):
        if column not in dataset.column_names:
            raise ValueError(f"dataset has no column '{column}' (found {dataset.column_names})")
    table = dataset.with_format("arrow")[:]
    column = lambda name: table.column(name).to_numpy()  # noqa: E731
    warm = column("warm") if "warm" in table.column_names else np.ones(table.num_rows, dtype=bool)
    return CFTensors(
        user_ids=torch.tensor(column("user_id"), dtype=torch.long),
        item_ids=torch.tensor(column("item_id"), dtype=torch.long),
        history_item_ids=torch.tensor(pad_histories(table.column("history_item_ids"), max_history)),
        labels=torch.tensor(column("label"), dtype=torch.float32),
        warm=torch.tensor(warm.astype(bool)),
    )


def load_cf_data(data_path: str, max_history: int, allow_pickle: bool = False) -> tuple[dict, int, int]:
    """Load ``train``/``valid``/``valid_small`` as :class:`CFTensors`; return ``(splits, num_users, num_items)``.

    ``data_path`` is a saved ``DatasetDict`` (with ``stats.json``) or a CoLLM pickle directory
    (``{train,valid,valid_small}_ood2.pkl``, imported on the fly with ``data_scripts.collm_import``; unpickling
    runs code from the files, so it needs ``allow_pickle``).
    """
    from data_scripts.collm_import import import_collm
    from data_scripts.io import load_dataset_dict, read_stats

    path = Path(data_path)
    if (path / "stats.json").is_file():
        stats, dataset_dict = read_stats(path), load_dataset_dict(path)
        splits = {name: dataset_to_tensors(dataset_dict[name], max_history) for name in ("train", *REPORT_SPLITS)}
        return splits, stats["num_users"], stats["num_items"]
    if not (path / "train_ood2.pkl").is_file():
        raise FileNotFoundError(f"{path}: neither a saved dataset (stats.json) nor a CoLLM pickle directory (train_ood2.pkl)")
    with tempfile.TemporaryDirectory() as tmp:
        pickles = {name: path / f"{name}_ood2.pkl" for name in ("train", *REPORT_SPLITS)}
        stats = import_collm(tmp, **pickles, allow_pickle=allow_pickle)
        dataset_dict = load_dataset_dict(tmp)
        splits = {name: dataset_to_tensors(dataset_dict[name], max_history) for name in pickles}
    return splits, stats["num_users"], stats["num_items"]


def data_provenance(data_path: str) -> dict:
    """What a CF run's ``metrics.json`` records about its data (the model card names the data set from it):
    ``{"data": path, "data_source": importer source}``, the source being ``stats.json``'s ``source`` (left out
    when an old ``stats.json`` has none) or, for a CoLLM pickle directory, what its importer records
    (:func:`~data_scripts.collm_import.collm_source`)."""
    from data_scripts.collm_import import collm_source
    from data_scripts.io import read_stats

    path = Path(data_path)
    if not (path / "stats.json").is_file():
        return {"data": str(data_path), "data_source": collm_source(path)}
    source = read_stats(path).get("source")
    return {"data": str(data_path), **({"data_source": source} if source else {})}


def load_cf_yaml(path: str) -> dict:
    """Read a CF experiment YAML: ``data``, ``out``, ``seed``, ``model`` (CFRecConfig fields),
    ``train`` (``lr, weight_decay, bias_weight_decay, batch_size, epochs, patience, selection_split``;
    defaults in ``TRAIN_DEFAULTS``), optional ``search``
    (``{"model.hidden_size": [32, 64], "train.lr": [...]}``).

    Every value is checked here, before any data is read (:func:`checked_cf_fields`, :func:`checked_search`).

    Raises:
        ValueError: one line naming ``path``, the field and its value.
    """
    spec = load_yaml_file(path) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: expected a mapping with the fields data, out, seed, model, train, search")
    refuse_unknown(spec, CF_CONFIG_KEYS, str(path), "top-level field(s)")
    for section in ("model", "train", "search"):
        if not isinstance(spec.get(section) or {}, dict):
            raise ValueError(f"{path}: '{section}' must be a mapping of field names to values, got {spec[section]!r}")
    if "encoder_type" not in (spec.get("model") or {}):
        raise ValueError(f"{path}: field 'model.encoder_type' is required")
    spec["model"], spec["train"] = checked_cf_fields(spec["model"], spec.get("train") or {}, path)
    if "seed" in spec:
        spec["seed"] = checked_value("seed", spec["seed"], int, path)
    spec["search"] = checked_search(spec, path)
    return spec


def checked_train_value(key: str, value, source: str):
    """``train.<key>``'s ``value`` of its type (``1e-4``, a string in YAML, becomes the number) and in its range."""
    annotation, _, minimum, inclusive = TRAIN_FIELDS[key]
    value = checked_value(f"train.{key}", value, annotation, source)
    if minimum is None or value is None:
        return value
    if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
        kind = "an integer" if annotation is int else "a finite number"
        raise ValueError(f"{source}: train.{key} must be {kind} {'>=' if inclusive else '>'} {minimum}, got {value!r}")
    return value


def checked_model_value(key: str, value, source: str):
    """``model.<key>``'s ``value`` of its type (YAML booleans stay booleans: ``"no"`` is refused, not true)."""
    return checked_value(f"model.{key}", value, MODEL_FIELDS[key], source)


def checked_model_fields(model_fields: dict, source: str) -> dict:
    """``model_fields`` with known names, checked types and the ranges :class:`CFRecConfig` accepts."""
    refuse_unknown(model_fields, MODEL_FIELDS, source, "model field(s)", list_known=True)
    model_fields = {key: checked_model_value(key, value, source) for key, value in model_fields.items()}
    try:
        CFRecConfig(**model_fields)  # its own range checks (the id-space sizes come later, from the data)
    except ValueError as error:
        raise ValueError(f"{source}: model: {error}") from None
    return model_fields


def checked_cf_fields(model_fields: dict, train_args: dict, source: str) -> tuple[dict, dict]:
    """``(model_fields, train_args)`` checked: known fields only, values of their type in sensible ranges; the train
    arguments completed with ``TRAIN_DEFAULTS``.

    Raises:
        ValueError: one line naming ``source`` (the YAML file), the field and its value.
    """
    refuse_unknown(train_args, TRAIN_FIELDS, source, "train field(s)", list_known=True)
    train_args = {**TRAIN_DEFAULTS, **train_args}
    train_args = {key: checked_train_value(key, value, source) for key, value in train_args.items()}
    return checked_model_fields(model_fields, source), train_args


def checked_search(spec: dict, source: str) -> dict:
    """``spec["search"]`` checked: each key a known ``model.<field>`` / ``train.<field>``, each value a non-empty
    list of values that field accepts; every combination of model fields must make a valid :class:`CFRecConfig`."""
    search = {}
    for key, values in (spec.get("search") or {}).items():
        section, _, field = str(key).partition(".")
        if section not in ("model", "train") or not field:
            raise ValueError(f"{source}: search key '{key}' must look like 'model.<field>' or 'train.<field>'")
        known = MODEL_FIELDS if section == "model" else TRAIN_FIELDS
        refuse_unknown([field], known, f"{source}: search key '{key}'", f"{section} field(s)", list_known=True)
        if not isinstance(values, list) or not values:
            raise ValueError(f"{source}: search key '{key}' needs a non-empty list of values to try, got {values!r}")
        check = checked_model_value if section == "model" else checked_train_value
        search[key] = [check(field, value, f"{source}: search") for value in values]
    for combo in grid(search):
        checked_model_fields(apply_overrides(spec, combo)[0], f"{source}: search {combo}")
    return search


@torch.no_grad()
def predict(model: CFRecModel, data: CFTensors, batch_size: int = 4096) -> np.ndarray:
    """Logits ``[N]`` of every row, in row order."""
    model.eval()
    scores = []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        batch = data.batch(index)
        batch.pop("labels")
        scores.append(model(**batch).logits.float())
    return torch.cat(scores).numpy() if scores else np.zeros(0)


def evaluate_split(model: CFRecModel, data: CFTensors) -> dict:
    """``trainers.inference.metrics.ranking_report`` of the model on one split."""
    return ranking_report(data.user_ids.numpy(), data.labels.numpy().astype(int), predict(model, data), data.warm.numpy())


def parameter_groups(model: CFRecModel, train_args: dict) -> list[dict]:
    """Adam groups: the score biases (global/user/item) may take their own ``bias_weight_decay``."""
    bias_decay = train_args["bias_weight_decay"]
    bias_decay = train_args["weight_decay"] if bias_decay is None else bias_decay
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for name, p in named if name not in BIAS_PARAMETERS], "weight_decay": train_args["weight_decay"]},
        {"params": [p for name, p in named if name in BIAS_PARAMETERS], "weight_decay": bias_decay},
    ]


def train_cf_model(
    model_fields: dict, train_args: dict, splits: dict, num_users: int, num_items: int, seed: int, source: str = "cf"
) -> tuple[CFRecModel, dict]:
    """Train one model; return ``(best-valid model with refreshed cold rows, summary dict)``.

    Selection: the epoch with the highest AUC on ``train_args["selection_split"]``; training stops after
    ``patience`` epochs without improvement. The popularity encoder is fitted, not trained. The fields are checked
    first (:func:`checked_cf_fields`; errors name ``source``).
    """
    model_fields, train_args = checked_cf_fields(model_fields, train_args, source)
    set_seed(seed)
    config = CFRecConfig(num_users=num_users, num_items=num_items, **model_fields)
    model = CFRecModel(config)
    train, select = splits["train"], splits[train_args["selection_split"]]
    model.encoder.fit_train_statistics(train.user_ids, train.item_ids, train.labels.long())
    start = time.perf_counter()
    history, best_auc, best_epoch, best_state = [], -1.0, 0, None
    if config.encoder_type != "popularity":
        optimizer = torch.optim.Adam(parameter_groups(model, train_args), lr=train_args["lr"])
        generator = torch.Generator().manual_seed(seed)
        progress = tqdm(range(1, train_args["epochs"] + 1), desc=f"cf {config.encoder_type}", leave=False)
        for epoch in progress:
            model.train()
            losses = []
            for index in torch.randperm(len(train), generator=generator).split(train_args["batch_size"]):
                loss = model(**train.batch(index)).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            model.encoder.refresh_cold_rows()
            value = auc(select.labels.numpy(), predict(model, select))
            history.append({"epoch": epoch, "loss": float(np.mean(losses)), "select_auc": value})
            progress.set_postfix(loss=f"{np.mean(losses):.4f}", auc=f"{value:.4f}")
            if value > best_auc:
                best_auc, best_epoch, best_state = value, epoch, copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= train_args["patience"]:
                break
        model.load_state_dict(best_state)
    model.encoder.refresh_cold_rows()
    logger.info("%s: best epoch %d of %d", config.encoder_type, best_epoch, len(history))
    summary = {
        "seed": seed,
        "best_epoch": best_epoch,
        "train_seconds": round(time.perf_counter() - start, 2),
        "selection_split": train_args["selection_split"],
        "train_args": train_args,
        "history": history,
    }
    for name in REPORT_SPLITS:
        summary[name] = evaluate_split(model, splits[name])
    return model, summary


def grid(search: Optional[dict]) -> list[dict]:
    """All combinations of a ``search`` mapping (``{"model.x": [..], ...}``) as override dicts."""
    if not search:
        return [{}]
    keys = list(search)
    return [dict(zip(keys, values)) for values in itertools.product(*(search[k] for k in keys))]


def apply_overrides(spec: dict, overrides: dict) -> tuple[dict, dict]:
    """``(model_fields, train_args)`` of ``spec`` with ``{"model.x": v, "train.y": w}`` applied."""
    model_fields, train_args = dict(spec["model"]), dict(spec["train"])
    for key, value in overrides.items():
        section, _, field = key.partition(".")
        (model_fields if section == "model" else train_args)[field] = value
    return model_fields, train_args


def save_run(model: CFRecModel, summary: dict, out_dir) -> None:
    """Save the model (``save_pretrained``) and ``metrics.json`` into ``out_dir`` atomically.

    Everything is written to a sibling temporary directory that replaces ``out_dir`` only once complete; an
    existing ``out_dir`` of unrelated files is refused (it would be replaced).
    """
    require_empty_or_own(out_dir, CF_MODEL_FILES)
    with staging_dir(out_dir) as staging:
        model.save_pretrained(staging)
        write_json_atomic(staging / "metrics.json", summary)

