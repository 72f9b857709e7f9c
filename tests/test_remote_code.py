"""A saved CL3M-Rec model loads with `AutoModel.from_pretrained(dir, trust_remote_code=True)` in a fresh process
that never imports our packages, and scores exactly as the in-memory model."""

import json
import os
import subprocess
import sys

import pytest
import torch

from trainers.prompt_dataset import CL3MRecCollator, tokenize_dataset

REMOTE_SCRIPT = """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert not any(name.split(".")[0] in ("modeling_cl3mrec", "trainers", "data_scripts") for name in sys.modules)
batch = torch.load(sys.argv[2])
with torch.inference_mode():
    torch.save(model(**batch).logits, sys.argv[3])
"""


@pytest.mark.parametrize("arch, encoder_type", [("llama", "sasrec"), ("qwen2", "din")])
def test_remote_code_round_trip(make_cl3mrec, tiny_rows, tmp_path, arch, encoder_type):
    model, tokenizer = make_cl3mrec(arch, encoder_type, tokens_per_entity=2, use_history_embeddings=True)
    with torch.no_grad():
        model.projector.linear_2.bias.normal_()  # a non-default value that must survive the round trip
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_cl3mrec.CL3MRecConfig",
        "AutoModel": "modeling_cl3mrec.CL3MRecModel",
    }
    code_files = ("configuration_cl3mrec.py", "modeling_cl3mrec.py", "configuration_cf.py", "collaborative_encoders.py")
    for code_file in code_files:
        assert (model_dir / code_file).is_file(), code_file

    tokenized = tokenize_dataset(tiny_rows.select(range(8)), tokenizer, model.config, with_ids=True)
    batch = CL3MRecCollator(tokenizer, model.config.max_history)(list(tokenized))
    batch.pop("labels")
    torch.save(batch, tmp_path / "batch.pt")
    with torch.inference_mode():
        expected = model(**batch).logits

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), OMP_NUM_THREADS="1")
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(model_dir), str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)
