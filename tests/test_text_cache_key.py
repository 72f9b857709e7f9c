"""The text-representation cache is keyed by the LLM's weights, not its path: an LLM replaced at the same path
gets its own entry instead of the old model's table."""

import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainers.model_dirs import weights_fingerprint
from trainers.training.text_representations import item_text_table

TITLES = [None, "Movie 1 (1981)", "Movie 2 (1982)", None]


def table(llm_dir, cache_dir):
    model = AutoModelForCausalLM.from_pretrained(llm_dir)
    tokenizer = AutoTokenizer.from_pretrained(llm_dir)
    return item_text_table(model, tokenizer, TITLES, cache_dir, str(llm_dir))[0]


def test_replacing_the_llm_at_the_same_path_misses_the_old_cache(tiny_llama_dir, tmp_path):
    llm_dir, cache_dir = tmp_path / "llm", tmp_path / "cache"
    shutil.copytree(tiny_llama_dir, llm_dir)
    first = table(llm_dir, cache_dir)
    assert torch.equal(table(llm_dir, cache_dir), first) and len(list(cache_dir.iterdir())) == 1  # a hit

    fingerprint = weights_fingerprint(llm_dir)
    replaced = AutoModelForCausalLM.from_pretrained(llm_dir)
    with torch.no_grad():
        for parameter in replaced.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    replaced.save_pretrained(llm_dir)  # same path, same config, new weights
    assert weights_fingerprint(llm_dir) != fingerprint

    second = table(llm_dir, cache_dir)
    assert len(list(cache_dir.iterdir())) == 2 and not torch.allclose(second[1:3], first[1:3])


def test_a_damaged_cache_file_is_computed_again(tiny_llama_dir, tmp_path):
    cache_dir = tmp_path / "cache"
    first = table(tiny_llama_dir, cache_dir)
    (cached,) = cache_dir.iterdir()
    cached.write_bytes(cached.read_bytes()[:100])  # truncated outside cl3mrec
    assert torch.equal(table(tiny_llama_dir, cache_dir), first)
    assert torch.equal(table(tiny_llama_dir, cache_dir), first)  # and stored whole again
