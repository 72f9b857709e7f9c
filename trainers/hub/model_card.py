"""Model cards for saved cl3mrec models: Hub metadata (``ModelCardData`` + ``EvalResult``) and a Jinja template.

A saved model directory holds ``config.json`` and, written by evaluation / training,
``eval_results.json`` (a :func:`trainers.inference.metrics.ranking_report` dict, or one such dict per split:
``{"valid_small": {...}, "valid": {...}}``), optionally ``training_summary.json`` (free-form scalars, plus the
``"stage_recipe"``, ``"hyperparameters"``, ``"base_model"`` / ``"base_model_folder"`` and ``"framework_versions"``
that :mod:`trainers.training.training_summary` records) and ``plots/captions.json``
(:mod:`trainers.training.stage_plots`).
A CF encoder saved by ``cl3mrec cf train`` has ``metrics.json`` instead (one ranking report per split, the seed, the
train arguments and ``data_source``), which gives its card metrics, data set and hyper-parameters. Trainer's
automatic card carries no AUC, so this module renders its own card and :func:`write_model_card` puts it at
``model_dir/README.md``. The card names no local absolute path: local folders appear by their name only.
"""

import importlib.metadata
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Union

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..atomic_io import write_text_atomic
from ..training.stage_plots import CAPTIONS_FILE, PLOTS_DIR

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
ML1M_DATASET_NAME = "MovieLens-1M (CoLLM time split)"
ML1M_DATASET_TYPE = "ml-1m"
DATASET_NOT_RECORDED = "not recorded"  # a model whose training did not record its data set: the card does not guess
CF_METRICS_FILE = "metrics.json"  # a `cl3mrec cf train` run's summary (trainers.cf_training.save_run)
RAW_DATASET_NAMES = {"movielens-1m": "MovieLens-1M (last 20 months)", "amazon-book-2018": "Amazon-Book 2018"}
TASK_TYPE = "recommendation"
TASK_NAME = "Recommendation (binary like prediction)"
SUBSETS = ("all", "warm", "cold")
METRICS = (("auc", "roc_auc", "AUC"), ("uauc", "uauc", "UAUC"))
TAGS = ("recommendation", "cl3mrec", "collm", "collaborative-filtering", "llm-rec")
EXAMPLE_USER_ID = 12
EXAMPLE_HISTORY_ITEM_IDS = (1, 2)
EXAMPLE_ITEM_IDS = (733, 1240, 2571)
# A Hub id ("org/name" or "name"); local paths such as /tmp/smollm2-135m are not valid metadata.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
FRAMEWORKS = ("torch", "transformers", "peft", "datasets", "accelerate")
# training_summary.json keys the card shows in sections of their own, or leaves out (local paths).
SUMMARY_KEYS_NOT_IN_BUDGET = (
    "stage_recipe", "dataset_name", "hyperparameters", "framework_versions", "base_model", "base_model_folder",
    "init_from", "data_source",
)

PathLike = Union[str, os.PathLike]


def _read_json(path: Path) -> Optional[dict]:
    """The JSON object in ``path``, or ``None`` when the file does not exist."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(content).__name__}")
    return content


def _read_json_list(path: Path) -> list:
    """The JSON list in ``path``, or ``[]`` when the file does not exist."""
    if not path.is_file():
        return []
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, list):
        raise ValueError(f"{path} must hold a JSON list, got {type(content).__name__}")
    return content


def split_reports(eval_results: dict, default_split: str = "valid") -> dict[str, dict]:
    """Normalise ``eval_results`` to ``{split: ranking_report}``.

    A flat ``ranking_report`` dict (it has an ``"auc"`` key) is taken as the report of ``default_split``;
    otherwise every value must be a ``ranking_report`` dict keyed by split name.
    """
    if "auc" in eval_results:
        return {default_split: eval_results}
    reports = {}
    for split, report in eval_results.items():
        if not isinstance(report, dict) or "auc" not in report:
            raise ValueError(
                f"eval_results[{split!r}] is not a ranking_report dict (no 'auc' key); expected either one "
                "report {'auc', 'uauc', 'warm', 'cold', ...} or one report per split"
            )
        reports[split] = report
    return reports


def dataset_name_from_source(source: str) -> str:
    """A readable data set name from ``stats.json``'s ``source`` (``"<importer>:<details>"``, see
    ``data_scripts``); an unknown importer gives the source itself."""
    importer, _, details = source.partition(":")
    if importer == "collm":
        lowered = details.lower()
        if "book" in lowered:
            return "Amazon-Book (CoLLM time split)"
        if "ml-1m" in lowered or "ml1m" in lowered:
            return ML1M_DATASET_NAME
        return f"CoLLM split files ({Path(details).name})"  # the folder's name: no local path
    if importer == "synthetic":
        return f"synthetic ({details})"
    return RAW_DATASET_NAMES.get(importer, source)


def is_hub_id(name: Optional[str]) -> bool:
    """Whether ``name`` looks like a Hub repo id (``org/name`` or ``name``) and is not a local path."""
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def public_model_name(name: Optional[str]) -> Optional[str]:
    """``name`` when it is a Hub id, else only the last part of the local path (a card never names a local path)."""
    if not name:
        return None
    return name if is_hub_id(name) else Path(name).name


def framework_versions() -> dict[str, str]:
    """Installed versions of the frameworks a card lists (``FRAMEWORKS``; ``"not installed"`` when missing)."""
    versions = {}
    for name in FRAMEWORKS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def hyperparameter_table(stages: list[dict]) -> tuple[list[str], list[tuple[str, list]]]:
    """``(stage names, [(hyper-parameter, [value per stage])])`` from ``training_summary.json``'s
    ``hyperparameters`` list; a stage that lacks a hyper-parameter shows ``""``."""
    names = [str(stage.get("stage", index + 1)) for index, stage in enumerate(stages)]
    keys = list(dict.fromkeys(key for stage in stages for key in stage if key != "stage"))
    return names, [(key, [stage.get(key, "") for stage in stages]) for key in keys]


def plot_entries(model_dir: Path) -> list[dict]:
    """``plots/captions.json``'s ``[{"file", "title", "caption"}]``, only for images present in ``model_dir``."""
    captions = _read_json_list(model_dir / PLOTS_DIR / CAPTIONS_FILE)
    return [entry for entry in captions if (model_dir / entry["file"]).is_file()]


def _finite(value: Any) -> Optional[float]:
    """``value`` as a float, or ``None`` when it is missing / undefined (``None``, NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def metric_rows(reports: dict[str, dict]) -> list[dict]:
    """One row per (split, subset): ``{"split", "subset", "auc", "uauc", "n_rows", "n_users_uauc"}``."""
    rows = []
    for split, report in reports.items():
        for subset in SUBSETS:
            values = report if subset == "all" else report.get(subset)
            if not isinstance(values, dict):
                continue
            rows.append(
                {
                    "split": split,
                    "subset": subset,
                    "auc": _finite(values.get("auc")),
                    "uauc": _finite(values.get("uauc")),
                    "n_rows": values.get("n_rows"),
                    "n_users_uauc": values.get("n_users_uauc"),
                }
            )
    return rows


def build_eval_results(rows: list[dict], dataset_type: str, dataset_name: str) -> list[EvalResult]:
    """``EvalResult`` entries (``roc_auc`` and ``uauc``; ``metric_config`` = subset) for the defined values."""
    results = []
    for row in rows:
        for key, metric_type, label in METRICS:
            if row[key] is None:
                continue
            results.append(
                EvalResult(
                    task_type=TASK_TYPE,
                    task_name=TASK_NAME,
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=row["split"],
                    metric_type=metric_type,
                    metric_name=label if row["subset"] == "all" else f"{label} ({row['subset']})",
                    metric_config=row["subset"],
                    metric_value=row[key],
                )
            )
    return results


def _summary_rows(training_summary: dict) -> list[tuple[str, Any]]:
    """Scalar entries of the training summary (nested dicts flattened as ``a.b``; recipe, dataset name and
    ``None`` values left out)."""
    rows = []

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                visit(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, (str, int, float, bool)):
            rows.append((prefix, value))

    visit("", {key: value for key, value in training_summary.items() if key not in SUMMARY_KEYS_NOT_IN_BUDGET})
    return rows


def _normalise_recipe(stage_recipe: Any) -> list[dict]:
    """The recipe as ``[{"stage": name, **settings}]`` (settings such as λ / τ as ``training_summary.json``
    recorded them per stage)."""
    if stage_recipe is None:
        return []
    if isinstance(stage_recipe, str):
        stage_recipe = [stage.strip() for stage in re.split(r"->|→|,", stage_recipe) if stage.strip()]
    recipe = []
    for index, stage in enumerate(stage_recipe):
        if isinstance(stage, str):
            stage = {"stage": stage}
        if not isinstance(stage, dict) or "stage" not in stage:
            raise ValueError(f"stage_recipe[{index}] must be a stage name or a dict with a 'stage' key, got {stage!r}")
        recipe.append(dict(stage))
    return recipe


def cf_run_summary(metrics: dict, encoder_type: Optional[str]) -> dict:
    """A CF run's ``metrics.json`` in ``training_summary.json``'s terms: ``dataset_name`` (from ``data_source``),
    one ``hyperparameters`` column (seed + train arguments, when recorded), and the run's best epoch, epochs run and
    seconds; its local paths (``data``, ``config_file``) stay out."""
    summary = {
        "best_epoch": metrics.get("best_epoch"),
        "epochs_run": len(metrics["history"]) if "history" in metrics else None,
        "train_seconds": metrics.get("train_seconds"),
    }
    if metrics.get("data_source"):
        summary["dataset_name"] = dataset_name_from_source(metrics["data_source"])
    if "train_args" in metrics:
        settings = {"seed": metrics.get("seed"), **metrics["train_args"]}
        summary["hyperparameters"] = [{"stage": encoder_type or "cf", **settings}]
    return summary


def _model_facts(config: dict) -> dict:
    """Template facts read from ``config.json`` for either model type."""
    model_type = config.get("model_type")
    if model_type not in ("cl3mrec", "cl3mrec_cf"):
        raise ValueError(f"config.json has model_type {model_type!r}; expected 'cl3mrec' or 'cl3mrec_cf'")
    cf_config = config if model_type == "cl3mrec_cf" else (config.get("cf_config") or {})
    text_config = config.get("text_config") or {}
    return {
        "model_type": model_type,
        "is_llm": model_type == "cl3mrec",
        "has_cf": bool(cf_config),
        "cf_encoder_type": cf_config.get("encoder_type"),
        "cf_hidden_size": cf_config.get("hidden_size"),
        "num_users": cf_config.get("num_users"),
        "num_items": cf_config.get("num_items"),
        "llm_model_type": text_config.get("model_type"),
        "llm_hidden_size": text_config.get("hidden_size"),
        "tokens_per_entity": config.get("tokens_per_entity", 1),
        "use_history_embeddings": bool(config.get("use_history_embeddings")),
        "answer_score": config.get("answer_score", "yes"),
    }


def example_ids(num_users: Optional[int], num_items: Optional[int]) -> dict:
    """Ids for the card's usage snippet, kept inside the model's id space so the snippet runs as written:
    ``{"user_id", "history_item_ids", "item_ids"}`` (three distinct candidate ids)."""
    user_id = EXAMPLE_USER_ID if num_users is None else min(EXAMPLE_USER_ID, num_users - 1)
    item_ids = list(EXAMPLE_ITEM_IDS)
    if num_items is not None:
        item_ids = [min(item_id, num_items - 1 - index) for index, item_id in enumerate(EXAMPLE_ITEM_IDS)]
    return {"user_id": user_id, "history_item_ids": list(EXAMPLE_HISTORY_ITEM_IDS), "item_ids": item_ids}


def render_model_card(
    model_dir: PathLike,
    *,
    base_model: Optional[str] = None,
    datasets: Optional[Union[str, list[str]]] = None,
    stage_recipe: Optional[Union[str, list]] = None,
    eval_results: Optional[dict] = None,
    repo_id: Optional[str] = None,
    dataset_name: Optional[str] = None,
    license: str = "apache-2.0",
    default_split: str = "valid",
) -> ModelCard:
    """Render the card of the model saved in ``model_dir``.

    Args:
        model_dir: a saved ``CL3MRecModel`` or ``CFRecModel`` directory (``config.json`` required).
        base_model: Hub id of the LLM the model starts from (default: ``training_summary.json``'s ``base_model`` or
            ``base_model_folder``, else the text config's ``_name_or_path``; a local path is named by its last part
            only and left out of the metadata).
        datasets: Hub dataset id(s) for the metadata; the first one also names the evaluation dataset.
        stage_recipe: stage names (``"lora -> cie"`` or ``["lora", "cie"]``) or ``[{"stage": ..., **settings}]``
            (default: ``training_summary.json``'s ``"stage_recipe"``).
        eval_results: a ``ranking_report`` dict or ``{split: ranking_report}`` (default:
            ``model_dir/eval_results.json``, else a CF model's per-split reports in ``metrics.json``).
        repo_id: the Hub repo the card is for (names the model and the loading snippet; default: the folder's
            name, a path relative to the folder that holds it).
        dataset_name: human-readable evaluation dataset name (default: ``training_summary.json``'s (a CF model:
            ``metrics.json``'s) recorded data set, else the first of ``datasets``, else ``"not recorded"``).
        license: license of the weights (the base LLM's license applies too).
        default_split: split name given to a flat ``ranking_report``.

    Returns:
        A ``ModelCard`` whose YAML metadata carries ``model-index`` results (``roc_auc`` / ``uauc`` per split
        and subset ``all``/``warm``/``cold``).
    """
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    if config is None:
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved cl3mrec model directory")
    facts = _model_facts(config)
    if facts["is_llm"]:
        training_summary, run_reports = _read_json(model_dir / "training_summary.json") or {}, {}
    else:
        cf_metrics = _read_json(model_dir / CF_METRICS_FILE) or {}
        training_summary = cf_run_summary(cf_metrics, facts["cf_encoder_type"])
        run_reports = {key: value for key, value in cf_metrics.items() if isinstance(value, dict) and "auc" in value}
    if eval_results is None:
        eval_results = _read_json(model_dir / "eval_results.json") or run_reports
        if not eval_results:
            logger.warning("%s has no eval_results.json (nor CF metrics.json reports): the card carries no metrics",
                           model_dir)
    if stage_recipe is None:
        stage_recipe = training_summary.get("stage_recipe")
    if isinstance(datasets, str):
        datasets = [datasets]
    if dataset_name is None:
        dataset_name = training_summary.get("dataset_name") or (datasets[0] if datasets else DATASET_NOT_RECORDED)
    local_base_model = None
    if base_model is None:
        base_model = training_summary.get("base_model") or (config.get("text_config") or {}).get("_name_or_path")
        local_base_model = training_summary.get("base_model_folder")

    if datasets:
        dataset_type = datasets[0]
    elif dataset_name == ML1M_DATASET_NAME:
        dataset_type = ML1M_DATASET_TYPE
    else:
        dataset_type = re.sub(r"[^a-z0-9]+", "-", dataset_name.lower()).strip("-")

    rows = metric_rows(split_reports(eval_results, default_split)) if eval_results else []
    model_name = repo_id.split("/")[-1] if repo_id else model_dir.resolve().name
    hub_base_model = base_model if is_hub_id(base_model) and not local_base_model else None
    base_model_text = local_base_model or public_model_name(base_model)
    if base_model_text and hub_base_model is None:
        base_model_text = f"`{base_model_text}`, a local folder"
    hyperparameter_stages, hyperparameters = hyperparameter_table(training_summary.get("hyperparameters") or [])
    card_data = ModelCardData(
        model_name=model_name,
        base_model=hub_base_model,
        datasets=datasets or None,
        library_name="transformers",
        license=license,
        tags=list(TAGS) + ([facts["cf_encoder_type"]] if facts["cf_encoder_type"] else []),
        eval_results=build_eval_results(rows, dataset_type, dataset_name) or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id or model_name,
        local_card=repo_id is None,
        base_model_text=base_model_text,
        dataset_name_text=dataset_name,
        metric_rows=rows,
        stage_recipe=_normalise_recipe(stage_recipe),
        max_history=(_read_json(model_dir / "processor_config.json") or {}).get("max_history"),
        training_summary=_summary_rows(training_summary),
        hyperparameter_stages=hyperparameter_stages,
        hyperparameters=hyperparameters,
        framework_versions=training_summary.get("framework_versions"),
        current_framework_versions=framework_versions(),
        plots=plot_entries(model_dir),
        example=example_ids(facts["num_users"], facts["num_items"]),
        **facts,
    )


def write_model_card(model_dir: PathLike, **kwargs) -> Path:
    """Render the card (see :func:`render_model_card`) and write ``model_dir/README.md`` atomically."""
    model_dir = Path(model_dir)
    card = render_model_card(model_dir, **kwargs)
    target = write_text_atomic(model_dir / "README.md", str(card))
    logger.info("wrote model card %s", target)
    return target
