"""``cl3mrec push`` against a local recording Hub (tests/hub_recorder.py): what is created and committed."""

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tests.hub_recorder import HubRecorder, front_matter
from trainers.cli import push_cli
from trainers.hub.push import public_json, push_model, validate_model_dir

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "test-org/cl3mrec-tiny"
EVAL = {
    "auc": 0.7123,
    "uauc": 0.6543,
    "n_rows": 200,
    "n_users_uauc": 17,
    "warm": {"auc": 0.73, "uauc": 0.66, "n_rows": 150, "n_users_uauc": 15},
    "cold": {"auc": 0.58, "uauc": None, "n_rows": 50, "n_users_uauc": 0, "reason": "no user with both labels"},
}
PNG = b"\x89PNG\r\n\x1a\n not a real image"
CODE_FILES = (
    "configuration_cl3mrec.py",
    "modeling_cl3mrec.py",
    "configuration_cf.py",
    "collaborative_encoders.py",
    "processing_cl3mrec.py",
    "pipeline_cl3mrec.py",
)


def make_model_dir(path: Path) -> Path:
    """A fake saved CL3MRecModel: config with auto_map and custom_pipelines, tiny safetensors, local tokenizer,
    processor config, code, eval results."""
    path.mkdir(parents=True)
    config = {
        "model_type": "cl3mrec",
        "architectures": ["CL3MRecModel"],
        "auto_map": {
            "AutoConfig": "configuration_cl3mrec.CL3MRecConfig",
            "AutoModel": "modeling_cl3mrec.CL3MRecModel",
        },
        "custom_pipelines": {
            "cl3mrec-scoring": {"impl": "pipeline_cl3mrec.CL3MRecScoringPipeline", "pt": ["AutoModel"]}
        },
        "tokens_per_entity": 1,
        "text_config": {"model_type": "llama", "hidden_size": 16},
        "cf_config": {"model_type": "cl3mrec_cf", "encoder_type": "mf", "hidden_size": 8, "num_users": 5},
    }
    (path / "config.json").write_text(json.dumps(config))
    save_file({"projector.0.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4)}, path / "model.safetensors")
    vocab = {"<unk>": 0, "<pad>": 1, "Yes": 2, "No": 3, "<|user_emb|>": 4, "<|item_emb|>": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>").save_pretrained(path)
    (path / "processor_config.json").write_text(json.dumps({"processor_class": "CL3MRecProcessor", "max_history": 10}))
    for name in CODE_FILES:
        (path / name).write_text(f'"""{name} (placeholder for the test)."""\n')
    (path / "eval_results.json").write_text(json.dumps(EVAL))
    (path / "checkpoint-3").mkdir()
    (path / "checkpoint-3" / "optimizer.pt").write_bytes(b"not uploaded")
    (path / "training_args.bin").write_bytes(b"pickle, not uploaded")
    (path / "reload_scores.npy").write_bytes(b"working file, not uploaded")
    (path / "plots").mkdir()
    (path / "plots" / "eval_auc_uauc.png").write_bytes(PNG)
    captions = [{"file": "plots/eval_auc_uauc.png", "title": "AUC and UAUC on valid", "caption": "Bars."}]
    (path / "plots" / "captions.json").write_text(json.dumps(captions))
    return path


def run_push(hub: HubRecorder, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m trainers.cli push ARGS`` in a subprocess pointed at the recorder (HF_ENDPOINT is read at import)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("HF_")}
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_TOKEN="dummy",
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
    )
    command = [sys.executable, "-m", "trainers.cli", "push", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def model_dir(tmp_path):
    return make_model_dir(tmp_path / "model")


def test_push_commits_complete_model_with_card(model_dir, tmp_path):
    with HubRecorder() as hub:
        result = run_push(
            hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID, "--private", "--commit-message", "v1"
        )
    assert result.returncode == 0, result.stderr[-3000:]

    assert hub.repos == {REPO_ID: {"type": "model", "visibility": "private"}}
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    assert (commit["repo_id"], commit["revision"], commit["header"]["summary"]) == (REPO_ID, "main", "v1")
    files = commit["files"]
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"}
    assert expected | set(CODE_FILES) <= set(files)
    assert not any(name.startswith("checkpoint-") or name == "training_args.bin" for name in files)
    assert not [name for name in files if name.endswith(".npy")]
    assert files["plots/eval_auc_uauc.png"] == PNG  # the card's image travels with it
    assert files["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_cl3mrec.CL3MRecModel"

    # The pushed card is the one written next to the model, and its metadata carries the metrics.
    readme = files["README.md"].decode()
    assert readme == (model_dir / "README.md").read_text(encoding="utf-8")
    metadata = front_matter(readme)
    assert metadata["library_name"] == "transformers"
    assert "recommendation" in metadata["tags"]
    (entry,) = metadata["model-index"]
    assert entry["name"] == "cl3mrec-tiny"
    (result_entry,) = entry["results"]
    assert result_entry["dataset"]["split"] == "valid"
    metrics = {(metric["type"], metric["config"]): metric["value"] for metric in result_entry["metrics"]}
    assert metrics[("roc_auc", "all")] == pytest.approx(EVAL["auc"])
    assert metrics[("uauc", "all")] == pytest.approx(EVAL["uauc"])
    assert metrics[("roc_auc", "cold")] == pytest.approx(0.58)
    assert ("uauc", "cold") not in metrics  # undefined metric: left out, not written as null
    assert f'pipeline("cl3mrec-scoring", model="{REPO_ID}", trust_remote_code=True)' in readme
    assert "![AUC and UAUC on valid](plots/eval_auc_uauc.png)" in readme
    assert str(tmp_path) not in readme and "/tmp" not in readme

    # Every request was authenticated with the token from the environment and went to known endpoints.
    paths = [request["path"] for request in hub.requests]
    assert "/api/repos/create" in paths
    assert f"/api/models/{REPO_ID}/preupload/main" in paths
    assert f"/api/models/{REPO_ID}/commit/main" in paths
    assert all(request["headers"].get("authorization") == "Bearer dummy" for request in hub.requests)


def test_push_leaves_local_paths_on_the_machine(model_dir, tmp_path):
    """The LLM folder transformers records in config.json and the run records' paths are not uploaded; the local
    folder keeps them."""
    llm = tmp_path / "llm" / "smollm2-135m"
    llm.mkdir(parents=True)
    config = json.loads((model_dir / "config.json").read_text())
    config["text_config"]["_name_or_path"] = str(llm)
    config["cf_config"]["_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"  # a Hub id stays as it is
    (model_dir / "config.json").write_text(json.dumps(config))
    summary = {"init_from": str(tmp_path / "runs" / "lora"), "data_source": f"collm:{tmp_path / 'data'}", "seed": 1}
    (model_dir / "training_summary.json").write_text(json.dumps(summary))
    before = folder_bytes(model_dir)
    with HubRecorder() as hub:
        result = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID)
    assert result.returncode == 0, result.stderr[-3000:]
    (commit,) = hub.commits
    files = commit["files"]
    assert [name for name, content in files.items() if str(tmp_path).encode() in content] == []
    pushed = json.loads(files["config.json"])
    assert pushed["text_config"]["_name_or_path"] == "smollm2-135m"
    assert pushed["cf_config"]["_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert pushed["auto_map"] == config["auto_map"]
    assert json.loads(files["training_summary.json"]) == {"seed": 1}
    assert files["model.safetensors"] == before["model.safetensors"]
    before["README.md"] = (model_dir / "README.md").read_bytes()  # the card, written next to the model
    assert folder_bytes(model_dir) == before


def test_public_json_drops_a_cf_runs_paths(tmp_path):
    metrics = {"data": "/home/me/data", "data_source": "collm:/home/me/pkl", "config_file": "/c.yaml", "seed": 3}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    assert json.loads(public_json("metrics.json", tmp_path / "metrics.json")) == {"seed": 3}
    (tmp_path / "eval_results.json").write_text(json.dumps(EVAL))
    assert public_json("eval_results.json", tmp_path / "eval_results.json") is None  # uploaded as it is
    (tmp_path / "search.json").write_text(json.dumps({"results": []}))
    assert public_json("search.json", tmp_path / "search.json") is None  # nothing to remove


def test_push_refuses_a_broken_record_before_any_request(model_dir, tmp_path):
    (model_dir / "metrics.json").write_text('{"data": "/home/me/da')  # cut short
    before = folder_bytes(model_dir)
    with HubRecorder() as hub:
        result = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID)
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert f"{model_dir / 'metrics.json'}: not a JSON file" in errors[0]
    assert hub.requests == []
    assert folder_bytes(model_dir) == before  # no README.md written


def test_push_to_existing_repo_and_branch(model_dir, tmp_path):
    with HubRecorder() as hub:
        first = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID)
        second = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID, "--revision", "exp-1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert list(hub.repos) == [REPO_ID]  # the second create answered 409 and exist_ok kept going
    assert hub.branches == [(REPO_ID, "exp-1")]
    assert [commit["revision"] for commit in hub.commits] == ["main", "exp-1"]
    assert hub.commits[1]["header"]["summary"] == "Upload model with cl3mrec"


def test_push_refuses_incomplete_dir_before_any_request(model_dir, tmp_path):
    (model_dir / "tokenizer.json").unlink()
    with HubRecorder() as hub:
        result = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID)
    assert result.returncode == 2
    assert "no tokenizer" in result.stderr
    assert hub.requests == []


def test_a_stage_folder_is_pointed_to_its_export(model_dir, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    model_dir.rename(stage / "merged")
    with pytest.raises(FileNotFoundError, match=f"{stage} is a training stage's folder: push its export, {stage}/"):
        validate_model_dir(stage)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda path: (path / "config.json").unlink(), "no config.json"),
        (lambda path: (path / "model.safetensors").unlink(), "no weights"),
        (lambda path: (path / "tokenizer_config.json").unlink(), "no tokenizer"),
        (lambda path: (path / "modeling_cl3mrec.py").unlink(), "modeling_cl3mrec.py is missing"),
        (lambda path: (path / "processor_config.json").unlink(), "no processor_config.json"),
        (lambda path: (path / "pipeline_cl3mrec.py").unlink(), r"custom_pipelines\['cl3mrec-scoring'\].*pipeline_cl3"),
        (lambda path: truncate(path / "model.safetensors"), "model.safetensors: corrupt or truncated safetensors"),
    ],
)
def test_validate_model_dir_names_what_is_missing(model_dir, damage, message):
    validate_model_dir(model_dir)
    damage(model_dir)
    with pytest.raises((FileNotFoundError, ValueError), match=message):  # missing, or there but broken
        validate_model_dir(model_dir)


def test_push_to_an_unreachable_hub_is_one_line_and_leaves_the_folder_as_it_was(model_dir, tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    before = {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()}
    result = run_push(SimpleNamespace(endpoint=endpoint), tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"cannot reach the Hugging Face Hub at {endpoint} to push {model_dir} to {REPO_ID}" in errors[0]
    assert errors[0].endswith("check the network (or HF_ENDPOINT) and rerun: nothing was committed")
    assert {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()} == before  # no README.md written


def folder_bytes(folder: Path) -> dict:
    """Every file under ``folder`` (relative path → bytes)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_push_dry_run_prints_the_card_and_neither_writes_nor_asks_the_hub(model_dir, tmp_path):
    before = folder_bytes(model_dir)
    with HubRecorder() as hub:
        result = run_push(hub, tmp_path, "--model", str(model_dir), "--repo-id", REPO_ID, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.requests == []
    assert folder_bytes(model_dir) == before  # no README.md, nothing touched
    metadata = front_matter(result.stdout)
    assert metadata["model-index"][0]["name"] == "cl3mrec-tiny"
    assert "| valid | all | 0.7123 | 0.6543 | 200 | 17 |" in result.stdout
    assert f'pipeline("cl3mrec-scoring", model="{REPO_ID}", trust_remote_code=True)' in result.stdout


def test_push_model_rejects_bad_repo_id(model_dir):
    with pytest.raises(ValueError, match=r"repo_id 'not/a/valid/repo': not a Hub repo id \(.*\); use ORG/NAME"):
        push_model(model_dir, "not/a/valid/repo")


def test_register_adds_push_subcommand(model_dir):
    parser = argparse.ArgumentParser()
    push_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["push", "--model", str(model_dir), "--repo-id", REPO_ID, "--private", "--dataset", "a/b"])
    assert args.func is push_cli._run
    assert not args.dry_run
    assert (args.model, args.repo_id, args.private, args.revision, args.dataset) == (
        str(model_dir),
        REPO_ID,
        True,
        None,
        ["a/b"],
    )
