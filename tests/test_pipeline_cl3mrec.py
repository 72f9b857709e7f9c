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


def test_pipeline_names_the_bad_record_field_or_argument(make_cl3mrec, tiny_rows):
    """Ids of another data set or 0-based ids (outside 1..N-1 of the model's tables, history included), ids that
    are not integers and bad top_k / batch_size values are refused naming the record or candidate and the field."""
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    recommender = pipeline("cl3mrec-scoring", model=model, processor=processor, device="cpu")
    row = tiny_rows[1]  # user 2, five history items; the tables hold users 1..5 and items 1..12
    good = [{"item_id": 3, "title": "Movie 3 (1983)"}]
    cases = [
        (([row, {**row, "item_id": 13}],), {}, r"record 1: item_id 13 is outside the model's ids 1\.\.12"),
        (({**row, "item_id": 0},), {}, r"record 0: item_id 0 is outside the model's ids 1\.\.12 \(0 is padding\)"),
        (({**row, "user_id": 6},), {}, r"record 0: user_id 6 is outside the model's ids 1\.\.5"),
        (({**row, "history_item_ids": [1, 2, 3, 4, 99]},), {}, r"record 0: history_item_ids\[4\] 99 is outside"),
        (({**row, "user_id": "2"},), {}, r"record 0: user_id must be an integer id, got '2'"),
        ((row,), {"candidates": [*good, {"item_id": 40, "title": "X"}]}, r"candidate 1: item_id 40 is outside"),
        ((row,), {"candidates": [*good, {"item_id": 4}]}, r"candidate 1 must be a dict with item_id and title"),
        (({**row, "user_id": "2"},), {"candidates": good}, r"the user record: user_id must be an integer id"),
        (({**row, "history_titles": "Fargo"},), {"candidates": good}, r"the user record: history_titles must be"),
        (({**row, "user_id": 6},), {"candidates": good}, r"the user record: user_id 6 is outside"),
        ((row,), {"candidates": good, "top_k": 1.5}, r"top_k must be an integer >= 1, got 1\.5"),
        ((row,), {"candidates": good, "top_k": True}, r"top_k must be an integer >= 1, got True"),
        ((row,), {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
        (("Heat (1995)",), {}, r"inputs must be a record \(a dict\) or a list of records, got str"),
        ((None,), {}, r"inputs must be a record \(a dict\) or a list of records, got NoneType"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            recommender(*args, **kwargs)
    assert len(recommender(row, candidates=good, top_k=5)) == 1  # top_k beyond the candidates keeps them all
