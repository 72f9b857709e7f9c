"""``trainers.training.stage_model`` / ``trainers.training.stage_run`` pieces that need no training run: stage model building and its settings checks."""

from types import SimpleNamespace

import pytest

from modeling_cl3mrec.processing_cl3mrec import HISTORY_TOKEN
from trainers.prompt_templates import load_template
from trainers.training.stage_model import build_stage_model
from trainers.training.stage_run import training_attention


def stage_args(**overrides):
    values = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj"], "stage": "lora"}
    return SimpleNamespace(**{**values, **overrides})


def model_args(llm_path, **overrides):
    values = {"llm_path": str(llm_path), "cf_model_dir": None, "init_from": None, "template": "tallrec_ml1m",
              "tokens_per_entity": 1, "use_history_embeddings": True, "answer_score": "yes",
              "quantization": "none", "dtype": "float32"}
    return SimpleNamespace(**{**values, **overrides})


def test_text_only_stage_ignores_use_history_embeddings(tiny_llama_dir, caplog):
    model, tokenizer = build_stage_model(model_args(tiny_llama_dir), stage_args(), load_template("tallrec_ml1m"), False)
    config = model.get_base_model().config
    assert config.cf_config is None and config.use_history_embeddings is False
    assert HISTORY_TOKEN not in tokenizer.get_vocab()
    assert "use_history_embeddings is ignored" in caplog.text


def test_placeholder_template_without_cf_model_dir_is_refused(tiny_llama_dir):
    with pytest.raises(ValueError, match="set cf_model_dir"):
        build_stage_model(model_args(tiny_llama_dir, template="collm_ml1m"), stage_args(stage="cie"),
                          load_template("collm_ml1m"), True)


@pytest.mark.parametrize(("choice", "device", "inside"), [("auto", "cpu", "eager"), ("auto", "cuda", "sdpa"),
                                                         ("sdpa", "cpu", "sdpa"), ("eager", "cuda", "eager")])
def test_training_attention_switches_for_training_and_restores_for_scoring(tiny_llama_dir, choice, device, inside):
    model, _ = build_stage_model(model_args(tiny_llama_dir), stage_args(), load_template("tallrec_ml1m"), False)
    language_model = model.get_base_model().language_model
    language_model.set_attn_implementation("sdpa")
    with training_attention(model, choice, device):
        assert language_model.config._attn_implementation == inside
        assert language_model.model.layers[0].self_attn.config._attn_implementation == inside
    assert language_model.config._attn_implementation == "sdpa"


def test_nf4_prepares_the_llm_for_kbit_training_before_lora(tiny_llama_dir, monkeypatch):
    """``quantization: nf4`` calls PEFT's ``prepare_model_for_kbit_training`` on the LLM (and only then adds LoRA);
    without quantization it is never called. CUDA / bitsandbytes are mocked away: the LLM loads in fp32."""
    import peft

    from trainers import llm_loading

    calls = []

    def spy(model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=None):
        calls.append((model, use_gradient_checkpointing, gradient_checkpointing_kwargs, hasattr(model, "peft_config")))
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", spy)
    monkeypatch.setattr(llm_loading, "_quantization_config", lambda quantization: None)  # as if CUDA were there
    args = stage_args(activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": False})
    model, _ = build_stage_model(model_args(tiny_llama_dir, use_history_embeddings=False, quantization="nf4"), args,
                                 load_template("tallrec_ml1m"), False)
    language_model = model.get_base_model().language_model
    assert len(calls) == 1 and calls[0][0] is language_model and calls[0][1:] == (True, {"use_reentrant": False}, False)
    build_stage_model(model_args(tiny_llama_dir, use_history_embeddings=False), args, load_template("tallrec_ml1m"), False)
    assert len(calls) == 1


def test_a_4bit_model_is_never_merged_in_place_but_into_an_unquantized_copy(tiny_llama_dir, tiny_rows, tmp_path):
    """Export of a QLoRA stage: ``save_merged`` refuses a quantized LLM; ``unquantized_copy`` reloads the LLM in full
    precision with the trained adapter, and merging that scores as the trained (here: not really 4-bit) model."""
    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.inference.llm_scoring import CL3MRecScorer
    from trainers.llm_loading import is_quantized, save_merged
    from trainers.training.stage_model import unquantized_copy

    arguments, args = model_args(tiny_llama_dir, use_history_embeddings=False), stage_args()
    model, tokenizer = build_stage_model(arguments, args, load_template("tallrec_ml1m"), False)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)  # a trained adapter: merging it changes the scores
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.get_base_model().config, with_ids=False)
    expected = CL3MRecScorer(model, processor, use_bf16=False, show_progress=False).score(tiny_rows.select(range(8)))

    model.get_base_model().language_model.is_loaded_in_4bit = True  # what bitsandbytes sets on a 4-bit LLM
    assert is_quantized(model)
    with pytest.raises(ValueError, match="4-bit/8-bit"):
        save_merged(model, processor, tmp_path / "refused")
    copy = unquantized_copy(model, arguments, args)
    assert not is_quantized(copy) and copy is not model
    assert any("lora_A" in name for name, _ in model.named_parameters())  # the trained model was left unmerged
    save_merged(copy, processor, tmp_path / "merged")
    merged = CL3MRecScorer.from_pretrained(tmp_path / "merged", device="cpu", use_bf16=False, show_progress=False)
    scores = merged.score(tiny_rows.select(range(8)))
    torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), atol=1e-5, rtol=0)
