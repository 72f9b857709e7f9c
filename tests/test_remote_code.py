"""Saved models load without this repository (fresh process, `trust_remote_code=True`, offline) and score exactly
as in memory: a CL3M-Rec export through `AutoModel`, `AutoProcessor` and `pipeline("cl3mrec-scoring")`, and a
CF model through `AutoModel`."""

import json

import pytest
import torch

from modeling_cl3mrec import CFRecModel, CL3MRecProcessor
from trainers.llm_loading import save_merged

REMOTE_SCRIPT = """
import json, sys, torch
from transformers import AutoModel, AutoProcessor, pipeline
model_dir, records_file, out = sys.argv[1:4]
model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
recommender = pipeline("cl3mrec-scoring", model=model_dir, trust_remote_code=True, device="cpu")
for loaded in (model, processor, recommender):
    assert type(loaded).__module__.startswith("transformers_modules"), type(loaded).__module__
records = json.load(open(records_file))
batch = dict(processor(records))
with torch.inference_mode():
    logits = model(**batch).logits
candidates = [{"item_id": record["item_id"], "title": record["title"]} for record in records]
results = {
    "scores": [result["score"] for result in recommender(records, batch_size=3)],
    "one": recommender(records[0]),
    "ranked": recommender(records[0], candidates=candidates, top_k=3),
}
torch.save({"batch": batch, "logits": logits, **results}, out)
"""

CF_SCRIPT = """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.inference_mode():
    torch.save(model(**torch.load(sys.argv[2])).logits, sys.argv[3])
"""


@pytest.mark.parametrize("arch, encoder_type", [("llama", "sasrec"), ("qwen2", "din")])
def test_remote_code_round_trip(make_cl3mrec, run_without_repo, tiny_rows, tmp_path, arch, encoder_type):
    model, tokenizer = make_cl3mrec(arch, encoder_type, tokens_per_entity=2, use_history_embeddings=True)
    with torch.no_grad():
        model.projector.linear_2.bias.normal_()  # a non-default value that must survive the round trip
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config, max_history=5)
    model_dir = tmp_path / "model"
    save_merged(model, processor, model_dir)
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_cl3mrec.CL3MRecConfig",
        "AutoModel": "modeling_cl3mrec.CL3MRecModel",
    }
    assert saved["custom_pipelines"]["cl3mrec-scoring"]["impl"] == "pipeline_cl3mrec.CL3MRecScoringPipeline"
    processor_config = json.loads((model_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"] == {"AutoProcessor": "processing_cl3mrec.CL3MRecProcessor"}
    assert processor_config["template"] == model.config.prompt_template and processor_config["max_history"] == 5
    code_files = ("configuration_cl3mrec.py", "modeling_cl3mrec.py", "configuration_cf.py", "collaborative_encoders.py")
    for code_file in code_files + ("processing_cl3mrec.py", "pipeline_cl3mrec.py"):
        assert (model_dir / code_file).is_file(), code_file

    records = tiny_rows.select(range(8)).to_list()
    (tmp_path / "records.json").write_text(json.dumps(records))
    batch = dict(processor(records))
    with torch.inference_mode():
        expected = model(**batch).logits
    run_without_repo(REMOTE_SCRIPT, model_dir, tmp_path / "records.json", tmp_path / "out.pt")
    remote = torch.load(tmp_path / "out.pt")
    assert remote["batch"].keys() == batch.keys()
    for name, tensor in batch.items():
        torch.testing.assert_close(remote["batch"][name], tensor, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(remote["logits"], expected)
    torch.testing.assert_close(torch.tensor(remote["scores"]), expected, atol=1e-5, rtol=1e-4)  # other padding
    assert remote["one"]["item_id"] == records[0]["item_id"]
    assert remote["one"]["score"] == pytest.approx(float(expected[0]), abs=1e-5)
    candidates = processor.candidate_records(records[0], [r["item_id"] for r in records], [r["title"] for r in records])
    with torch.inference_mode():
        candidate_scores = model(**processor(candidates)).logits
    top = torch.argsort(-candidate_scores, stable=True)[:3].tolist()
    assert [result["item_id"] for result in remote["ranked"]] == [records[i]["item_id"] for i in top]
    ranked_scores = [result["score"] for result in remote["ranked"]]
    torch.testing.assert_close(torch.tensor(ranked_scores), candidate_scores[top], atol=1e-5, rtol=1e-4)


def test_cf_model_loads_with_auto_model(make_tiny_cf_config, run_without_repo, tmp_path):
    torch.manual_seed(0)
    model = CFRecModel(make_tiny_cf_config("sasrec")).eval()
    model_dir = tmp_path / "cf"
    model.save_pretrained(model_dir)
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_cf.CFRecConfig", "AutoModel": "modeling_cf.CFRecModel"}
    batch = {
        "user_ids": torch.tensor([1, 2, 3]),
        "item_ids": torch.tensor([4, 5, 6]),
        "history_item_ids": torch.tensor([[0, 1, 2], [0, 0, 3], [7, 8, 9]]),
    }
    torch.save(batch, tmp_path / "batch.pt")
    with torch.inference_mode():
        expected = model(**batch).logits
    run_without_repo(CF_SCRIPT, model_dir, tmp_path / "batch.pt", tmp_path / "out.pt")
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected)
