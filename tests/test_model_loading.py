"""Saved models load only when their weights fill the model exactly (trainers.model_dirs.load_complete): a
deleted or re-shaped tensor is named, never initialised at random; intact CF and LLM folders load unchanged. A CF
model of other data is refused before a stage trains on it."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_cl3mrec import CFRecModel, CL3MRecModel
from trainers.model_dirs import load_complete


def drop_tensor(folder, startswith: str) -> str:
    """Delete the first tensor whose name starts with ``startswith`` from ``folder/model.safetensors``."""
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    name = next(key for key in sorted(tensors) if key.startswith(startswith))
    del tensors[name]
    save_file(tensors, str(path), metadata={"format": "pt"})
    return name


def test_cf_folder_with_a_missing_or_reshaped_tensor_is_refused(synthetic_mf_dir, tmp_path):
    intact = load_complete(CFRecModel, synthetic_mf_dir, "--model").encoder.item_embedding.weight
    assert torch.equal(intact, CFRecModel.from_pretrained(synthetic_mf_dir).encoder.item_embedding.weight)

    missing = tmp_path / "missing"
    shutil.copytree(synthetic_mf_dir, missing)
    name = drop_tensor(missing, "encoder.item_embedding")
    with pytest.raises(ValueError, match=rf"--model={missing}: .*tensors missing: {name}"):
        load_complete(CFRecModel, missing, "--model")

    reshaped = tmp_path / "reshaped"
    shutil.copytree(synthetic_mf_dir, reshaped)
    config = json.loads((reshaped / "config.json").read_text())
    config["hidden_size"] = 2 * config["hidden_size"]
    (reshaped / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"of another shape \(saved vs config.json\): encoder\.item_embedding\.weight"):
        load_complete(CFRecModel, reshaped, "cf_model_dir")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_llm_folder_with_a_missing_tensor_is_refused(make_cl3mrec, tmp_path, arch):
    model, _ = make_cl3mrec(arch, score_fusion="residual")
    model.save_pretrained(tmp_path / "intact")
    reloaded = load_complete(CL3MRecModel, tmp_path / "intact", "--model")
    assert torch.equal(reloaded.score_fusion.weight, model.score_fusion.weight)

    shutil.copytree(tmp_path / "intact", tmp_path / "broken")
    name = drop_tensor(tmp_path / "broken", "score_fusion")
    with pytest.raises(ValueError, match=rf"tensors missing: {name}"):
        load_complete(CL3MRecModel, tmp_path / "broken", "--model")


def test_a_cf_model_of_other_data_is_refused_before_training(synthetic_data_dir, synthetic_mf_dir):
    """Stage `cie` reads ids through the CF model's tables: one trained on other data must not be accepted."""
    from data_scripts.io import read_stats
    from trainers.training.stage_model import check_cf_id_space

    stats = read_stats(synthetic_data_dir)
    config = json.loads((synthetic_mf_dir / "config.json").read_text())
    check_cf_id_space(config, synthetic_mf_dir, stats)  # the model of this data
    other = {**config, "num_items": config["num_items"] + 7}
    with pytest.raises(ValueError, match=r"cf_model_dir=other: num_items = \d+, but the data has \d+ \(stats.json\)"):
        check_cf_id_space(other, "other", stats)
