"""Shared prompt prefixes: rows of one user context run their prefix once (`CL3MRecProcessor.pad_shared_prefix`,
`CL3MRecModel.forward(prefix_input_ids=...)`, the grouped orders of training and scoring). Same function as whole
prompts: scores and gradients are compared with the whole-prompt pass."""

import numpy as np
import pytest
import torch

from modeling_cl3mrec import CL3MRecProcessor
from trainers.inference.llm_scoring import CL3MRecScorer
from trainers.training.prompt_dataset import CL3MRecCollator, context_groups, length_grouped_batches, tokenize_dataset
from trainers.training.trainer import ContextGroupedSampler


@pytest.fixture(scope="module")
def context_rows(tiny_rows):
    """12 rows in 6 user contexts of 1-4 rows each (same user and history, different candidates), shuffled."""
    picks = [0, 0, 0, 0, 1, 1, 2, 3, 3, 3, 5, 6]
    rows = tiny_rows.select(picks)
    items = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1]
    titles = tiny_rows.select([i % 12 for i in range(12)])["title"]  # any titles: lengths differ

    def candidate(row, index):
        return {"item_id": items[index], "title": titles[index], "label": index % 2}

    rows = rows.map(candidate, with_indices=True)
    return rows.select(np.random.default_rng(0).permutation(len(rows)).tolist())


def _processor(model, tokenizer, with_ids=True):
    return CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=with_ids, max_history=5)


def test_prefix_and_suffix_rebuild_every_prompt(make_cl3mrec, context_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = _processor(model, tokenizer)
    features = list(tokenize_dataset(context_rows, processor))
    batch = processor.pad_shared_prefix(features)
    assert batch["prefix_input_ids"].shape[0] == len({processor.context_key(f) for f in features}) == 6
    for row, feature in enumerate(features):
        group = int(batch["prefix_index"][row])
        prefix = batch["prefix_input_ids"][group][batch["prefix_attention_mask"][group].bool()].tolist()
        suffix = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
        assert prefix + suffix == feature["input_ids"]
        assert model.config.item_token_id in suffix and model.config.item_token_id not in prefix
        assert model.config.user_token_id in prefix  # the user context is shared
    assert batch["attention_mask"][:, 0].all() and batch["prefix_attention_mask"][:, -1].all()  # suffix right, prefix left
    no_user = processor.pad_shared_prefix(features, prefix_parts=("history",))
    assert (no_user["prefix_input_ids"] != model.config.user_token_id).all()


def test_rows_without_a_shared_context_still_split(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", None)
    processor = _processor(model, tokenizer, with_ids=False)
    features = list(tokenize_dataset(tiny_rows.select([0]), processor))
    batch = processor.pad_shared_prefix(features)
    assert batch["input_ids"].shape == (1, 1)  # a lone row keeps one token for its suffix
    assert batch["prefix_input_ids"].shape[1] == len(features[0]["input_ids"]) - 1


def _forward_both(model, processor, rows, **kwargs):
    features = list(tokenize_dataset(rows, processor))
    whole = CL3MRecCollator(processor)(features)
    shared = CL3MRecCollator(processor, model.shared_prefix_parts)(features)
    assert shared["prefix_input_ids"].shape[0] < len(features)
    return [model(**batch, **kwargs) for batch in (whole, shared)]


@pytest.mark.parametrize(
    "arch, encoder, options",
    [
        ("llama", "mf", {}),
        ("qwen2", "mf", {"cf_features": "embedding_bias", "score_fusion": "residual"}),
        ("llama", "din", {}),
        ("llama", "lightgcn", {"use_history_embeddings": True, "tokens_per_entity": 2}),
        ("qwen2", None, {}),
    ],
)
def test_shared_prefix_scores_equal_whole_prompts(make_cl3mrec, context_rows, arch, encoder, options):
    model, tokenizer = make_cl3mrec(arch, encoder, **options)
    processor = _processor(model, tokenizer, with_ids=encoder is not None)
    share_user = "user" in model.shared_prefix_parts
    assert share_user == (encoder != "din")  # DIN's user view depends on the candidate
    with torch.no_grad():
        whole, shared = _forward_both(model, processor, context_rows)
    torch.testing.assert_close(shared.logits, whole.logits, atol=1e-5, rtol=1e-5)
    if encoder is not None:
        torch.testing.assert_close(shared.cf_user_embeds, whole.cf_user_embeds)


@pytest.mark.parametrize("stage", ["cie", "lora"])
def test_shared_prefix_gradients_equal_whole_prompts(make_cl3mrec, context_rows, stage):
    """Stage cie (LLM frozen, the prefix before the user placeholder without a graph) and a stage that trains the
    LLM: the same loss and the same gradients through the gathered prefix cache."""
    model, tokenizer = make_cl3mrec("llama", "mf", cf_features="embedding_bias", score_fusion="residual")
    model.train()
    trained = list(model.projector.parameters())
    if stage == "cie":
        model.language_model.requires_grad_(False)
    else:
        trained += [model.language_model.model.layers[0].self_attn.q_proj.weight]
    processor = _processor(model, tokenizer)
    results = []
    for outputs in _forward_both(model, processor, context_rows, frozen_prefix=stage == "cie"):
        model.zero_grad()
        outputs.loss.backward()
        results.append((outputs.loss.detach(), [param.grad.clone() for param in trained]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-5)
    for whole, shared in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-4)


def test_scorer_with_shared_prefixes_matches_whole_prompts(make_cl3mrec, context_rows):
    model, tokenizer = make_cl3mrec("qwen2", "mf")
    processor = _processor(model, tokenizer)
    scores = [
        CL3MRecScorer(model, processor, batch_size=5, use_bf16=False, show_progress=False, share_prefix=share).score(
            context_rows
        )
        for share in (False, True)
    ]
    np.testing.assert_allclose(scores[1], scores[0], atol=1e-5)


def test_grouped_orders_keep_contexts_together(make_cl3mrec, context_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    tokenized = tokenize_dataset(context_rows, _processor(model, tokenizer))
    groups = context_groups(tokenized)
    assert len(set(groups.tolist())) == 6

    def runs(order):  # number of contiguous runs of one group: one per group when grouped
        labels = groups[order]
        return 1 + int((labels[1:] != labels[:-1]).sum())

    epoch = {"now": 0}
    sampler = ContextGroupedSampler(groups, seed=3, epoch=lambda: epoch["now"])
    first = list(sampler)
    assert sorted(first) == list(range(len(groups))) and runs(first) == 6
    orders = {tuple(first)}
    for now in range(1, 6):
        epoch["now"] = now
        orders.add(tuple(sampler))
    assert len(orders) > 1  # groups reshuffled per epoch
    epoch["now"] = 0
    assert list(sampler) == first  # deterministic: a resumed run sees the same order
    batches = length_grouped_batches(tokenized["length"], 4, groups)
    assert sorted(i for batch in batches for i in batch) == list(range(len(groups)))
    assert runs([i for batch in batches for i in batch]) == 6


@pytest.mark.parametrize("stage", ["cie", "lora"])
def test_frozen_decoder_weights_in_bf16_change_nothing_under_autocast(make_cl3mrec, context_rows, stage):
    """Frozen decoder weights held in bf16 give bit-identical losses and gradients under bf16 autocast, and the
    fp32 originals come back afterwards; trainable weights and the tied embeddings are never cast."""
    from trainers.llm_loading import add_lora
    from trainers.training.stages import apply_stage, frozen_decoder_weights_in

    model, tokenizer = make_cl3mrec("llama", "mf")
    model = add_lora(model, dropout=0.0, target_modules=["q_proj", "v_proj"])
    apply_stage(model, stage)
    model.train()
    processor = _processor(model, tokenizer, with_ids=stage == "cie")
    parts = model.get_base_model().shared_prefix_parts
    batch = CL3MRecCollator(processor, parts)(list(tokenize_dataset(context_rows, processor)))
    trained = [param for param in model.parameters() if param.requires_grad]
    originals = {name: (param.data_ptr(), param.dtype) for name, param in model.named_parameters()}

    def run():
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        return loss.detach(), [param.grad.clone() for param in trained]

    expected = run()
    with frozen_decoder_weights_in(model, torch.bfloat16) as count:
        assert count > 0
        dtypes = {name: param.dtype for name, param in model.named_parameters()}
        assert all(dtypes[name] == torch.float32 for name, param in model.named_parameters() if param.requires_grad)
        assert dtypes["base_model.model.language_model.model.embed_tokens.weight"] == torch.float32
        assert all(dtype == torch.float32 for name, dtype in dtypes.items() if "lora_" in name)  # adapter as saved
        actual = run()
    assert torch.equal(actual[0], expected[0])
    for got, want in zip(actual[1], expected[1]):
        assert torch.equal(got, want)
    assert all((param.data_ptr(), param.dtype) == originals[name] for name, param in model.named_parameters())


def test_collator_shares_only_when_it_saves_tokens(make_cl3mrec, context_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = _processor(model, tokenizer)
    features = list(tokenize_dataset(context_rows, processor))
    collator = CL3MRecCollator(processor, model.shared_prefix_parts)
    assert "prefix_input_ids" in collator(features)  # 12 rows, 6 contexts
    distinct = {processor.context_key(feature): feature for feature in features}.values()
    assert "prefix_input_ids" not in collator(list(distinct))  # one row per context: whole prompts
    assert "prefix_input_ids" in CL3MRecCollator(processor, model.shared_prefix_parts, -1.0)(list(distinct))


def test_prompts_that_cannot_be_split_stay_whole(make_cl3mrec):
    """Rows of one context whose prompts differ from the first token (a template starting with the candidate) have
    no shareable prefix: the processor refuses them by name and the collator keeps whole prompts."""
    model, tokenizer = make_cl3mrec("llama", None)
    processor = _processor(model, tokenizer, with_ids=False)
    context = {"user_id": 1, "history_item_ids": [3, 4], "label": 1}
    features = [{**context, "input_ids": [5, 6, 7]}, {**context, "input_ids": [8, 6, 7, 9]}]
    with pytest.raises(ValueError, match="no shareable prefix"):
        processor.pad_shared_prefix(features)
    batch = CL3MRecCollator(processor, model.shared_prefix_parts, min_saving=-1.0)(features)
    assert "prefix_input_ids" not in batch and batch["input_ids"].tolist()[0][-3:] == [5, 6, 7]


def test_grouped_sampler_follows_the_trainer_epoch(context_rows):
    """After a mid-epoch resume DDP's batch-sampler wrappers would hide `set_epoch`: the order follows the epoch
    callable, read when each iterator is made."""
    groups = np.arange(len(context_rows)) // 2
    epoch = {"now": 0}
    sampler = ContextGroupedSampler(groups, seed=1, epoch=lambda: epoch["now"])
    orders = []
    for now in (0, 1, 2, 1):
        epoch["now"] = now
        assert not hasattr(sampler, "set_epoch")  # no second way to set it
        orders.append(list(sampler))
    assert orders[1] == orders[3] and orders[0] != orders[1] != orders[2]


def test_shared_prefix_runs_the_cf_encoder_once(make_cl3mrec, context_rows, monkeypatch):
    """Prefix and suffix placeholders come from one CF pass (one dropout draw, half the work)."""
    model, tokenizer = make_cl3mrec("llama", "mf", score_fusion="residual")
    processor = _processor(model, tokenizer)
    features = list(tokenize_dataset(context_rows, processor))
    calls = []
    encode = model.cf_encoder.encode
    monkeypatch.setattr(model.cf_encoder, "encode", lambda *args: calls.append(len(args[0])) or encode(*args))
    counts = []
    for share in (False, True):
        calls.clear()
        with torch.no_grad():
            model(**CL3MRecCollator(processor, model.shared_prefix_parts if share else None)(features))
        counts.append(list(calls))
    assert counts[1] == counts[0] == [len(context_rows)] * 2  # features + the fused CF logit, over all rows once
