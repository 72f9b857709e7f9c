"""``cl3mrec pipeline``: the whole recipe on synthetic data with a tiny LLM, ending with a remote-code reload check.

synthetic data → CF pretraining → tiny random LLM → each stage of the YAML's ``stages`` (each continues from the
previous one, :func:`trainers.training.stage_run.run_stage`) → export → reload through ``pipeline("cl3mrec-scoring",
trust_remote_code=True)`` in a fresh process that never imports this repository → the scores must match.
"""

import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from data_scripts.synthetic import COUNT_FIELDS

from ..atomic_io import require_empty_or_own, write_json_atomic
from ..cf_training import checked_cf_fields
from ..tiny_llm import ARCHS
from .config_values import checked_value, load_yaml_file, refuse_unknown
from .stage_run import run_stage
from .training_args import parse_config

RELOAD_SCRIPT = """
import sys
import numpy as np
from datasets import load_from_disk
from transformers import pipeline
model_dir, data_dir, split, rows_file, out = sys.argv[1:6]
recommender = pipeline("cl3mrec-scoring", model=model_dir, trust_remote_code=True, device="cpu")
if any(name.split(".")[0] in ("modeling_cl3mrec", "trainers", "data_scripts") for name in sys.modules):
    sys.exit("a local cl3mrec package was imported: the remote-code path is not what ran")
records = load_from_disk(data_dir)[split].select(np.load(rows_file)).to_list()
np.save(out, np.array([result["score"] for result in recommender(records, batch_size=16)]))
"""
logger = logging.getLogger(__name__)
DEFAULT_CF_MODEL = {"encoder_type": "mf", "hidden_size": 16}
RESERVED_NAMES = ("data", "cf", "llm", "cache", "pipeline_results.json")  # what out_dir holds besides the stages
SECTION_KEYS = {"data": set(COUNT_FIELDS), "cf": {"model", "train"}, "llm": {"arch"}}  # data: generate_synthetic
PIPELINE_KEYS = {"out_dir", "seed", "data", "cf", "llm", "defaults", "stages", "reload_atol"}


def reload_scores(model_dir: Path, data_dir: Path, split: str, rows_file: Path) -> np.ndarray:
    """Scores of an exported model through ``pipeline("cl3mrec-scoring", trust_remote_code=True)`` (AutoModel +
    AutoProcessor + the custom pipeline) in a fresh Python process that never imports this repository's
    packages (so the copied remote code is what runs)."""
    out = model_dir / "reload_scores.npy"
    command = [sys.executable, "-c", RELOAD_SCRIPT, str(model_dir), str(data_dir), split, str(rows_file), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if result.returncode != 0:
        raise RuntimeError(f"reloading {model_dir} in a fresh process failed:\n{result.stderr[-3000:]}")
    return np.load(out)


def prepare_pipeline_inputs(spec: dict, out_dir: Path, seed: int) -> dict:
    """Synthetic data → pretrained CF encoder → tiny LLM (main process only); returns the CF report."""
    from data_scripts.synthetic import generate_synthetic

    from ..cf_training import DEFAULT_MAX_HISTORY, data_provenance, load_cf_data, save_run, train_cf_model
    from ..tiny_llm import build_tiny_llm, texts_from_dataset

    data_dir, cf_dir, llm_dir = out_dir / "data", out_dir / "cf", out_dir / "llm"
    generate_synthetic(data_dir, seed=seed, **spec.get("data", {}))
    cf_spec = spec.get("cf", {})
    model_fields = dict(cf_spec.get("model", DEFAULT_CF_MODEL))
    splits, num_users, num_items = load_cf_data(str(data_dir), model_fields.get("max_history", DEFAULT_MAX_HISTORY))
    cf_model, summary = train_cf_model(model_fields, cf_spec.get("train", {}), splits, num_users, num_items, seed)
    save_run(cf_model, {**summary, **data_provenance(str(data_dir))}, cf_dir)  # the card names the data set
    build_tiny_llm(llm_dir, arch=spec.get("llm", {}).get("arch", "llama"), texts=texts_from_dataset(data_dir), seed=seed)
    return {"valid_small_auc": summary["valid_small"]["auc"], "valid_small_uauc": summary["valid_small"]["uauc"]}


def stage_name(index: int, stage_spec: dict) -> str:
    """The folder under ``out_dir`` that stage ``index`` writes: its ``name``, else its ``stage``."""
    return stage_spec.get("name", stage_spec.get("stage", f"stage{index}"))


def check_sections(spec: dict, config_path) -> None:
    """Refuse a pipeline config whose sections have the wrong shape: ``stages`` a non-empty list of mappings,
    ``data`` / ``cf`` / ``llm`` / ``defaults`` mappings with known keys only (``data`` without ``seed``: the top-level
    ``seed`` is used), and ``cf``'s model / train fields as ``cl3mrec cf train`` checks them."""
    stages = spec["stages"]
    if not isinstance(stages, list) or not stages or not all(isinstance(stage, dict) for stage in stages):
        raise ValueError(f"{config_path}: stages must be a non-empty list of stage mappings, got {stages!r}")
    for key in ("data", "cf", "llm", "defaults"):
        if not isinstance(spec.get(key, {}), dict):
            raise ValueError(f"{config_path}: {key} must be a mapping, got {spec[key]!r}")
    if "seed" in spec.get("data", {}):
        raise ValueError(f"{config_path}: data.seed is not a field; the top-level seed seeds the synthetic data")
    for key, known in SECTION_KEYS.items():
        refuse_unknown(spec.get(key, {}), known, f"{config_path}: {key}", "key(s)", list_known=True)
    cf_spec = spec.get("cf", {})  # checked before any data is made: the CF encoder trains after it
    model_fields, train_args = cf_spec.get("model", DEFAULT_CF_MODEL), cf_spec.get("train", {})
    for key, value in (("model", model_fields), ("train", train_args)):
        if not isinstance(value, dict):
            raise ValueError(f"{config_path}: cf.{key} must be a mapping, got {value!r}")
    checked_cf_fields(dict(model_fields), dict(train_args), f"{config_path}: cf")
    arch = spec.get("llm", {}).get("arch", "llama")
    if arch not in ARCHS:
        raise ValueError(f"{config_path}: llm.arch must be one of {list(ARCHS)}, got {arch!r}")
    names = [stage_name(index, stage) for index, stage in enumerate(stages)]
    for index, name in enumerate(names):
        if name in RESERVED_NAMES or name in names[:index]:
            taken = "the pipeline's own" if name in RESERVED_NAMES else "another stage's"
            raise ValueError(
                f"{config_path}: stage {index + 1} would write into out_dir/{name}, {taken} folder; give it a "
                "`name:` of its own"
            )


def read_seed_and_tolerance(spec: dict, config_path) -> tuple[int, float]:
    """The config's ``seed`` (default 0) and ``reload_atol`` (default 1e-4; YAML reads ``1e-4`` as a string),
    type-checked as ``cl3mrec train`` checks its fields; the tolerance finite and >= 0."""
    source = str(config_path)
    seed = checked_value("seed", spec.get("seed", 0), int, source)
    atol = checked_value("reload_atol", spec.get("reload_atol", 1e-4), float, source)
    if not 0 <= atol < math.inf:
        raise ValueError(f"{source}: reload_atol must be a finite number >= 0, got {atol!r}")
    return seed, float(atol)


def run_pipeline(config_path: str, out_dir: str | None = None) -> dict:
    """The whole recipe on synthetic data with a tiny LLM: data → CF pretraining → each stage of
    ``stages`` (each continues from the previous one) → export → reload in a fresh process → same scores.

    Args:
        out_dir: where everything is written, in place of the config's ``out_dir``.

    Results are also written to ``<out_dir>/pipeline_results.json``.
    """
    spec = load_yaml_file(config_path) or {}
    if not isinstance(spec, dict):
        raise ValueError(f"{config_path}: expected a mapping with out_dir and stages")
    refuse_unknown(spec, PIPELINE_KEYS, str(config_path), "key(s)", list_known=True)
    if out_dir is not None:
        spec["out_dir"] = out_dir
    missing = [key for key in ("out_dir", "stages") if key not in spec]
    if missing:
        raise ValueError(f"{config_path}: needs out_dir (or --out-dir) and stages; missing {missing}")
    check_sections(spec, config_path)
    out_dir, (seed, reload_atol) = Path(spec["out_dir"]), read_seed_and_tolerance(spec, config_path)
    # Parse every stage first (fail fast); the TrainingArguments also set up the process state (use_cpu
    # included), so it must exist before PartialState() is asked which process is the main one.
    stages, previous = [], None
    for index, stage_spec in enumerate(spec["stages"]):
        name = stage_name(index, stage_spec)
        stage_spec = {key: value for key, value in stage_spec.items() if key != "name"}
        values = {
            "seed": seed,
            "llm_path": str(out_dir / "llm"),
            "data_dir": str(out_dir / "data"),
            "cf_model_dir": str(out_dir / "cf"),
            "text_cache_dir": str(out_dir / "cache"),
            "init_from": previous,
            "do_train": True,
            **spec.get("defaults", {}),
            **stage_spec,
            "output_dir": str(out_dir / name),
        }
        stages.append((name, parse_config(values, source=f"{config_path}, stage {name!r}")))
        previous = values["output_dir"]
    own = (*RESERVED_NAMES, *(name for name, _ in stages))
    require_empty_or_own(out_dir, own, field=f"{config_path}: out_dir", replaced=False)  # never mixed with others
    state = stages[0][1][2].distributed_state
    results = {"cf": None, "stages": {}}
    if state.is_main_process:
        results["cf"] = prepare_pipeline_inputs(spec, out_dir, seed)
    state.wait_for_everyone()

    for name, (model_args, data_args, args) in stages:
        metrics = run_stage(model_args, data_args, args)
        results["stages"][name] = {key: value for key, value in metrics.items() if key.startswith("eval_")}

    if state.is_main_process:
        stage_dir = Path(args.output_dir)
        export_dir = Path(args.export_dir or stage_dir / "merged")
        expected = np.load(stage_dir / "eval_scores.npy")
        reloaded = reload_scores(export_dir, out_dir / "data", data_args.eval_split, stage_dir / "eval_rows.npy")
        difference = float(np.abs(expected - reloaded).max())
        results.update(
            export_dir=str(export_dir),
            reload_max_abs_diff=difference,
            reload_identical=bool(difference <= reload_atol),
        )
        if difference > reload_atol:
            logger.error("reload check failed: scores differ by up to %.3g after reloading %s (reload_atol %g)",
                         difference, export_dir, reload_atol)  # fmt: skip
        write_json_atomic(out_dir / "pipeline_results.json", results)
    state.wait_for_everyone()
    return results
