"""Prefix-cached candidate ranking (`trainers.inference.ranking`) must match pair-by-pair `CL3MRecModel.forward`.

Tiny random Llama / Qwen2 decoders and a locally trained tokenizer; fp32; CPU; offline.
"""

import numpy as np
import pytest
import torch

from modeling_cl3mrec import CFRecConfig, CL3MRecConfig, CL3MRecModel, CL3MRecProcessor
from modeling_cl3mrec.processing_cl3mrec import HISTORY_TOKEN, ITEM_TOKEN, USER_TOKEN
from trainers.inference.ranking import CandidateRanker, common_prefix_length, rank
from trainers.tiny_llm import build_tiny_tokenizer, tiny_llm_config

CF_TEMPLATE = (
    "#Question: A user has given high ratings to the following movies: {history}. The user is {user}. "
    'Would the user enjoy the movie titled "{title}" {item}? Answer with "Yes" or "No". #Answer:'
)
# The prefix ends with a space: tokenised alone it would not merge with the title ("Title: " + "Heat").
TEXT_TEMPLATE = "#Question: The user watched {history}. Title: {title}? Answer with \"Yes\" or \"No\". #Answer:"

USER_ROW = {
    "user_id": 3,
    "item_id": 1,
    "title": "unused",
    "history_item_ids": [4, 9, 2, 7, 11, 5],
    "history_titles": ["Toy Story (1995)", "Heat (1995)", "Casino (1995)", "Sabrina (1995)", "Fargo (1996)", "Jumanji"],
}
CANDIDATE_IDS = [1, 6, 8, 12, 14, 17, 19]
CANDIDATE_TITLES = [
    "GoldenEye (1995)",
    "Sense and Sensibility (1995)",
    "X",
    "The Usual Suspects (1995) a much longer title than the others",
    "Heat (1995)",
    "Alien (1979)",
    "Toy Story 2 (1999)",
]


def build_model(
    arch, with_cf=True, tokens_per_entity=1, use_history_embeddings=False, answer_score="yes", **cf_knowledge
):
    """A tiny `CL3MRecModel` + its processor; the placeholder ids lie beyond the LLM vocabulary. `cf_knowledge`:
    `cf_features` / `score_fusion` config fields."""
    tokenizer = build_tiny_tokenizer([CF_TEMPLATE, TEXT_TEMPLATE] + USER_ROW["history_titles"] + CANDIDATE_TITLES)
    text_config = tiny_llm_config(arch, tokenizer)
    glue = {}
    if with_cf:
        tokenizer.add_tokens([USER_TOKEN, ITEM_TOKEN, HISTORY_TOKEN], special_tokens=True)
        glue = {
            "cf_config": CFRecConfig(encoder_type="mf", num_users=8, num_items=20, hidden_size=8),
            "user_token_id": tokenizer.convert_tokens_to_ids(USER_TOKEN),
            "item_token_id": tokenizer.convert_tokens_to_ids(ITEM_TOKEN),
            "history_token_id": tokenizer.convert_tokens_to_ids(HISTORY_TOKEN),
            **cf_knowledge,
        }
    config = CL3MRecConfig(
        text_config=text_config,
        tokens_per_entity=tokens_per_entity,
        use_history_embeddings=use_history_embeddings,
        prompt_template=CF_TEMPLATE if with_cf else None,
        text_prompt_template=TEXT_TEMPLATE,
        yes_token_id=tokenizer.convert_tokens_to_ids("Yes"),
        no_token_id=tokenizer.convert_tokens_to_ids("No"),
        answer_score=answer_score,
        **glue,
    )
    torch.manual_seed(0)
    model = CL3MRecModel(config).eval()
    if with_cf:  # random projector / CF tables, so placeholders carry signal
        with torch.no_grad():
            for parameter in list(model.projector.parameters()) + list(model.cf_encoder.parameters()):
                parameter.normal_(0.0, 0.5)
    return model, CL3MRecProcessor.from_model_config(tokenizer, config, max_history=4)


def prompt_ids(processor):
    """Token ids of every candidate's full prompt for `USER_ROW`."""
    return processor.encode(processor.candidate_records(USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES))["input_ids"]


def pair_by_pair(model, processor):
    """Reference: each candidate prompt alone through `model.forward` (batch 1, no padding)."""
    ids = prompt_ids(processor)
    scores = []
    with torch.no_grad():
        for item_id, seq in zip(CANDIDATE_IDS, ids):
            inputs = {"input_ids": torch.tensor([seq])}
            if model.config.use_cf:
                history = USER_ROW["history_item_ids"][-processor.max_history :]
                inputs.update(
                    user_ids=torch.tensor([USER_ROW["user_id"]]),
                    item_ids=torch.tensor([item_id]),
                    history_item_ids=torch.tensor([history]),
                )
            scores.append(float(model(**inputs).logits[0]))
    return np.array(scores), ids


@pytest.mark.parametrize(
    "arch, options",
    [
        ("llama", {"tokens_per_entity": 2, "use_history_embeddings": True, "answer_score": "yes_minus_no"}),
        ("qwen2", {"tokens_per_entity": 1}),
        ("llama", {"cf_features": "embedding_bias", "score_fusion": "residual"}),
        ("llama", {"with_cf": False}),
        ("qwen2", {"with_cf": False, "answer_score": "yes_minus_no"}),
    ],
)
def test_prefix_cached_scores_match_forward(arch, options):
    model, processor = build_model(arch, **options)
    ranker = CandidateRanker(model, processor, batch_size=3)
    expected, ids = pair_by_pair(model, processor)
    prefix = common_prefix_length(ids, [model.config.item_token_id])
    assert prefix > 20, "the shared prefix should be cached, not recomputed"
    assert len({len(seq) for seq in ids}) > 2, "candidates must differ in suffix length (padding path)"
    scores = ranker.score(USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES)
    assert scores.shape == (len(CANDIDATE_IDS),)
    assert np.ptp(expected) > 1e-3, "scores should differ between candidates"
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)


def test_text_prefix_boundary_keeps_tokens():
    """The cached prefix is a token prefix of every full prompt even where text tokens merge at the boundary."""
    _, processor = build_model("llama", with_cf=False)
    ids = prompt_ids(processor)
    prefix = common_prefix_length(ids)
    assert all(seq[:prefix] == ids[0][:prefix] for seq in ids)
    assert processor.tokenizer.decode(ids[0][:prefix]).startswith("#Question: The user watched")


def test_rank_with_lora_matches_forward():
    from trainers.llm_loading import add_lora

    model, processor = build_model("llama", tokens_per_entity=1)
    peft_model = add_lora(model, r=4, dropout=0.0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    peft_model.eval()
    top_ids, top_scores, all_scores = rank(peft_model, processor, USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES, k=3)
    expected, _ = pair_by_pair(peft_model, processor)
    np.testing.assert_allclose(all_scores, expected, rtol=1e-4, atol=1e-4)
    order = np.argsort(-expected, kind="stable")[:3]
    assert top_ids.tolist() == [CANDIDATE_IDS[i] for i in order]
    np.testing.assert_allclose(top_scores, expected[order], rtol=1e-4, atol=1e-4)


def test_rank_k_and_bfloat16_autocast():
    model, processor = build_model("qwen2")
    ranker = CandidateRanker(model, processor, batch_size=4, autocast_dtype=torch.bfloat16)
    top_ids, top_scores, all_scores = ranker.rank(USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES, k=100)
    assert len(top_ids) == len(CANDIDATE_IDS) and set(top_ids.tolist()) == set(CANDIDATE_IDS)
    assert np.all(np.diff(top_scores) <= 0)
    expected, _ = pair_by_pair(model, processor)
    assert np.corrcoef(all_scores, expected)[0, 1] > 0.99


def test_rank_rejects_bad_inputs():
    model, processor = build_model("llama")
    ranker = CandidateRanker(model, processor)
    with pytest.raises(ValueError, match="candidate_titles"):
        ranker.score(USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES[:-1])
    with pytest.raises(ValueError, match="no candidates"):
        ranker.score(USER_ROW, [], [])
    with pytest.raises(ValueError, match="k must be"):
        ranker.rank(USER_ROW, CANDIDATE_IDS, CANDIDATE_TITLES, k=0)
    with pytest.raises(ValueError, match="item_ids contains id 99"):
        ranker.score(USER_ROW, [99], ["Heat"])


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5, 6, 7]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # one token is left for the suffix
    assert common_prefix_length([[1, 2, 9, 3, 4], [1, 2, 9, 3, 5]], stop_token_ids=[9]) == 2
    assert common_prefix_length([[7, 1], [8, 1]]) == 0


@pytest.mark.parametrize("arch, encoder_type", [("llama", "mf"), ("qwen2", "sasrec"), ("llama", None)])
def test_ranker_matches_scorer_on_bundled_templates(make_cl3mrec, tiny_rows, arch, encoder_type):
    """Against the scorer itself (left-padded, length-grouped batches) with the CoLLM / TALLRec ML-1M templates."""
    from datasets import Dataset

    from trainers.inference.llm_scoring import CL3MRecScorer

    model, tokenizer = make_cl3mrec(arch, encoder_type=encoder_type)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    user_row = tiny_rows[7]
    items = list(range(1, 13))
    titles = [f"Movie {i} ({1980 + i})" + " sequel" * (i % 3) for i in items]
    rows = Dataset.from_list([{**user_row, "item_id": i, "title": t} for i, t in zip(items, titles)])
    expected = CL3MRecScorer(model, processor, batch_size=5, use_bf16=False, show_progress=False).score(rows)
    _, _, scores = CandidateRanker(model, processor, batch_size=5).rank(user_row, items, titles)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-4)
