"""PNG plots of a finished training stage, for its output dir, its export and the model card.

Two figures, drawn with matplotlib's Agg canvas (no display, no global ``pyplot`` state):

- ``plots/training_curves.png``: every loss term the trainer logged (``loss``, ``loss/rec``,
  ``loss/contrastive*``) and the contrastive top-1 accuracies (``contrastive/*accuracy``) against the step,
  read from ``trainer.state.log_history``;
- ``plots/eval_auc_uauc.png``: AUC and UAUC (all / warm / cold rows) of the stage on its eval split, beside the
  CF encoder the stage reads (its ``metrics.json`` holds the encoder's ``valid_small`` report; on another split,
  or without those numbers, the CF bars are left out and the caption says why).

``plots/captions.json`` lists the images in order, ``[{"file", "title", "caption"}]``, with paths relative to the
folder; :mod:`trainers.hub.model_card` embeds them from it.
"""

import io
import json
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic_io import staging_dir

PLOTS_DIR = "plots"
CAPTIONS_FILE = "captions.json"
CURVES_FILE = "training_curves.png"
RANKING_FILE = "eval_auc_uauc.png"
CF_REFERENCE_SPLIT = "valid_small"  # the split a CF run's metrics.json reports that the bars compare against
SUBSETS = ("all", "warm", "cold")
DPI = 110


def is_loss_term(key: str) -> bool:
    """Whether a training log key is a loss term (``loss``, ``loss/rec``, ``loss/contrastive*``)."""
    return key == "loss" or key.startswith("loss/")


def is_accuracy_term(key: str) -> bool:
    """Whether a training log key is a contrastive accuracy (``contrastive/accuracy``, ``contrastive/*_accuracy``)."""
    return key.startswith("contrastive/") and key.endswith("accuracy")


def training_curves(log_history: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """``{key: (steps, values)}`` of every loss term and contrastive accuracy in the Trainer's training logs
    (entries with a ``step``; eval entries, prefixed ``eval_``, and undefined values are skipped)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        if "step" not in entry:
            continue
        for key, value in entry.items():
            if not (is_loss_term(key) or is_accuracy_term(key)) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                steps, values = curves.setdefault(key, ([], []))
                steps.append(int(entry["step"]))
                values.append(float(value))
    return curves


def cf_reference(cf_model_dir, split: str) -> tuple[dict | None, str]:
    """``(report, why_missing)``: the CF encoder's ranking report on ``split`` from its ``metrics.json``, or
    ``None`` and the reason it is not plotted (``""`` when it is)."""
    if cf_model_dir is None:
        return None, "this stage reads no CF encoder"
    if split != CF_REFERENCE_SPLIT:
        return None, f"the CF encoder's metrics.json reports {CF_REFERENCE_SPLIT}, not this eval split ({split})"
    path = Path(cf_model_dir) / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    report = metrics.get(split)
    if not isinstance(report, dict) or report.get("auc") is None:
        return None, f"the CF encoder's metrics.json has no {split} numbers"
    return report, ""


def _subset_value(report: dict, subset: str, key: str) -> float:
    """``report[key]`` (``all``) or ``report[subset][key]``; NaN when undefined."""
    values = report if subset == "all" else report.get(subset) or {}
    value = values.get(key)
    return float("nan") if value is None else float(value)


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered by the Agg canvas as PNG bytes."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def curves_figure(curves: dict[str, tuple[list[int], list[float]]]) -> Figure:
    """Loss terms (left) and, when logged, contrastive accuracies (right) against the training step."""
    groups = [("loss terms", [key for key in curves if is_loss_term(key)])]
    accuracies = [key for key in curves if is_accuracy_term(key)]
    if accuracies:
        groups.append(("contrastive top-1 accuracy", accuracies))
    figure = Figure(figsize=(5.5 * len(groups), 3.8), dpi=DPI, layout="constrained")
    for axes, (title, keys) in zip(figure.subplots(1, len(groups), squeeze=False)[0], groups):
        for key in keys:
            steps, values = curves[key]
            axes.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=key)
        axes.set(title=title, xlabel="step")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure


def ranking_figure(report: dict, cf_report: dict | None, split: str, cf_name: str) -> Figure:
    """AUC and UAUC bars per subset (all / warm / cold): the stage, and beside it the CF encoder when given."""
    series = [("this stage", report)] + ([(cf_name, cf_report)] if cf_report is not None else [])
    width = 0.8 / len(series)
    figure = Figure(figsize=(9, 3.8), dpi=DPI, layout="constrained")
    for axes, (key, label) in zip(figure.subplots(1, 2), (("auc", "AUC"), ("uauc", "UAUC"))):
        for index, (name, values) in enumerate(series):
            positions = [subset + (index - (len(series) - 1) / 2) * width for subset in range(len(SUBSETS))]
            heights = [_subset_value(values, subset, key) for subset in SUBSETS]
            bars = axes.bar(positions, [0.0 if math.isnan(h) else h for h in heights], width, label=name)
            axes.bar_label(bars, labels=["n/a" if math.isnan(h) else f"{h:.3f}" for h in heights], fontsize="x-small")
        axes.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
        axes.set(title=f"{label} on {split}", xticks=range(len(SUBSETS)), xticklabels=SUBSETS, ylim=(0.0, 1.05))
        axes.legend(fontsize="small", loc="upper right")
    return figure


def ranking_caption(report: dict, cf_report: dict | None, why_missing: str, split: str, cf_name: str) -> str:
    """What the bars show, with row counts; says why the CF bars are missing, or that rows differ."""
    caption = f"AUC / UAUC of this stage on {split} ({report.get('n_rows')} rows; dashed line: chance)"
    if cf_report is None:
        return f"{caption}. No CF encoder bars: {why_missing}."
    caption += f", beside the CF encoder it reads ({cf_name}: {cf_report.get('n_rows')} rows of {split})"
    if cf_report.get("n_rows") != report.get("n_rows"):
        caption += "; the stage was scored on a subsample, so the rows are not the same"
    return caption + "."


def write_stage_plots(
    out_dir, log_history: list[dict], split: str, report: dict, cf_model_dir=None
) -> list[dict]:
    """Write the stage's plots and ``captions.json`` into ``out_dir/plots/`` (replaced whole, atomically); return the
    captions list.

    Args:
        out_dir: the stage's output dir or export folder.
        log_history: ``trainer.state.log_history`` (no training curve when it holds no loss term).
        split: the eval split's name; ``report``: its ``ranking_report`` (``auc``, ``uauc``, ``warm``, ``cold``).
        cf_model_dir: the saved CF encoder the stage reads (``metrics.json``), or ``None``.
    """
    captions = []
    curves = training_curves(log_history)
    cf_report, why_missing = cf_reference(cf_model_dir, split)
    cf_name = f"CF encoder ({Path(cf_model_dir).name})" if cf_model_dir is not None else "CF encoder"
    with staging_dir(Path(out_dir) / PLOTS_DIR) as plots_dir:
        if curves:
            (plots_dir / CURVES_FILE).write_bytes(png_bytes(curves_figure(curves)))
            captions.append(
                {
                    "file": f"{PLOTS_DIR}/{CURVES_FILE}",
                    "title": "Training curves",
                    "caption": f"Logged during training, per logging step: {', '.join(f'`{key}`' for key in curves)}.",
                }
            )
        (plots_dir / RANKING_FILE).write_bytes(png_bytes(ranking_figure(report, cf_report, split, cf_name)))
        captions.append(
            {
                "file": f"{PLOTS_DIR}/{RANKING_FILE}",
                "title": f"AUC and UAUC on {split}",
                "caption": ranking_caption(report, cf_report, why_missing, split, cf_name),
            }
        )
        (plots_dir / CAPTIONS_FILE).write_text(json.dumps(captions, indent=2) + "\n", encoding="utf-8")
    return captions
