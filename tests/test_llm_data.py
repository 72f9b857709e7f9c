"""Prompt tokenisation, the left-padding collator and the batch scorer."""

import numpy as np
import pytest
import torch

from modeling_cl3mrec import CL3MRecProcessor
from trainers.inference.llm_scoring import CL3MRecScorer
from trainers.training.prompt_dataset import CL3MRecCollator, length_grouped_batches, tokenize_dataset


def test_tokenize_dataset_columns_and_history(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf", use_history_embeddings=True)
    tokenized = tokenize_dataset(tiny_rows, CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=3))
    columns = {"input_ids", "user_id", "item_id", "history_item_ids", "label", "warm", "length"}
    assert set(tokenized.column_names) == columns
    for row, source in zip(tokenized, tiny_rows):
        assert row["history_item_ids"] == source["history_item_ids"][-3:]
        assert row["length"] == len(row["input_ids"])
        assert row["input_ids"].count(model.config.history_token_id) == len(row["history_item_ids"])
        assert row["input_ids"].count(model.config.user_token_id) == 1


def test_short_history_renders_every_item(make_cl3mrec, tiny_rows):
    """Histories shorter than max_history keep all their items (one placeholder each)."""
    model, tokenizer = make_cl3mrec("llama", "mf", use_history_embeddings=True)
    rows = tiny_rows.filter(lambda row: 0 < len(row["history_item_ids"]) < 10)
    tokenized = tokenize_dataset(rows, CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=10))
    counts = [ids.count(model.config.history_token_id) for ids in tokenized["input_ids"]]
    assert counts == [len(ids) for ids in rows["history_item_ids"]]


def test_history_ids_and_titles_of_other_lengths_are_refused(make_cl3mrec, tiny_rows):
    """The prompt shows the titles and the history tokens carry the ids: a row whose lists differ would pair
    each title with another item's CF embedding."""
    model, tokenizer = make_cl3mrec("llama", "mf", use_history_embeddings=True)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=3)
    records = tiny_rows.filter(lambda row: len(row["history_item_ids"]) > 1).select(range(2)).to_list()
    records[1]["history_titles"] = records[1]["history_titles"][1:]
    with pytest.raises(ValueError, match=r"record 1: history_item_ids has \d+ entries but history_titles has \d+"):
        processor.encode(records)


def test_records_the_prompt_would_misread_are_refused(make_cl3mrec, tiny_rows):
    """A title of None rendered as "None", a history string read letter by letter, an id "3" or 2.9 cast to
    another id: each is refused naming the record and the field, whichever record it is in."""
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=3)
    text_processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=False, max_history=3)
    cases = [
        ({"title": None}, TypeError, r"record 1: title must be a string, got None"),
        ({"history_titles": ["Movie 1 (1981)", None, "a", "b", "c"]}, TypeError, r"record 1: history_titles\[1\] must"),
        ({"history_titles": "Movie 1 (1981)"}, TypeError, r"record 1: history_titles must be a list, got str"),
        ({"history_item_ids": None}, TypeError, r"record 1: history_item_ids must be a list, got NoneType"),
        ({"user_id": "3"}, TypeError, r"record 1: user_id must be an integer id, got '3'"),
        ({"item_id": 2.9}, TypeError, r"record 1: item_id must be an integer id, got 2.9"),
        ({"item_id": True}, TypeError, r"record 1: item_id must be an integer id, got True"),
        ({"history_item_ids": [1, 2, "3", 4, 5]}, TypeError, r"record 1: history_item_ids\[2\] must be an integer"),
    ]
    for change, error, message in cases:
        records = tiny_rows.select(range(2)).to_list()
        records[1].update(change)
        with pytest.raises(error, match=message):
            processor.encode(records)
    records = tiny_rows.select(range(2)).to_list()
    del records[1]["user_id"]
    with pytest.raises(ValueError, match=r"record 1 is missing field\(s\) \['user_id'\]"):
        processor.encode(records)
    assert len(text_processor.encode(records)["input_ids"]) == 2  # a text prompt reads no ids
    with pytest.raises(TypeError, match="record 0: history_titles must be a list"):
        text_processor.encode([{"history_titles": "Heat", "title": "Alien"}])
    with pytest.raises(TypeError, match="record 0: expected a dict"):
        text_processor.encode(["Heat"])
    with pytest.raises(TypeError, match=r"candidate 1: item_id must be an integer id, got '7'"):
        processor.candidate_records(records[0], [6, "7"], ["Heat", "Alien"])


def test_collator_left_pads(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor(tokenizer, template=model.config.prompt_template, max_history=2)
    tokenized = tokenize_dataset(tiny_rows.select(range(4)), processor)
    batch = CL3MRecCollator(processor)(list(tokenized))
    lengths = tokenized["length"]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert batch["labels"].dtype == torch.float32
    assert batch["history_item_ids"].shape == (4, 2)
    assert batch["history_item_ids"][0].tolist() == [0, 0]  # empty history: all padding
    assert batch["history_item_ids"][1].tolist() == tiny_rows[1]["history_item_ids"][-2:]
    text_processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, with_ids=False, max_history=5)
    text_batch = CL3MRecCollator(text_processor)(list(tokenized))
    assert set(text_batch) == {"input_ids", "attention_mask", "labels"}


def test_length_grouped_batches():
    batches = length_grouped_batches([3, 9, 1, 7, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches([1], 0)


@pytest.mark.parametrize("encoder_type", [None, "mf"])
def test_scorer_keeps_row_order(make_cl3mrec, tiny_rows, encoder_type):
    model, tokenizer = make_cl3mrec("qwen2", encoder_type)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    scorer = CL3MRecScorer(model, processor, batch_size=5, use_bf16=False, show_progress=False)
    scores = scorer.score(tiny_rows)
    assert scores.shape == (len(tiny_rows),) and scorer.last_rows_per_second > 0
    tokenized = tokenize_dataset(tiny_rows, processor)
    collator = CL3MRecCollator(processor)
    with torch.no_grad():
        one_by_one = [float(model(**collator([row])).logits) for row in tokenized]
    np.testing.assert_allclose(scores, one_by_one, atol=1e-5)
    bf16 = CL3MRecScorer(model, processor, batch_size=5, use_bf16=True, show_progress=False).score(tiny_rows)
    np.testing.assert_allclose(bf16, scores, atol=0.05)


def test_compiled_scorer_gives_the_eager_scores_and_puts_the_layers_back(make_cl3mrec, tiny_rows):
    model, tokenizer = make_cl3mrec("llama", "mf")
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    eager = CL3MRecScorer(model, processor, batch_size=5, use_bf16=False, show_progress=False).score(tiny_rows)
    compiled = CL3MRecScorer(model, processor, batch_size=5, use_bf16=False, show_progress=False, compile=True)
    assert not compiled.share_prefix
    np.testing.assert_allclose(compiled.score(tiny_rows), eager, atol=1e-4)
    assert all(layer._compiled_call_impl is None for layer in model.get_decoder().layers)  # eager again
    with pytest.raises(ValueError, match="compile scores whole prompts"):
        CL3MRecScorer(model, processor, share_prefix=True, compile=True)


def test_compile_without_a_cpp_compiler_is_refused_in_one_line(make_cl3mrec, monkeypatch):
    model, tokenizer = make_cl3mrec("llama", None)
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ValueError, match="found no C\\+\\+ compiler"):
        CL3MRecScorer(model, processor, compile=True)


def test_scorer_loads_exports_without_a_saved_processor(make_cl3mrec, tiny_rows, tmp_path):
    """Models exported before processors were saved (weights + tokenizer only) get one from their config."""
    model, tokenizer = make_cl3mrec("llama", "mf")
    model.config.max_history = 5  # such configs still carried the history length
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert not (tmp_path / "processor_config.json").exists()
    rows = tiny_rows.select(range(6))
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    expected = CL3MRecScorer(model, processor, use_bf16=False, show_progress=False).score(rows)
    loaded = CL3MRecScorer.from_pretrained(tmp_path, device="cpu", use_bf16=False, show_progress=False)
    np.testing.assert_allclose(loaded.score(rows), expected, atol=1e-5)
