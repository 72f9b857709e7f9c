"""Shared fixtures: tiny random LLMs with locally built tokenizers, a tiny prompt dataset, CL3M-Rec builders.

Nothing is downloaded; every model is random and small (hidden 64, 2 layers), built once per session.

Fixtures:
    tiny_llm_dirs -> {"llama": Path, "qwen2": Path}: saved `AutoModelForCausalLM` + tokenizer directories.
    tiny_llama_dir / tiny_qwen2_dir -> Path: one of them.
    tiny_tokenizer: the Llama directory's tokenizer (byte-level BPE; "Yes"/"No" are single tokens).
    tiny_rows -> datasets.Dataset: 24 rows in the `data_scripts.schema` format (users 1..5, items 1..12;
        history lengths 0, 5, 6, 7).
    make_tiny_cf_config(encoder_type="mf", **overrides) -> CFRecConfig sized for `tiny_rows`.
    make_cl3mrec(arch="llama", encoder_type="mf" | None, **build_kwargs) -> (CL3MRecModel, tokenizer), built
        with `trainers.llm_loading.build_cl3mrec` and the bundled CoLLM / TALLRec ML-1M templates;
        `encoder_type=None` gives a text-only model.
    synthetic_data_dir -> Path: a synthetic `DatasetDict` (`data_scripts.synthetic`) saved once per session.
    synthetic_mf_dir -> Path: an MF model sized for it, biases fitted on its train split, saved.
    run_without_repo(script, *args) -> stdout: run Python code in a fresh process outside the repository (no
        PYTHONPATH, offline, own HF_MODULES_CACHE) and assert that it succeeded and imported none of our packages.
"""

import pytest
import torch

NUM_USERS = 6
NUM_ITEMS = 13


def _title(item_id: int) -> str:
    return f"Movie {item_id} ({1980 + item_id})"


@pytest.fixture(scope="session")
def tiny_llm_dirs(tmp_path_factory):
    from trainers.tiny_llm import DEFAULT_TEXTS, build_tiny_llm

    root = tmp_path_factory.mktemp("tiny_llms")
    texts = list(DEFAULT_TEXTS) + [_title(i) for i in range(1, NUM_ITEMS)]
    return {arch: build_tiny_llm(root / arch, arch=arch, texts=texts) for arch in ("llama", "qwen2")}


@pytest.fixture(scope="session")
def tiny_llama_dir(tiny_llm_dirs):
    return tiny_llm_dirs["llama"]


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tiny_llm_dirs):
    return tiny_llm_dirs["qwen2"]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_dir)


@pytest.fixture(scope="session")
def tiny_rows():
    from datasets import Dataset

    from data_scripts.schema import FEATURES

    generator = torch.Generator().manual_seed(0)
    rows = {name: [] for name in FEATURES}
    for index in range(24):
        user_id = 1 + index % (NUM_USERS - 1)
        item_id = 1 + int(torch.randint(NUM_ITEMS - 1, (1,), generator=generator))
        history = [1 + (user_id + step) % (NUM_ITEMS - 1) for step in range((0, 5, 6, 7)[index % 4])]
        rows["user_id"].append(user_id)
        rows["item_id"].append(item_id)
        rows["label"].append(int(torch.rand(1, generator=generator) < 0.5))
        rows["timestamp"].append(1_000_000 + index)
        rows["history_item_ids"].append(history)
        rows["history_titles"].append([_title(i) for i in history])
        rows["title"].append(_title(item_id))
        rows["user_warm"].append(True)
        rows["item_warm"].append(True)
        rows["warm"].append(True)
    return Dataset.from_dict(rows, features=FEATURES)


@pytest.fixture(scope="session")
def make_tiny_cf_config():
    from modeling_cl3mrec import CFRecConfig

    def make(encoder_type: str = "mf", **overrides):
        fields = {"num_users": NUM_USERS, "num_items": NUM_ITEMS, "hidden_size": 8, "max_history": 5}
        fields.update(num_heads=2, num_layers=1, attention_hidden_sizes=[8], mlp_hidden_sizes=[8], dropout=0.0)
        fields.update(overrides)
        return CFRecConfig(encoder_type=encoder_type, **fields)

    return make


@pytest.fixture(scope="session")
def make_cl3mrec(tiny_llm_dirs, make_tiny_cf_config):
    from trainers.llm_loading import build_cl3mrec
    from trainers.prompt_templates import load_template

    def make(arch: str = "llama", encoder_type: str | None = "mf", seed: int = 0, **build_kwargs):
        torch.manual_seed(seed)
        cf_config = make_tiny_cf_config(encoder_type) if encoder_type is not None else None
        model, tokenizer = build_cl3mrec(
            tiny_llm_dirs[arch],
            cf_config=cf_config,
            prompt_template=load_template("collm_ml1m"),
            text_prompt_template=load_template("tallrec_ml1m"),
            **build_kwargs,
        )
        return model.eval(), tokenizer

    return make


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory):
    from data_scripts.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic(out)
    return out


@pytest.fixture(scope="session")
def synthetic_mf_dir(synthetic_data_dir):
    from data_scripts.io import load_dataset_dict
    from modeling_cl3mrec import CFRecConfig, CFRecModel

    data = load_dataset_dict(synthetic_data_dir)
    num_users = max(max(data[name]["user_id"]) for name in data) + 1
    num_items = max(max(data[name]["item_id"]) for name in data) + 1
    torch.manual_seed(0)
    model = CFRecModel(CFRecConfig(encoder_type="mf", num_users=num_users, num_items=num_items, hidden_size=8))
    train = data["train"]
    model.encoder.fit_train_statistics(*(torch.tensor(train[name]) for name in ("user_id", "item_id", "label")))
    model.encoder.refresh_cold_rows()
    out = synthetic_data_dir.parent / "mf"
    model.save_pretrained(out)
    return out


@pytest.fixture
def run_without_repo(tmp_path):
    import os
    import subprocess
    import sys

    guard = """
import sys
assert not {"modeling_cl3mrec", "trainers", "data_scripts"} & {name.split(".")[0] for name in sys.modules}
"""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), OMP_NUM_THREADS="1")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()

    def run(script: str, *args) -> str:
        command = [sys.executable, "-c", script + guard, *map(str, args)]
        result = subprocess.run(command, cwd=run_dir, env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, f"{script}\n---\n{result.stderr[-3000:]}"
        return result.stdout

    return run
