"""``trainers.train_cli`` pieces that need no training run: stage model building and its settings checks."""

from types import SimpleNamespace

import pytest

from modeling_cl3mrec.processing_cl3mrec import HISTORY_TOKEN
from trainers.prompt_templates import load_template
from trainers.train_cli import build_stage_model, training_attention


def stage_args(**overrides):
    values = {"max_history": 5, "contrastive_weight": 0.0, "contrastive_temperature": 0.1, "lora_r": 4,
              "lora_alpha": 8, "lora_dropout": 0.0, "lora_target_modules": ["q_proj"], "stage": "lora"}
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
