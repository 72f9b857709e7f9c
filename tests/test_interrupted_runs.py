"""Interrupted stages rerun cleanly: ``kill -9`` during a step, a checkpoint save, the text-cache write or the
export, a full disk during the export, then the same command again: the stage finishes with the metrics of an
uninterrupted run, and an unfinished stage is never taken for a finished one (``stage_complete.json``, written
last)."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from trainers.cli import main
from trainers.run_state import STAGE_COMPLETE_FILE, newest_complete_checkpoint
from trainers.training import stage_run
from trainers.training.smoke_pipeline import prepare_pipeline_inputs

REPO = Path(__file__).resolve().parents[1]
SPEC = {
    "data": {"num_users": 24, "num_items": 40, "interactions_per_user": 16},
    "cf": {"model": {"encoder_type": "mf", "hidden_size": 8, "max_history": 4}, "train": {"epochs": 1}},
}
METRICS = ("eval_auc", "eval_uauc", "eval_loss")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Synthetic data + MF + tiny Llama, and a stage YAML (text-only ``lora``, 8 steps, a checkpoint every 2)."""
    root = tmp_path_factory.mktemp("interrupted")
    prepare_pipeline_inputs(SPEC, root, seed=0)
    stage = {
        "llm_path": str(root / "llm"), "data_dir": str(root / "data"), "text_cache_dir": str(root / "cache"),
        "stage": "lora", "template": "tallrec_ml1m", "do_train": True, "max_history": 4,
        "max_train_samples": 32, "max_eval_samples": 24, "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8, "learning_rate": 0.01, "lora_r": 2, "lora_alpha": 4, "lora_dropout": 0.0,
        "lora_target_modules": ["q_proj", "v_proj"], "save_strategy": "steps", "save_steps": 2, "logging_steps": 1,
        "eval_strategy": "no", "use_cpu": True, "report_to": "none", "seed": 0, "dataloader_num_workers": 0,
    }
    (root / "stage.yaml").write_text(yaml.safe_dump(stage))
    return root


def train_argv(workspace, output_dir, *extra):
    return ["train", "--config", str(workspace / "stage.yaml"), f"output_dir={output_dir}", *extra]


def finished_metrics(output_dir) -> dict:
    marker = json.loads((Path(output_dir) / STAGE_COMPLETE_FILE).read_text())
    return {key: marker[key] for key in METRICS}


@pytest.fixture(scope="module")
def reference(workspace):
    """Metrics of an uninterrupted run."""
    out = workspace / "uninterrupted"
    assert main(train_argv(workspace, out)) == 0
    return finished_metrics(out)


def run_killed(workspace, output_dir, module, attribute, when, *extra):
    command = [sys.executable, str(REPO / "tests" / "kill_points.py"), module, attribute, when, "--",
               *train_argv(workspace, output_dir, *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == -signal.SIGKILL, completed.stderr[-3000:]


def assert_rerun_matches(workspace, output_dir, reference):
    assert not (output_dir / STAGE_COMPLETE_FILE).exists()  # the killed run is not taken for finished
    assert main(train_argv(workspace, output_dir, "resume_from_checkpoint=true")) == 0
    for key, value in finished_metrics(output_dir).items():
        assert value == pytest.approx(reference[key], abs=1e-6), key
    assert (output_dir / "merged" / "README.md").is_file() and (output_dir / "merged" / "eval_results.json").is_file()
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith(".")]  # no staging left
    assert not [path.name for path in (output_dir / "merged").iterdir() if path.name.startswith(".")]


KILL_POINTS = {
    "during a training step": ("trainers.training.trainer", "CL3MRecTrainer.compute_loss", "before:5"),
    "during a checkpoint save": ("transformers", "Trainer._save_rng_state", "before:2"),
    "during the export": ("trainers.training.stage_run", "save_merged", "after:1"),
    "after the export, before the card": ("trainers.training.stage_run", "write_model_card", "before:1"),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_rerun_finishes_with_the_uninterrupted_metrics(point, workspace, reference):
    out = workspace / f"killed-{point.replace(' ', '-')}"
    run_killed(workspace, out, *KILL_POINTS[point])
    if point == "during a checkpoint save":
        assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-4" / "trainer_state.json").exists()
        assert newest_complete_checkpoint(out).name == "checkpoint-2"
    assert_rerun_matches(workspace, out, reference)


@pytest.mark.slow
def test_kill_9_at_a_random_moment_then_rerun(workspace, reference):
    out = workspace / "killed-random"
    command = [sys.executable, "-m", "trainers.cli", *train_argv(workspace, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(os.getpid()).uniform(2.0, 8.0))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    if (out / STAGE_COMPLETE_FILE).exists():  # the mark is written last: the run finished before the kill
        assert finished_metrics(out) == pytest.approx(reference, abs=1e-6)
        return
    assert_rerun_matches(workspace, out, reference)


@pytest.mark.slow
def test_kill_9_during_the_text_cache_write_then_rerun(workspace, tmp_path):
    cie = ["stage=cie", "template=collm_ml1m", f"cf_model_dir={workspace / 'cf'}", "contrastive_weight=0.5"]
    assert main(train_argv(workspace, tmp_path / "reference", *cie, f"text_cache_dir={tmp_path / 'fresh'}")) == 0
    out, cache = tmp_path / "killed", tmp_path / "cache"
    run_killed(workspace, out, "trainers.training.text_representations", "save_file", "after:1", *cie, f"text_cache_dir={cache}")
    assert not list(cache.glob("item_text_*")) and list(cache.glob(".item_text_*"))  # only the dead writer's temp
    assert main(train_argv(workspace, out, *cie, f"text_cache_dir={cache}", "resume_from_checkpoint=true")) == 0
    assert [path.name for path in cache.iterdir()] == [path.name for path in (tmp_path / "fresh").iterdir()]
    assert finished_metrics(out) == pytest.approx(finished_metrics(tmp_path / "reference"), abs=1e-6)


def test_full_disk_during_export_leaves_the_stage_unfinished(workspace, reference, monkeypatch):
    out = workspace / "disk-full"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "merged"))

    monkeypatch.setattr(stage_run, "save_merged", no_space)
    assert main(train_argv(workspace, out)) == 2
    assert (out / "eval_results.json").is_file()  # the old "done" signal exists ...
    assert not (out / STAGE_COMPLETE_FILE).exists() and not (out / "merged").exists()  # ... the real one does not
    monkeypatch.undo()
    assert_rerun_matches(workspace, out, reference)


def test_next_stage_refuses_an_unfinished_init_from(workspace, tmp_path, caplog):
    unfinished = tmp_path / "lora"
    unfinished.mkdir()
    (unfinished / "eval_results.json").write_text("{}")
    argv = train_argv(workspace, tmp_path / "cie", f"init_from={unfinished}", "stage=cie", "template=collm_ml1m",
                      f"cf_model_dir={workspace / 'cf'}")
    assert main(argv) == 2
    assert f"init_from={unfinished}" in caplog.text and STAGE_COMPLETE_FILE in caplog.text


RUNNER_STAGES = ("zero_shot", "tallrec_lora", "collm_cie", "cl3mrec_cie", "collm_cie_fused", "cl3mrec_cie_fused",
                 "collm_cie_fused_lightgcn", "cl3mrec_cie_fused_lightgcn")  # every stage of scripts/run_ml1m.sh


def test_runner_reruns_a_stage_without_its_completion_mark(tmp_path):
    """``scripts/run_ml1m.sh`` skips a stage only by ``stage_complete.json``, and resumes the others."""
    out, llm, log = tmp_path / "out", tmp_path / "llm", tmp_path / "calls.log"
    for folder in (out / "data", out / "cf" / "mf", out / "cf" / "lightgcn", llm):
        folder.mkdir(parents=True)
    (out / "data" / "stats.json").write_text("{}")
    metrics = {"auc": 0.5, "uauc": 0.5, "warm": {"auc": 0.5}, "cold": {"auc": 0.5}, "n_rows": 1}
    for encoder in ("mf", "lightgcn"):
        (out / "cf" / encoder / "config.json").write_text("{}")
        (out / "cf" / encoder / "metrics.json").write_text(json.dumps({"valid_small": metrics}))
    (llm / "config.json").write_text("{}")
    for name in RUNNER_STAGES:
        (out / name).mkdir()
        (out / name / "eval_results.json").write_text(json.dumps({"valid_small": metrics}))
        if name != "tallrec_lora":  # tallrec_lora was interrupted after its evaluation
            (out / name / STAGE_COMPLETE_FILE).write_text("{}")
    fake = tmp_path / "fake_cl3mrec"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    env = {**os.environ, "DATA": str(tmp_path / "no_data"), "OUT": str(out), "LLM": str(llm), "CL3MREC": str(fake),
           "LORA_ARGS": "compile_train=true", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    completed = subprocess.run(["bash", "scripts/run_ml1m.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    for name in set(RUNNER_STAGES) - {"tallrec_lora"}:
        assert f"== {name}: done already" in completed.stdout, completed.stderr
    assert completed.returncode == 0 and "cl3mrec_cie_fused_lightgcn   0.5000" in completed.stdout  # the table
    calls = log.read_text().splitlines()
    assert len(calls) == 1 and "configs/ml1m/tallrec_lora.yaml" in calls[0]
    assert "resume_from_checkpoint=true" in calls[0] and calls[0].endswith(" compile_train=true")  # LORA_ARGS
