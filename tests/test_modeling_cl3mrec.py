"""CL3MRecConfig / CL3MRecModel on tiny random Llama and Qwen2 models."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from modeling_cl3mrec import CL3MRecConfig, CL3MRecModel, CL3MRecProcessor
from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset


def _batch(model, tokenizer, rows, with_ids=True, size=4):
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=with_ids, max_history=5)
    return CL3MRecCollator(processor)(list(tokenize_dataset(rows.select(range(size)), processor)))


def test_config_round_trip(make_tiny_cf_config, tmp_path, tiny_llama_dir):
    from transformers import AutoConfig

    config = CL3MRecConfig(
        text_config=AutoConfig.from_pretrained(tiny_llama_dir).to_dict(),
        cf_config=make_tiny_cf_config("sasrec").to_dict(),
        user_token_id=1000,
        item_token_id=1001,
        yes_token_id=5,
        no_token_id=6,
        tokens_per_entity=2,
        answer_score="yes_minus_no",
        prompt_template="{history} {user} {title} {item}",
    )
    assert config.text_config.model_type == "llama" and config.cf_config.encoder_type == "sasrec"
    assert CL3MRecConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    reloaded = CL3MRecConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.cf_config.hidden_size == 8 and reloaded.tokens_per_entity == 2


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"tokens_per_entity": 0}, "tokens_per_entity"),
        ({"answer_score": "maybe"}, "answer_score"),
        ({"no_token_id": 5}, "yes_token_id and no_token_id"),
        ({"item_token_id": None}, "item_token_id"),
        ({"use_history_embeddings": True}, "history_token_id"),
        ({"cf_features": "bias"}, "cf_features"),
        ({"score_fusion": "gated"}, "score_fusion"),
        ({"alignment_dim": -1}, "alignment_dim"),
        ({"cf_config": None, "score_fusion": "residual"}, "need a cf_config"),
    ],
)
def test_config_rejects_bad_glue(make_tiny_cf_config, overrides, field):
    fields = {"cf_config": make_tiny_cf_config(), "user_token_id": 100, "item_token_id": 101}
    fields.update(yes_token_id=5, no_token_id=6)
    fields.update(overrides)
    with pytest.raises(ValueError, match=field):
        CL3MRecConfig(**fields)


@pytest.mark.parametrize("encoder_type", ["popularity", "mf", "lightgcn", "sasrec", "din"])
def test_forward_shapes_per_encoder(make_cl3mrec, tiny_rows, encoder_type):
    model, tokenizer = make_cl3mrec("llama", encoder_type, tokens_per_entity=2, use_history_embeddings=True)
    batch = _batch(model, tokenizer, tiny_rows)
    history_tokens = (batch["input_ids"] == model.config.history_token_id).sum()
    assert history_tokens == 2 * (batch["history_item_ids"] > 0).sum() == 2 * 15
    out = model(**batch)
    hidden, d = model.config.text_config.hidden_size, model.config.cf_config.hidden_size
    assert out.logits.shape == out.yes_logits.shape == (4,)
    assert out.user_embeds.shape == out.item_embeds.shape == out.answer_hidden_states.shape == (4, hidden)
    assert out.cf_user_embeds.shape == out.cf_item_embeds.shape == (4, d)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.projector.linear_2.bias.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_answer_logits_match_causal_lm(make_cl3mrec, tiny_llm_dirs, tiny_rows, arch):
    model, tokenizer = make_cl3mrec(arch, None, answer_score="yes_minus_no")
    batch = _batch(model, tokenizer, tiny_rows, with_ids=False)
    assert "user_ids" not in batch and batch["attention_mask"][:, 0].min() == 0  # left padding present
    out = model(**batch)
    reference = AutoModelForCausalLM.from_pretrained(tiny_llm_dirs[arch]).eval()
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    full = reference(**inputs, position_ids=position_ids).logits[:, -1]
    yes, no = model.config.yes_token_id, model.config.no_token_id
    torch.testing.assert_close(out.yes_logits, full[:, yes], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.logits, full[:, yes] - full[:, no], atol=1e-5, rtol=1e-4)
    # Left padding must not change a row's score.
    single = model(**_batch(model, tokenizer, tiny_rows.select([3]), with_ids=False, size=1))
    torch.testing.assert_close(single.logits, out.logits[3:4], atol=1e-5, rtol=1e-4)


def test_id_prompts_use_cf_embeddings(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("qwen2", "mf")
    batch = _batch(model, tokenizer, tiny_rows)
    assert (batch["input_ids"] >= model.config.text_config.vocab_size).any()  # placeholders beyond the vocab
    base = model(**batch).logits
    with torch.no_grad():
        model.cf_encoder.user_embedding.weight.mul_(-3.0)
    assert not torch.allclose(model(**batch).logits, base)


def test_placeholder_count_mismatch_raises(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf", use_history_embeddings=True)
    batch = _batch(model, tokenizer, tiny_rows)
    batch["history_item_ids"] = torch.zeros_like(batch["history_item_ids"])
    batch["history_item_ids"][:, -1] = 1  # one history item per row, prompts hold more
    with pytest.raises(ValueError, match="history placeholder tokens do not match.*tokens \\d+, embeddings 1"):
        model(**batch)
    batch = _batch(model, tokenizer, tiny_rows)
    with pytest.raises(ValueError, match="user_ids / item_ids were not given"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_cold_and_unknown_ids(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    batch = _batch(model, tokenizer, tiny_rows, size=2)
    model.cf_encoder.user_is_warm[batch["user_ids"][0]] = False  # user 1 unseen in train -> row 0
    cold = model(**batch).logits
    as_padding = model(**{**batch, "user_ids": torch.tensor([0, int(batch["user_ids"][1])])}).logits
    torch.testing.assert_close(cold, as_padding)
    with pytest.raises(ValueError, match="user_ids contains id 99"):
        model(**{**batch, "user_ids": torch.tensor([99, 1])})


def test_projector_and_cf_survive_save_load(make_cl3mrec, tiny_rows, tmp_path):
    model, tokenizer = make_cl3mrec("llama", "sasrec", use_history_embeddings=True)
    with torch.no_grad():
        model.projector.linear_2.bias.fill_(0.25)
    model.save_pretrained(tmp_path)
    loaded = CL3MRecModel.from_pretrained(tmp_path).eval()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)
    batch = _batch(model, tokenizer, tiny_rows)
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)


def test_bias_features_need_a_biased_encoder(make_tiny_cf_config):
    with pytest.raises(ValueError, match="cf_features='embedding_bias' needs a CF encoder with biases"):
        CL3MRecConfig(
            cf_config=make_tiny_cf_config(use_bias=False), user_token_id=100, item_token_id=101, yes_token_id=5,
            no_token_id=6, cf_features="embedding_bias",
        )


@pytest.mark.parametrize("encoder_type", ["mf", "lightgcn", "sasrec", "din"])
def test_bias_features_carry_the_score_bias_terms(make_cl3mrec, tiny_rows, encoder_type):
    """`embedding_bias`: the projector reads [embedding, bias term]; the bias terms and the interaction add up to
    the CF model's own score."""
    model, tokenizer = make_cl3mrec("llama", encoder_type, cf_features="embedding_bias")
    with torch.no_grad():
        model.cf_encoder.global_bias.fill_(0.3)
        model.cf_encoder.user_bias.weight.normal_()
        model.cf_encoder.item_bias.weight.normal_()
    batch = _batch(model, tokenizer, tiny_rows)
    ids = (batch["user_ids"], batch["item_ids"], batch["history_item_ids"])
    users, items = model.cf_features(*ids)
    assert model.projector.linear_1.in_features == model.config.cf_config.hidden_size + 1
    torch.testing.assert_close(users[:, -1], model.cf_encoder.user_bias_term(batch["user_ids"]))
    torch.testing.assert_close(items[:, -1], model.cf_encoder.item_bias_term(batch["item_ids"]))
    interaction = model.cf_encoder._interaction(*ids)
    torch.testing.assert_close(interaction + users[:, -1] + items[:, -1], model.cf_encoder.score(*ids))
    base = model(**batch).logits
    with torch.no_grad():
        model.cf_encoder.item_bias.weight.mul_(-5.0)
    assert not torch.allclose(model(**batch).logits, base)  # the bias now reaches the LLM


def test_residual_fusion_adds_the_weighted_cf_logit(make_cl3mrec, tiny_rows):
    plain, tokenizer = make_cl3mrec("llama", "mf", seed=3)
    fused, _ = make_cl3mrec("llama", "mf", seed=3, score_fusion="residual")
    assert fused.score_fusion.weight.item() == 1.0  # starts as "LLM + CF"
    with torch.no_grad():
        fused.score_fusion.weight.fill_(0.5)
    batch = _batch(plain, tokenizer, tiny_rows)
    out = fused(**batch)
    cf_logits = fused.cf_encoder.score(batch["user_ids"], batch["item_ids"], batch["history_item_ids"])
    torch.testing.assert_close(out.cf_logits, cf_logits)
    torch.testing.assert_close(out.logits, plain(**batch).logits + 0.5 * cf_logits)
    torch.testing.assert_close(out.yes_logits, plain(**batch).yes_logits)  # the LLM's own answer is unchanged
    hidden = out.answer_hidden_states
    with pytest.raises(ValueError, match="needs the CF logits"):
        fused.answer_logits(hidden)


def test_weighted_fusion_also_weighs_the_answer(make_cl3mrec, tiny_rows):
    plain, tokenizer = make_cl3mrec("llama", "mf", seed=3)
    fused, _ = make_cl3mrec("llama", "mf", seed=3, score_fusion="weighted")
    assert fused.score_fusion.answer_weight.item() == fused.score_fusion.weight.item() == 1.0
    with torch.no_grad():
        fused.score_fusion.weight.fill_(0.5)
        fused.score_fusion.answer_weight.fill_(0.25)
    batch = _batch(plain, tokenizer, tiny_rows)
    cf_logits = fused.cf_encoder.score(batch["user_ids"], batch["item_ids"], batch["history_item_ids"])
    out = fused(**batch)
    torch.testing.assert_close(out.logits, 0.25 * plain(**batch).logits + 0.5 * cf_logits)
    torch.testing.assert_close(out.yes_logits, plain(**batch).yes_logits)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_frozen_prefix_is_the_same_function(make_cl3mrec, tiny_rows, arch):
    """Stage cie's shortcut (prompt columns before the first placeholder run without a graph into a KV cache): same
    scores and the same projector gradients as the full pass, on left-padded prompts of different lengths."""
    model, tokenizer = make_cl3mrec(arch, "mf", cf_features="embedding_bias", score_fusion="residual")
    model.train()
    for param in model.language_model.parameters():
        param.requires_grad_(False)
    batch = _batch(model, tokenizer, tiny_rows)
    assert len(set(batch["attention_mask"].sum(dim=1).tolist())) > 1  # rows of different lengths
    assert model._gradient_free_columns(batch["input_ids"]) > 0
    results = []
    for frozen_prefix in (False, True):
        model.zero_grad()
        out = model(**batch, frozen_prefix=frozen_prefix)
        out.loss.backward()
        results.append((out.logits.detach(), [param.grad.clone() for param in model.projector.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-5)
    for full, shortcut in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(shortcut, full, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        assert model._gradient_free_columns(batch["input_ids"]) == 0  # nothing to save without gradients
