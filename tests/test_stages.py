"""Staged freezing rules (trainers.training.stages) and argument validation (trainers.training.training_args)."""

from pathlib import Path

import pytest
import torch
from torch import nn

from trainers.llm_loading import DEFAULT_LORA_TARGETS
from trainers.training.stages import (
    apply_stage,
    check_stage_settings,
    merged_frozen_lora,
    parameter_group,
    trainable_parameter_names,
)
from trainers.training.training_args import CL3MRecTrainingArguments, parse_config

ROOT = Path(__file__).resolve().parents[1]


class FakePeftModel(nn.Module):
    """Parameter names as in a PEFT-wrapped CL3MRecModel (LoRA + modules_to_save copies)."""

    def __init__(self, with_lora: bool = True):
        super().__init__()
        layer = nn.ModuleDict({"base_layer": nn.Linear(2, 2)})
        if with_lora:
            layer["lora_A"] = nn.ModuleDict({"default": nn.Linear(2, 1, bias=False)})
        self.language_model = nn.ModuleDict({"q_proj": layer, "embed": nn.Embedding(3, 2)})
        self.projector = nn.ModuleDict(
            {"original_module": nn.Linear(2, 2), "modules_to_save": nn.ModuleDict({"default": nn.Linear(2, 2)})}
        )
        self.cf_encoder = nn.ModuleDict(
            {"original_module": nn.Embedding(4, 2), "modules_to_save": nn.ModuleDict({"default": nn.Embedding(4, 2)})}
        )


def test_parameter_groups():
    assert parameter_group("base_model.model.language_model.layers.0.q_proj.lora_A.default.weight") == "lora"
    assert parameter_group("base_model.model.projector.modules_to_save.default.net.0.weight") == "projector"
    assert parameter_group("base_model.model.projector.original_module.net.0.weight") == "frozen_base"
    assert parameter_group("base_model.model.cf_encoder.modules_to_save.default.user_embedding.weight") == "cf_encoder"
    assert parameter_group("base_model.model.language_model.embed_tokens.weight") == "frozen_base"


@pytest.mark.parametrize(
    "stage, train_cf, expected",
    [
        ("lora", False, {"language_model.q_proj.lora_A.default.weight"}),
        ("cie", False, {"projector.modules_to_save.default.weight", "projector.modules_to_save.default.bias"}),
        (
            "cie",
            True,
            {
                "projector.modules_to_save.default.weight",
                "projector.modules_to_save.default.bias",
                "cf_encoder.modules_to_save.default.weight",
            },
        ),
        (
            "joint",
            False,
            {
                "language_model.q_proj.lora_A.default.weight",
                "projector.modules_to_save.default.weight",
                "projector.modules_to_save.default.bias",
            },
        ),
    ],
)
def test_apply_stage_trainable_sets(stage, train_cf, expected):
    model = FakePeftModel()
    for param in model.parameters():  # start from "everything trainable" to see the rule switch things off
        param.requires_grad_(True)
    counts = apply_stage(model, stage, train_cf)
    assert trainable_parameter_names(model) == expected
    assert counts["frozen_base"]["trainable"] == 0
    assert sum(c["trainable"] for c in counts.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_apply_stage_refuses_missing_group():
    with pytest.raises(ValueError, match="no parameters in \\['lora'\\]"):
        apply_stage(FakePeftModel(with_lora=False), "lora")
    with pytest.raises(ValueError, match="unknown stage"):
        apply_stage(FakePeftModel(), "everything")


def _tiny_peft_batch(make_cl3mrec, tiny_rows, stage):
    """A tiny Llama CL3M-Rec with LoRA (dropout 0.5, B non-zero), ``apply_stage(stage)``, and one collated batch."""
    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.llm_loading import add_lora
    from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset

    model, tokenizer = make_cl3mrec("llama", "mf")
    peft_model = add_lora(model, r=4, alpha=8, dropout=0.5)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # B starts at zero: make the adapter matter
    apply_stage(peft_model, stage)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    features = tokenize_dataset(tiny_rows.select(range(4)), processor).to_list()
    return peft_model, CL3MRecCollator(processor)(features)


def test_merged_frozen_lora_is_inference_lora_and_restores_weights(make_cl3mrec, tiny_rows):
    peft_model, batch = _tiny_peft_batch(make_cl3mrec, tiny_rows, "cie")
    before = {name: p.detach().clone() for name, p in peft_model.named_parameters()}
    with torch.no_grad():
        inference = peft_model.eval()(**batch).yes_logits
        train_mode = [peft_model.train()(**batch).yes_logits for _ in range(2)]
    assert not torch.allclose(train_mode[0], train_mode[1])  # dropout 0.5 acts on the frozen adapter
    with merged_frozen_lora(peft_model) as merged:
        assert merged == 2 * len(DEFAULT_LORA_TARGETS)  # every adapted linear of the 2-layer tiny Llama
        output = peft_model.train()(**batch)
        output.loss.backward()
        assert peft_model.base_model.model.projector.modules_to_save["default"].linear_1.weight.grad is not None
    torch.testing.assert_close(output.yes_logits.detach(), inference, atol=1e-5, rtol=1e-5)
    for name, param in peft_model.named_parameters():
        assert torch.equal(param.detach(), before[name]), name  # merged and restored bit-exactly
    assert not any(getattr(m, "merged", False) for m in peft_model.modules())


def test_merged_frozen_lora_leaves_trainable_lora_alone(make_cl3mrec, tiny_rows):
    peft_model, _ = _tiny_peft_batch(make_cl3mrec, tiny_rows, "lora")
    with merged_frozen_lora(peft_model) as merged:
        assert merged == 0


@pytest.mark.parametrize(
    "stage, placeholders, weight, train_cf, message",
    [
        ("lora", True, 0.0, False, "text-only prompts"),
        ("lora", False, 0.5, False, "contrastive_weight must be 0"),
        ("lora", False, 0.0, True, "train_cf_encoder"),
        ("cie", False, 0.0, False, "no \\{user\\}/\\{item\\} placeholders"),
        ("joint", False, 0.1, False, "no \\{user\\}/\\{item\\} placeholders"),
        ("bogus", True, 0.0, False, "unknown stage"),
    ],
)
def test_contradictory_settings_are_refused(stage, placeholders, weight, train_cf, message):
    with pytest.raises(ValueError, match=message):
        check_stage_settings(stage, placeholders, weight, train_cf)


def test_consistent_settings_pass():
    check_stage_settings("lora", False, 0.0)
    check_stage_settings("cie", True, 0.0)
    check_stage_settings("cie", True, 0.5, train_cf_encoder=True)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("stage", "bogus", "unknown stage"),
        ("contrastive_temperature", 0.0, "contrastive_temperature"),
        ("contrastive_weight", -1.0, "contrastive_weight"),
        ("remove_unused_columns", True, "remove_unused_columns"),
        ("lora_r", 0, "lora_r"),
    ],
)
def test_training_arguments_validate(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        CL3MRecTrainingArguments(output_dir=str(tmp_path), use_cpu=True, **{field: value})


def test_parse_config_yaml_overrides_and_unknown_keys(tmp_path):
    config = tmp_path / "stage.yaml"
    config.write_text("llm_path: llm\ndata_dir: data\noutput_dir: out\nstage: cie\nlearning_rate: 1e-4\nuse_cpu: true\n")
    model_args, data_args, args = parse_config(config, ["contrastive_weight=0.5", "--lora_r", "4"])
    assert (args.stage, args.contrastive_weight, args.lora_r) == ("cie", 0.5, 4)
    assert args.learning_rate == pytest.approx(1e-4) and isinstance(args.learning_rate, float)
    assert args.remove_unused_columns is False and args.metric_for_best_model == "auc"
    assert model_args.llm_path == "llm" and data_args.eval_split == "valid_small"
    with pytest.raises(ValueError, match="unknown argument\\(s\\) \\['lora_rank'\\]"):
        parse_config(config, ["lora_rank=4"])


def test_an_override_replaces_a_bad_yaml_value_and_its_own_errors_name_the_command_line(tmp_path):
    config = tmp_path / "stage.yaml"
    config.write_text('llm_path: llm\ndata_dir: data\noutput_dir: out\nuse_cpu: true\nlora_r: "8"\n')
    with pytest.raises(ValueError, match=f"{config}: lora_r must be an integer, got the string '8'"):
        parse_config(config)
    assert parse_config(config, ["lora_r=4"])[2].lora_r == 4  # the file's value is replaced, not read
    with pytest.raises(ValueError, match="^command-line override: lora_r must be an integer, got the string 'x'"):
        parse_config(config, ["lora_r=x"])


def test_parse_config_gives_yaml_no_back_to_string_fields():
    values = {"llm_path": "l", "data_dir": "d", "output_dir": "o", "use_cpu": True}
    _, _, args = parse_config({**values, "save_strategy": False}, ["eval_strategy=no", "resume_from_checkpoint=true"])
    assert args.save_strategy == "no" and args.eval_strategy == "no" and args.resume_from_checkpoint == "true"


def test_fusion_weight_and_alignment_heads_train_with_the_projector(make_cl3mrec):
    """On a real PEFT-wrapped model: stage cie trains projector + fusion weight + heads, stage lora none of them."""
    from trainers.llm_loading import add_lora

    model, _ = make_cl3mrec("llama", "mf", cf_features="embedding_bias", score_fusion="residual", alignment_dim=4)
    peft_model = add_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["q_proj"])
    counts = apply_stage(peft_model, "cie", contrastive_weight=0.1)
    assert counts["score_fusion"]["trainable"] == 1
    assert counts["alignment_heads"]["trainable"] == 2 * 4 * model.config.text_config.hidden_size
    assert counts["lora"]["trainable"] == 0
    counts = apply_stage(peft_model, "cie", contrastive_weight=0.0)  # nothing would give the heads a gradient
    assert counts["alignment_heads"]["trainable"] == 0 and counts["score_fusion"]["trainable"] == 1
    apply_stage(peft_model, "lora")
    assert {parameter_group(name) for name in trainable_parameter_names(peft_model)} == {"lora"}


@pytest.mark.parametrize(("cuda", "given", "expected"), [(False, None, True), (True, None, False), (True, True, True)])
def test_use_cpu_defaults_to_the_cpu_only_without_a_gpu(monkeypatch, cuda, given, expected):
    """No ``use_cpu`` in a YAML: the GPU when CUDA is there (mocked here), else the CPU; an explicit value wins."""
    from transformers import TrainingArguments

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if cuda:  # Trainer's own device set-up would really call CUDA: only the choice is under test
        monkeypatch.setattr(TrainingArguments, "__post_init__", lambda self: None)
    args = CL3MRecTrainingArguments(output_dir="o", **({} if given is None else {"use_cpu": given}))
    assert args.use_cpu is expected


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "ml1m").glob("*.yaml")), ids=lambda path: path.stem)
def test_every_ml1m_stage_config_parses(config, tmp_path):
    """Every shipped ML-1M stage file (with its bases) is a valid stage: known keys, values the dataclasses accept."""
    model_args, data_args, args = parse_config(config, {"output_dir": str(tmp_path), "use_cpu": True})
    assert args.stage in ("lora", "cie") and model_args.template and data_args.eval_split == "valid_small"
    if "crossfit" in config.stem:
        assert args.cf_cross_fit_folds == 5 and args.stage == "cie"


def test_cross_fitting_settings_are_refused_before_building():
    with pytest.raises(ValueError, match="no CF placeholders"):
        check_stage_settings("cie", False, 0.0, cf_cross_fit_folds=5)
    with pytest.raises(ValueError, match="does not cross-fit history-item placeholders"):
        check_stage_settings("cie", True, 0.0, cf_cross_fit_folds=5, use_history_embeddings=True)
    check_stage_settings("cie", True, 0.0, cf_cross_fit_folds=5)
