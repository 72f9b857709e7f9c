"""Checks of a model folder before anything loads it, and a fingerprint of its weights.

A folder is usable when it exists, holds a ``config.json`` of the expected kind and complete weights: every
``*.safetensors`` file must have a readable header whose tensors fill the file exactly (a truncated or corrupt
file is named, not met later as a deep traceback). A local path that does not exist is reported as such, not
as an invalid Hub repo id.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from transformers.utils import logging as transformers_logging

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
CF_MODEL_TYPE = "cl3mrec_cf"
NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file


def read_model_config(model_dir, field: str) -> dict:
    """``model_dir/config.json`` as a dict; raise naming ``field`` when the folder or the file is missing or bad."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"{field}={model_dir}: no such folder; check the path (models are never downloaded here)"
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        hint = (  # a `cl3mrec train` output folder: its model is the export
            f"its exported model is {model_dir / 'merged'}" if (model_dir / "merged" / "config.json").is_file()
            else "is it a saved model folder?"
        )
        raise FileNotFoundError(f"{field}={model_dir}: no config.json; {hint}")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error}); re-save or re-fetch the model") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object; re-save or re-fetch the model")
    return config


def weight_files(model_dir) -> list[Path]:
    """The weight files of ``model_dir`` (safetensors or PyTorch bins), sorted by name."""
    return sorted(path for pattern in WEIGHT_PATTERNS for path in Path(model_dir).glob(pattern))


def check_weights(model_dir, field: str) -> None:
    """Raise ``ValueError`` when ``model_dir`` has no weights, or a safetensors file is truncated or corrupt."""
    files = weight_files(model_dir)
    if not files:
        raise ValueError(
            f"{field}={model_dir}: config.json but no weights (*.safetensors); the folder is incomplete: "
            "re-export, re-train or re-fetch it"
        )
    for path in files:
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as error:
            raise ValueError(
                f"{path}: corrupt or truncated safetensors ({error}); re-export, re-train or re-fetch the model"
            ) from None


def require_model_dir(model_dir, field: str, model_type: str | None = None, forbid_type: str | None = None) -> dict:
    """Check ``model_dir`` (folder, config, weights) and return its config.

    Args:
        model_type: the ``model_type`` the folder must have (e.g. ``cl3mrec_cf`` for ``cf_model_dir``).
        forbid_type: a ``model_type`` it must not have (an LLM folder must not be one of our CF models).
    """
    config = read_model_config(model_dir, field)
    found = config.get("model_type")
    if model_type is not None and found != model_type:
        raise ValueError(
            f"{field}={model_dir}: holds a {found!r} model, expected {model_type!r}; "
            + ("point it at a `cl3mrec cf train` output folder" if model_type == CF_MODEL_TYPE else "fix the path")
        )
    if forbid_type is not None and found == forbid_type:
        raise ValueError(f"{field}={model_dir}: holds a {found!r} model, not a language model; fix the path")
    check_weights(model_dir, field)
    return config


def _results_file(path: Path, field: str, run_dir: Path) -> dict:
    try:
        results = json.loads(path.read_text())
    except OSError:
        raise FileNotFoundError(
            f"{field}={run_dir}: no {path.relative_to(run_dir)} (not a finished `cl3mrec train` folder)"
        ) from None
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(results, dict):
        raise ValueError(f"{path}: expected a JSON object of eval split -> metrics")
    return results


def read_eval_results(run_dir, field: str) -> dict:
    """``{split: metrics}`` of a finished ``cl3mrec train`` folder (its ``eval_results.json``; a folder from before
    one-shape results keeps them in ``merged/eval_results.json``); raise naming ``field`` when absent or bad."""
    run_dir = Path(run_dir)
    results = _results_file(run_dir / "eval_results.json", field, run_dir)
    if results and all(key.startswith("eval_") for key in results):
        results = _results_file(run_dir / "merged" / "eval_results.json", field, run_dir)
    return results


def read_npy(path: Path, kinds: str, expected: str) -> np.ndarray:
    """The array in ``path``, loaded without unpickling; raise ``ValueError`` naming ``path`` when it is not a
    readable .npy array (empty, truncated, another format, pickled objects) or its dtype kind is not in ``kinds``."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(NPY_MAGIC))
        if header != NPY_MAGIC:
            raise ValueError("empty file" if not header else "no NumPy header: a text file or another format?")
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error}); re-train or re-fetch the run") from None
    if array.dtype.kind not in kinds:
        raise ValueError(f"{path}: expected {expected}, found dtype {array.dtype}; re-train or re-fetch the run")
    return array


def _require_finite(path: Path, scores: np.ndarray, rows: np.ndarray, split: str) -> None:
    """Raise ``ValueError`` naming ``path`` and its first NaN / infinite score (and the ``split`` row it scored)."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise ValueError(
            f"{path}: row {bad[0]} ({split} row {rows[bad[0]]}) is {scores[bad[0]]}; scores must be finite "
            f"({len(bad)} of {len(scores)} are not); re-train or re-fetch the run"
        )


def read_eval_scores(run_dir, field: str, split: str = "valid_small", num_rows: int | None = None):
    """``(rows [N], scores [N])`` of a finished ``cl3mrec train`` folder: the rows of ``split`` it scored
    (``eval_rows.npy``) and its scores (``eval_scores.npy``).

    Args:
        num_rows: the length of ``split`` in the data the caller reads; rows beyond it are refused.

    Raises:
        FileNotFoundError: naming ``field`` when the folder or a file is missing (not a finished run).
        ValueError: when the run scored another split than ``split`` (its rows index something else), its rows
            and scores do not fit each other or ``num_rows``, a .npy file is not a readable array of integer
            rows / real scores (naming the file), or a score is NaN or infinite (naming the file and the row).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{field}={run_dir}: no such folder")
    evaluated = list(read_eval_results(run_dir, field))
    if evaluated != [split]:
        raise ValueError(f"{field}={run_dir}: scored {', '.join(evaluated) or 'nothing'}, not {split}")
    missing = [name for name in ("eval_rows.npy", "eval_scores.npy") if not (run_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{field}={run_dir}: no {' / '.join(missing)} (not a finished `cl3mrec train` folder)")
    rows = read_npy(run_dir / "eval_rows.npy", "iu", "integer row numbers")
    scores = read_npy(run_dir / "eval_scores.npy", "iuf", "real-valued scores")
    if rows.shape != scores.shape or rows.ndim != 1:
        raise ValueError(f"{field}={run_dir}: eval_rows.npy {rows.shape} and eval_scores.npy {scores.shape} differ")
    if num_rows is not None and len(rows) and (rows.min() < 0 or rows.max() >= num_rows):
        raise ValueError(f"{field}={run_dir}: scored {split} rows up to {rows.max()}, but the data's {split} has "
                         f"{num_rows}: scored another data folder")
    _require_finite(run_dir / "eval_scores.npy", scores, rows, split)
    return rows, scores


def read_shared_eval_scores(run_dirs, field: str, split: str = "valid_small", num_rows: int | None = None):
    """``(rows [N], [scores [N] per run])`` of runs that scored the same rows of ``split`` (:func:`read_eval_scores`
    for each); raise ``ValueError`` naming the first run whose rows differ from the runs before it."""
    rows, scores = None, []
    for run_dir in run_dirs:
        run_rows, run_scores = read_eval_scores(run_dir, field, split, num_rows)
        if rows is not None and not np.array_equal(rows, run_rows):
            raise ValueError(f"{field}={run_dir}: scored other {split} rows than the runs before it")
        rows = run_rows
        scores.append(run_scores)
    return rows, scores


def weights_fingerprint(model_dir) -> str:
    """SHA-256 over the names and bytes of ``model_dir``'s weight files: changes whenever the weights do, even
    when a new model is saved at the same path."""
    digest = hashlib.sha256()
    for path in weight_files(model_dir):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def load_complete(model_class, model_dir, field: str, **kwargs):
    """``model_class.from_pretrained(model_dir, **kwargs)``, refused unless the saved weights fill the model exactly.

    transformers initialises a parameter the checkpoint lacks at random (with a log table, not an error) and skips
    tensors the model has no place for: a folder with a deleted, renamed or re-shaped tensor would otherwise
    score with random weights, or stop on a long shape report.

    Raises:
        ValueError: naming ``field``, the folder and the first missing, unexpected or mis-shaped tensors.
    """
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # its load report would precede our one line
    try:
        model, info = model_class.from_pretrained(
            str(model_dir), output_loading_info=True, ignore_mismatched_sizes=True, **kwargs
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    problems = {
        "missing": sorted(map(str, info.get("missing_keys") or ())),
        "unexpected": sorted(map(str, info.get("unexpected_keys") or ())),
        "of another shape (saved vs config.json)": sorted(
            f"{name} {list(saved)} vs {list(expected)}" for name, saved, expected in info.get("mismatched_keys") or ()
        ),
    }
    for kind, names in problems.items():
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise ValueError(
                f"{field}={model_dir}: the saved weights do not fit the model (tensors {kind}: {shown}); "
                "re-export or re-train it"
            )
    return model
