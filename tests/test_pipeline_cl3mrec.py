"""The `cl3mrec-scoring` pipeline (in process, registered task): scores equal the batch scorer, ranking equals the
prefix-cached ranker, bad calls are refused; the same on CUDA when a GPU is present."""

import numpy as np
import pytest
import torch
from transformers import pipeline

from modeling_cl3mrec import CL3MRecProcessor
from trainers.inference.llm_scoring import CL3MRecScorer
from trainers.inference.ranking import CandidateRanker

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("encoder_type", ["mf", None])
def test_pipeline_scores_and_ranks(make_cl3mrec, tiny_rows, encoder_type, device):
    model, tokenizer = make_cl3mrec("qwen2", encoder_type, use_history_embeddings=encoder_type is not None)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    rows = tiny_rows.select(range(10))
    expected = CL3MRecScorer(model, processor, batch_size=4, use_bf16=False, show_progress=False).score(rows)
    recommender = pipeline("cl3mrec-scoring", model=model, processor=processor, device=device)
    results = recommender(rows.to_list(), batch_size=3)
    assert [r["item_id"] for r in results] == rows["item_id"] and [r["title"] for r in results] == rows["title"]
    np.testing.assert_allclose([r["score"] for r in results], expected, atol=1e-4)
    one = recommender(rows[2])
    assert one["user_id"] == rows[2]["user_id"] and one["score"] == pytest.approx(expected[2], abs=1e-4)

    items = list(range(1, 9))
    titles = [f"Movie {i} ({1980 + i})" for i in items]
    candidates = [{"item_id": i, "title": t} for i, t in zip(items, titles)]
    ranked = recommender(rows[7], candidates=candidates, top_k=3)
    top_ids, top_scores, _ = CandidateRanker(model.to("cpu"), processor).rank(rows[7], items, titles, k=3)
    assert [r["item_id"] for r in ranked] == top_ids.tolist()
    np.testing.assert_allclose([r["score"] for r in ranked], top_scores, atol=1e-4)


def test_pipeline_refuses_bad_calls(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    recommender = pipeline("cl3mrec-scoring", model=model, processor=processor, device="cpu")
    with pytest.raises(ValueError, match="top_k needs candidates"):
        recommender(tiny_rows[0], top_k=2)
    with pytest.raises(ValueError, match="one user record"):
        recommender([tiny_rows[0]], candidates=[{"item_id": 1, "title": "X"}])
    with pytest.raises(ValueError, match="nothing to score"):
        recommender([])
    with pytest.raises(ValueError, match="missing field"):
        recommender({"title": "X", "history_titles": []})
