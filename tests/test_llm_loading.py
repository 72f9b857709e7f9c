"""build_cl3mrec / add_lora / export_merged and the tiny LLM builder."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from modeling_cl3mrec import CFRecModel
from modeling_cl3mrec import CL3MRecProcessor
from trainers.inference.llm_scoring import CL3MRecScorer
from trainers.llm_loading import add_lora, build_cl3mrec, export_merged, lora_target_regex


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_tokenizer_answer_tokens(tiny_llm_dirs, arch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm_dirs[arch])
    for word in ("Yes", "No", " Yes", " No"):
        assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert tokenizer.unk_token_id not in tokenizer("Toy Story (1995) é", add_special_tokens=False)["input_ids"]


def test_build_adds_placeholders_and_copies_cf(tiny_llama_dir, make_tiny_cf_config, tmp_path):
    cf_model = CFRecModel(make_tiny_cf_config("mf"))
    cf_model.save_pretrained(tmp_path / "cf")
    model, tokenizer = build_cl3mrec(tiny_llama_dir, cf_model_dir=tmp_path / "cf", use_history_embeddings=True)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id is not None
    vocab = model.config.text_config.vocab_size
    placeholder_ids = [model.config.user_token_id, model.config.item_token_id, model.config.history_token_id]
    assert len(set(placeholder_ids)) == 3 and min(placeholder_ids) >= vocab
    assert model.get_input_embeddings().num_embeddings == vocab  # no resize
    assert tokenizer.decode([model.config.yes_token_id]) == "Yes"
    torch.testing.assert_close(model.cf_encoder.state_dict(), cf_model.encoder.state_dict())
    assert not any(p.is_meta for p in model.parameters())


def test_text_only_build_and_nf4_needs_cuda(tiny_llama_dir):
    model, tokenizer = build_cl3mrec(tiny_llama_dir)
    assert model.cf_encoder is None and model.projector is None and not model.config.use_cf
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="nf4"):
            build_cl3mrec(tiny_llama_dir, quantization="nf4")


def test_lora_regex_targets_only_the_llm():
    pattern = lora_target_regex()
    assert re.fullmatch(pattern, "language_model.model.layers.0.self_attn.q_proj")
    assert re.fullmatch(pattern, "language_model.model.layers.1.mlp.down_proj")
    for name in ("projector.linear_1", "language_model.lm_head", "cf_encoder.blocks.0.linear1"):
        assert not re.fullmatch(pattern, name)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_lora_merge_keeps_scores(make_cl3mrec, tiny_rows, tmp_path, arch):
    model, tokenizer = make_cl3mrec(arch, "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    rows = tiny_rows.select(range(8))
    base_scores = CL3MRecScorer(model, processor, use_bf16=False, show_progress=False).score(rows)
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.0)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in name for name in trainable)
    assert any("projector" in name for name in trainable) and any("cf_encoder" in name for name in trainable)
    assert not any("embed_tokens" in name or "lm_head" in name for name in trainable)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # LoRA B starts at zero: make the adapter change the scores
            if "modules_to_save" in name and "projector" in name:
                param.add_(0.1)
    peft_scores = CL3MRecScorer(peft_model, processor, use_bf16=False, show_progress=False).score(rows)
    out_dir = export_merged(peft_model, processor, tmp_path / "merged")
    assert not list(tmp_path.glob(".merged.*"))  # the temporary directory is gone
    merged_scores = CL3MRecScorer.from_pretrained(out_dir, use_bf16=False, show_progress=False).score(rows)
    np.testing.assert_allclose(merged_scores, peft_scores, atol=1e-4)
    assert np.abs(peft_scores - base_scores).max() > 1e-3


def test_cli_tiny(tmp_path):
    import argparse

    from trainers.cli import llm_cli

    parser = argparse.ArgumentParser()
    llm_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["llm", "tiny", "--out", str(tmp_path / "tiny"), "--arch", "qwen2"])
    assert args.func(args) == 0
    model, tokenizer = build_cl3mrec(tmp_path / "tiny")
    assert model.config.text_config.model_type == "qwen2" and model.config.text_config.hidden_size == 64


SHARED_ML1M = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


@pytest.mark.skipif(not SHARED_ML1M.is_dir(), reason="shared ML-1M CoLLM files not present")
def test_the_tiny_tokenizer_keeps_the_answer_words_whole_on_ml1m_titles():
    """ML-1M's titles (as `llm tiny --texts-from` reads them: one per row) used to out-vote the answer words in BPE's
    merges ("'Yes' is not a single token")."""
    import pandas as pd

    from trainers.tiny_llm import build_tiny_tokenizer

    titles = pd.read_pickle(SHARED_ML1M / "valid_small_ood2.pkl")["title"].tolist() * 8  # ~ the rows of all splits
    tokenizer = build_tiny_tokenizer(titles)
    for text in ("Yes", " Yes", "No", " No"):
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1
