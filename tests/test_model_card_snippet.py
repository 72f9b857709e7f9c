"""The "How to use" code of a rendered model card runs as written against a tiny exported model, in a fresh
process that never imports this repository, offline, from the folder beside the model (the card names the model by
its folder name, never by a local absolute path)."""

import re

import pytest
import torch

from modeling_cl3mrec import CFRecModel, CL3MRecProcessor
from trainers.hub.model_card import write_model_card
from trainers.llm_loading import save_merged


def how_to_use_code(card_text: str) -> str:
    """Every Python block of the card's "How to use" section, in order."""
    section = card_text.split("## How to use", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert blocks, "the card has no Python usage snippet"
    return "\n".join(blocks)


@pytest.mark.parametrize("encoder_type", ["mf", None])
def test_llm_card_snippet_runs(make_cl3mrec, run_without_repo, tmp_path, encoder_type):
    model, tokenizer = make_cl3mrec("llama", encoder_type, use_history_embeddings=encoder_type is not None)
    model_dir = tmp_path / "elsewhere" / "model"  # the snippet runs in tmp_path / "elsewhere"
    save_merged(model, CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5), model_dir)
    code = how_to_use_code(write_model_card(model_dir).read_text())
    assert 'pipeline("cl3mrec-scoring", model="model"' in code  # the folder's name: no local absolute path
    stdout = run_without_repo(code)
    assert stdout.count("'score'") == 3  # one scored record + two ranked candidates


def test_cf_card_snippet_runs(make_tiny_cf_config, run_without_repo, tmp_path):
    torch.manual_seed(0)
    model_dir = tmp_path / "elsewhere" / "cf"
    CFRecModel(make_tiny_cf_config("mf")).save_pretrained(model_dir)
    code = how_to_use_code(write_model_card(model_dir).read_text())
    assert "AutoModel.from_pretrained" in code
    assert "tensor(" in run_without_repo(code)
