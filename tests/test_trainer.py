"""CL3MRecTrainer on a tiny random Llama: loss terms, staged freezing, evaluation metrics, resume."""

import contextlib
import json

import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from trainers.llm_loading import unwrap_peft
from trainers.training.prompt_dataset import CL3MRecCollator
from trainers.training.smoke_pipeline import prepare_pipeline_inputs
from trainers.training.stage_run import compiled_decoder, run_stage
from trainers.training.stage_setup import build_stage
from trainers.training.stages import compiled_decoder_layers
from trainers.training.training_args import CL3MRecTrainingArguments, parse_config

SPEC = {
    "data": {"num_users": 40, "num_items": 60, "interactions_per_user": 20},
    "cf": {
        "model": {"encoder_type": "mf", "hidden_size": 8, "use_bias": True, "max_history": 5},
        "train": {"epochs": 2, "batch_size": 256, "lr": 0.01, "selection_split": "valid_small"},
    },
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Synthetic data + pretrained MF + tiny Llama (built once for the module, ~5 s)."""
    root = tmp_path_factory.mktemp("trainer")
    prepare_pipeline_inputs(SPEC, root, seed=0)
    return root


def stage_args(workspace, output_dir, **overrides):
    values = {
        "llm_path": str(workspace / "llm"),
        "data_dir": str(workspace / "data"),
        "cf_model_dir": str(workspace / "cf"),
        "text_cache_dir": str(workspace / "cache"),
        "output_dir": str(output_dir),
        "stage": "cie",
        "template": "collm_ml1m",
        "contrastive_weight": 0.5,
        "max_history": 4,
        "max_train_samples": 64,
        "max_eval_samples": 48,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "learning_rate": 0.05,
        "max_steps": 1,
        "logging_steps": 1,
        "lora_r": 2,
        "lora_alpha": 4,
        "save_strategy": "no",
        "use_cpu": True,
        "do_train": True,
        "seed": 0,
        **overrides,
    }
    return parse_config(values)


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def changed_names(before, model):
    return {name for name, param in model.named_parameters() if not torch.equal(before[name], param.detach())}


def logged_keys(trainer):
    return {key for entry in trainer.state.log_history for key in entry}


def test_cie_step_logs_every_term_and_trains_only_the_projector(workspace, tmp_path):
    setup = build_stage(*stage_args(workspace, tmp_path / "cie", report_to="tensorboard"))
    model = setup.trainer.model
    before = snapshot(model)
    setup.trainer.train()
    changed = changed_names(before, model)
    projector = {name for name in before if "projector.modules_to_save" in name}
    assert changed == projector  # every projector tensor moved, nothing else did
    assert {"loss/rec", "loss/contrastive", "contrastive/accuracy", "contrastive/item_accuracy"} <= logged_keys(
        setup.trainer
    )
    assert list((tmp_path / "cie").rglob("events.out.tfevents*")), "report_to: tensorboard wrote no event file"


def test_lora_step_trains_only_lora(workspace, tmp_path):
    setup = build_stage(
        *stage_args(workspace, tmp_path / "lora", stage="lora", template="tallrec_ml1m", contrastive_weight=0.0)
    )
    model = setup.trainer.model
    before = snapshot(model)
    setup.trainer.train()
    changed = changed_names(before, model)
    assert changed and all("lora_" in name for name in changed)
    assert "loss/rec" in logged_keys(setup.trainer) and "loss/contrastive" not in logged_keys(setup.trainer)


def test_training_batches_share_prefixes(workspace, tmp_path):
    """By default (share_prefix) training rows of one user context come together and batches carry shared
    prefixes; each epoch shuffles the contexts."""
    from trainers.training.trainer import ContextGroupedSampler

    trainer = build_stage(*stage_args(workspace, tmp_path / "shared", max_steps=2)).trainer
    assert isinstance(trainer._get_train_sampler(), ContextGroupedSampler)
    assert trainer.data_collator.collator.prefix_parts == ("user", "history")
    trainer.data_collator.collator.min_saving = -1.0  # the synthetic rows repeat no context: share anyway
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["prefix_input_ids"].shape[0] <= batch["input_ids"].shape[0] == 8
    parameters = trainer.model.num_parameters(exclude_embeddings=True)
    tokens = batch["input_ids"].numel() + batch["prefix_input_ids"].numel()
    assert trainer.floating_point_ops(batch) == 6 * tokens * parameters  # the prefixes count too
    trainer.train()
    assert trainer.state.global_step == 2
    checkpointed = stage_args(workspace, tmp_path / "gc", activation_checkpointing=True)[-1]
    assert checkpointed.activation_checkpointing and not checkpointed.share_prefix  # the KV cache is off
    with pytest.warns(FutureWarning, match="gradient_checkpointing"):  # transformers' deprecated alias still works
        assert not stage_args(workspace, tmp_path / "gc", gradient_checkpointing=True)[-1].share_prefix


def test_contradictory_stage_is_refused_before_building(workspace, tmp_path):
    with pytest.raises(ValueError, match="text-only prompts"):
        build_stage(*stage_args(workspace, tmp_path / "bad", stage="lora", contrastive_weight=0.0))


def test_evaluation_reports_ranking_metrics_in_row_order(workspace, tmp_path):
    setup = build_stage(*stage_args(workspace, tmp_path / "eval", do_train=False))
    trainer = setup.trainer
    metrics = trainer.evaluate()
    for key in ("eval_auc", "eval_uauc", "eval_n_rows", "eval_warm_auc", "eval_cold_n_rows", "eval_loss/rec",
                "eval_loss/contrastive", "eval_contrastive/accuracy"):
        assert key in metrics, key
    assert metrics["eval_n_rows"] == 48
    assert 0.0 <= metrics["eval_auc"] <= 1.0
    # Row order: the score of row i equals a forward pass over row i alone.
    predictions = trainer.predict(trainer.eval_dataset).predictions
    model = trainer.model.eval()
    for index in (0, 17, 47):
        batch = CL3MRecCollator(trainer.data_collator.collator.processor)([trainer.eval_dataset[index]])  # whole prompt
        batch.pop("labels")
        with torch.no_grad():
            score = model(**batch).logits.item()
        assert score == pytest.approx(float(predictions[index]), abs=1e-4)


def test_compiled_decoder_scores_as_the_eager_one_and_puts_everything_back(workspace, tmp_path):
    trainer = build_stage(*stage_args(workspace, tmp_path / "eval", do_train=False, bf16=False)).trainer
    eager = trainer.predict(trainer.eval_dataset).predictions
    collator, layers = trainer.data_collator.collator, unwrap_peft(trainer.model).get_decoder().layers
    prefix_parts, names = collator.prefix_parts, list(trainer.model.state_dict())
    assert prefix_parts is not None  # share_prefix: on by default
    with compiled_decoder(trainer, True):
        assert collator.prefix_parts is None and all(layer._compiled_call_impl is not None for layer in layers)
        assert list(trainer.model.state_dict()) == names  # a checkpoint saved meanwhile is the eager model's
        outer = [layer._compiled_call_impl for layer in layers]
        with compiled_decoder_layers(trainer.model):  # a nested block leaves the enclosing one compiled
            pass
        assert [layer._compiled_call_impl for layer in layers] == outer
        compiled = trainer.predict(trainer.eval_dataset).predictions
    np.testing.assert_allclose(compiled, eager, atol=1e-4)
    assert collator.prefix_parts == prefix_parts and all(layer._compiled_call_impl is None for layer in layers)


@pytest.mark.parametrize(
    "stage", [{"stage": "lora", "template": "tallrec_ml1m", "contrastive_weight": 0.0}, {"stage": "joint"}],
    ids=["lora", "joint"],
)
def test_compile_train_trains_as_the_eager_loop_and_saves_the_eager_names(workspace, tmp_path, stage):
    """Stages lora and joint (LoRA + projector, contrastive term) with compiled decoder layers (forward and backward,
    whole prompts): the same losses and trained weights as the eager loop, and the checkpoint holds the eager
    model's tensor names."""
    from safetensors.torch import load_file

    common = {**stage, "max_steps": 2, "bf16": False, "lora_dropout": 0.0, "save_strategy": "steps", "save_steps": 2}
    eager = build_stage(*stage_args(workspace, tmp_path / "eager", **common)).trainer
    eager.train()
    torch._dynamo.reset()  # no graph of an earlier test to reuse: training must capture its own
    counters.clear()
    run_stage(*stage_args(workspace, tmp_path / "compiled", compile_train=True, **common))
    assert counters["stats"]["unique_graphs"] >= 1  # the layers did run compiled (the final evaluation is eager)
    losses = [[entry["loss"] for entry in log if "loss" in entry] for log in (
        eager.state.log_history, json.loads((tmp_path / "compiled" / "trainer_state.json").read_text())["log_history"])]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-4)
    saved = [load_file(tmp_path / run / "checkpoint-2" / "adapter_model.safetensors") for run in ("eager", "compiled")]
    assert list(saved[1]) == list(saved[0]) and all("_orig_mod" not in name for name in saved[1])
    for name, tensor in saved[0].items():
        torch.testing.assert_close(saved[1][name], tensor, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize(
    "values, message",
    [({"stage": "cie"}, "compile_train is for stages lora and joint"),
     ({"stage": "lora", "activation_checkpointing": True}, "compile_train and activation_checkpointing")],
)
def test_compile_train_refusals(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        CL3MRecTrainingArguments(output_dir=str(tmp_path), use_cpu=True, compile_train=True, **values)


def test_resume_from_checkpoint_matches_uninterrupted_run(workspace, tmp_path):
    common = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "learning_rate": 0.01}
    uninterrupted = build_stage(*stage_args(workspace, tmp_path / "a", **common)).trainer
    uninterrupted.train()
    first = build_stage(*stage_args(workspace, tmp_path / "b", **common)).trainer
    first.train()
    checkpoint = tmp_path / "b" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "optimizer.pt").is_file()

    resumed = build_stage(*stage_args(workspace, tmp_path / "b", **common)).trainer
    lora_before = {n: p.detach().clone() for n, p in resumed.model.named_parameters() if "lora_" in n}
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == 4
    final = dict(resumed.model.named_parameters())
    reference = dict(uninterrupted.model.named_parameters())
    trainable = [name for name, param in final.items() if param.requires_grad]
    assert trainable and all("projector.modules_to_save" in name for name in trainable)  # freezing survives resume
    for name in trainable:
        torch.testing.assert_close(final[name], reference[name], rtol=1e-5, atol=1e-6)
    for name, value in lora_before.items():
        assert torch.equal(final[name], value), f"{name} changed in stage cie after resume"


def test_run_stage_writes_results_scores_and_merged_model(workspace, tmp_path):
    metrics = run_stage(*stage_args(workspace, tmp_path / "run", max_steps=2))
    out = tmp_path / "run"
    assert (out / "eval_results.json").is_file() and (out / "adapter_model.safetensors").is_file()
    scores = np.load(out / "eval_scores.npy")
    assert scores.shape == (48,) and np.isfinite(scores).all()
    assert (out / "merged" / "config.json").is_file() and (out / "merged" / "eval_results.json").is_file()
    assert "eval_auc" in metrics
    # One shape of eval_results.json in both places: {split: ranking_report + the stage's other eval metrics}.
    stage_results = json.loads((out / "eval_results.json").read_text())
    assert stage_results == json.loads((out / "merged" / "eval_results.json").read_text())
    report = stage_results["valid_small"]
    assert list(stage_results) == ["valid_small"] and not [key for key in report if key.startswith("eval_")]
    assert report["auc"] == pytest.approx(metrics["eval_auc"]) and report["warm"]["auc"] == pytest.approx(
        metrics["eval_warm_auc"])
    assert {"loss", "loss/rec", "align_item_recall@10"} <= set(report) and "warm_auc" not in report


def test_run_stage_plots_and_card_in_output_dir_and_export(workspace, tmp_path):
    run_stage(*stage_args(workspace, tmp_path / "run", max_steps=2))
    out, merged = tmp_path / "run", tmp_path / "run" / "merged"
    for folder in (out, merged):
        for name in ("training_curves.png", "eval_auc_uauc.png"):
            assert (folder / "plots" / name).read_bytes().startswith(b"\x89PNG")
    captions = json.loads((merged / "plots" / "captions.json").read_text())
    assert "beside the CF encoder it reads" in captions[1]["caption"]  # the MF's metrics.json has valid_small
    card = (merged / "README.md").read_text()
    assert "![Training curves](plots/training_curves.png)" in card
    assert "![AUC and UAUC on valid_small](plots/eval_auc_uauc.png)" in card
    assert "| learning_rate | 0.05 |" in card and "| lora_r | 2 |" in card and "| total_train_batch_size | 8 |" in card
    assert "- Base model: `llm`, a local folder." in card
    assert all(f"{name} " in card for name in ("torch", "transformers", "peft", "datasets", "accelerate"))
    assert "/tmp" not in card and str(tmp_path) not in card and str(workspace) not in card


def test_final_eval_metrics_reach_tensorboard(workspace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = run_stage(*stage_args(workspace, tmp_path / "tb", report_to="tensorboard"))
    (run_dir,) = {path.parent for path in (tmp_path / "tb" / "runs").rglob("events.out.tfevents*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    (final_auc,) = events.Scalars("eval/auc")  # TensorBoard's name of eval_auc; no evaluation during training
    assert final_auc.value == pytest.approx(metrics["eval_auc"]) and final_auc.step == 1
    assert "eval/warm_auc" in events.Tags()["scalars"] and "train/loss/rec" in events.Tags()["scalars"]


def test_best_checkpoint_by_eval_auc_and_early_stopping(workspace, tmp_path):
    overrides = {
        "max_steps": 6,
        "eval_strategy": "steps",
        "eval_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "load_best_model_at_end": True,
        "early_stopping_patience": 1,
        "learning_rate": 0.2,
        "max_eval_samples": 32,
    }
    trainer = build_stage(*stage_args(workspace, tmp_path / "best", **overrides)).trainer
    trainer.train()
    aucs = [entry["eval_auc"] for entry in trainer.state.log_history if "eval_auc" in entry]
    assert trainer.state.best_metric == pytest.approx(max(aucs))
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{int(np.argmax(aucs)) + 1}")
    if len(aucs) < 6:  # stopped early: the last evaluation did not beat the best one
        assert aucs[-1] <= max(aucs[:-1])


def test_run_stage_resumes_from_the_last_checkpoint(workspace, tmp_path):

    common = {"save_strategy": "steps", "save_steps": 2, "max_eval_samples": 16}
    run_stage(*stage_args(workspace, tmp_path / "r", max_steps=2, **common))
    run_stage(*stage_args(workspace, tmp_path / "r", max_steps=4, resume_from_checkpoint=True, **common))
    state = json.loads((tmp_path / "r" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's history, 3-4 from the resumed run


def test_cie_training_with_merged_frozen_lora_matches_peft_layers(workspace, tmp_path):
    """Stage cie trains inside `merged_frozen_lora` (run_stage): with a non-zero frozen adapter and no dropout,
    the projector must end where training through PEFT's unmerged LoRA layers ends."""
    from trainers.training.stages import merged_frozen_lora

    def trained(output_dir, merge: bool) -> dict:
        trainer = build_stage(*stage_args(workspace, output_dir, max_steps=3, lora_dropout=0.0)).trainer
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, param in sorted(trainer.model.named_parameters()):
                if "lora_B" in name:  # B starts at zero: give the frozen adapter an effect
                    param.copy_(torch.randn(param.shape, generator=generator))
        with merged_frozen_lora(trainer.model) if merge else contextlib.nullcontext() as merged:
            assert not merge or merged > 0
            trainer.train()
        return snapshot(trainer.model)

    merged, unmerged = trained(tmp_path / "merged", True), trained(tmp_path / "unmerged", False)
    projector = [name for name in merged if "projector.modules_to_save" in name]
    assert projector and merged.keys() == unmerged.keys()
    for name in merged:
        torch.testing.assert_close(merged[name], unmerged[name], rtol=1e-4, atol=1e-5)


def test_length_grouped_batches_are_available(workspace, tmp_path):
    """`train_sampling_strategy: group_by_length` (the speed option in docs/training.md) reads the tokenised
    `length` column and trains."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    trainer = build_stage(*stage_args(workspace, tmp_path / "grouped", max_steps=2, share_prefix=False,
                                      train_sampling_strategy="group_by_length")).trainer
    assert isinstance(trainer._get_train_sampler(), LengthGroupedSampler)
    trainer.train()
    assert trainer.state.global_step == 2
    _assert_predictions_in_row_order(trainer)


def _assert_predictions_in_row_order(trainer):
    """Evaluation batches come longest first (whole prompts; with shared prefixes, longest user context first), yet
    `predict` returns row i's score at position i."""
    lengths = trainer.eval_dataset["length"]
    if not trainer.args.share_prefix:
        widths = [batch["attention_mask"].shape[1] for batch in trainer.get_eval_dataloader()]
        assert widths == sorted(widths, reverse=True) and widths[0] == max(lengths) and widths[-1] < widths[0]
    predictions = trainer.predict(trainer.eval_dataset).predictions
    model = trainer.model.eval()
    for index in (0, 5, 17, 47):
        batch = CL3MRecCollator(trainer.data_collator.collator.processor)([trainer.eval_dataset[index]])  # whole prompt
        batch.pop("labels")
        with torch.no_grad():
            score = model(**batch).logits.item()
        assert score == pytest.approx(float(predictions[index]), abs=1e-4)


def test_fusion_weight_trains_in_its_own_optimizer_group(workspace, tmp_path):
    """score_fusion: residual + bias features + heads through the real Trainer: the fusion weight has its own learning
    rate, moves, and the run reports the full-table retrieval before and after training."""
    overrides = {"cf_features": "embedding_bias", "score_fusion": "residual", "alignment_dim": 8}
    setup = build_stage(*stage_args(workspace, tmp_path / "fused", fusion_learning_rate=0.3, max_steps=2, **overrides))
    trainer = setup.trainer
    optimizer = trainer.create_optimizer()
    fusion_groups = [group for group in optimizer.param_groups if group["lr"] == 0.3]
    assert len(fusion_groups) == 1 and [p.numel() for p in fusion_groups[0]["params"]] == [1]
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(
        [p for p in trainer.model.parameters() if p.requires_grad]
    )
    weight = trainer.model.get_base_model().score_fusion.weight
    before = float(weight)
    trainer.train()
    assert abs(float(weight) - before) > 0.2  # Adam moves ~lr per step: at the projector's 0.05, 2 steps stay <= 0.1
    report = trainer.alignment_report()
    assert set(report) == {"align_item_recall@10", "align_item_recall@10_chance", "align_items"}
    assert 0 < report["align_item_recall@10_chance"] <= 1


def test_cross_fitted_cie_trains_on_inputs_of_cf_models_that_did_not_see_the_rows(workspace, tmp_path):
    """cf_cross_fit_folds through the real Trainer: train rows carry the fold models' features and logits (not the
    full model's), the model trains on them and logs its fusion weights (a weighted fusion: both in the fusion's
    optimizer group); evaluation reads the full-train CF model."""
    overrides = {"cf_features": "embedding_bias", "score_fusion": "weighted", "cf_cross_fit_folds": 2}
    setup = build_stage(*stage_args(workspace, tmp_path / "crossfit", max_steps=2, contrastive_weight=0.0, **overrides))
    trainer = setup.trainer
    assert {"cf_user_features", "cf_item_features", "cf_logits"} <= set(trainer.train_dataset.column_names)
    assert "cf_logits" not in trainer.eval_dataset.column_names
    batch = next(iter(trainer.get_train_dataloader()))
    base = trainer.model.get_base_model()
    with torch.no_grad():
        full = base.cf_encoder.score(batch["user_ids"], batch["item_ids"], batch["history_item_ids"])
    assert batch["cf_logits"].shape == full.shape and not torch.allclose(batch["cf_logits"], full, atol=1e-3)
    fusion_group = [group for group in trainer.create_optimizer().param_groups if group["lr"] == 0.02]
    assert [param.numel() for param in fusion_group[0]["params"]] == [1, 1]
    trainer.train()
    assert {"fusion/weight", "fusion/answer_weight"} <= logged_keys(trainer)
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_auc"] <= 1.0 and "eval_fusion/weight" in metrics
