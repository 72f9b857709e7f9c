"""A tiny random LLM (Llama or Qwen2) with a tokenizer trained locally: for tests and smoke runs, never downloaded.

The tokenizer is a byte-level BPE (as SmolLM2 / GPT-2) trained with the `tokenizers` library on the given
texts plus answer lines, so "Yes", "No", " Yes" and " No" are single tokens and any text encodes without
`<unk>`.
"""

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config

from .atomic_io import staging_dir

logger = logging.getLogger(__name__)

ARCHS = ("llama", "qwen2")
SPECIAL_TOKENS = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>"}
ANSWER_WORDS = ("Yes", "No")
DEFAULT_TEXTS = (
    "#Question: A user has given high ratings to the following movies: Toy Story (1995), Heat (1995).",
    "Additionally, we have information about the user's preferences encoded in the feature.",
    "Using all available information, make a prediction about whether the user would enjoy the movie",
    'titled "Jumanji (1995)" with the feature. Answer with "Yes" or "No". #Answer:',
    "The user watched Casino (1995), Sabrina (1995), GoldenEye (1995) and Sense and Sensibility (1995).",
)


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` (+ answer words); special tokens as in `SPECIAL_TOKENS`."""
    texts = list(texts)
    # Frequent enough that BPE merges the answer words into single tokens whatever the corpus (ML-1M's titles too).
    answers = [" ".join(ANSWER_WORDS * 4) + f' "{ANSWER_WORDS[0]}" or "{ANSWER_WORDS[1]}"'] * max(200, 2 * len(texts))
    corpus = texts + answers
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    for word in ANSWER_WORDS:
        for text in (word, " " + word):
            if len(tokenizer(text, add_special_tokens=False)["input_ids"]) != 1:
                raise ValueError(f"tiny tokenizer: {text!r} is not a single token; raise vocab_size ({vocab_size})")
    return tokenizer


def tiny_llm_config(arch: str, tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64):
    """Config of a tiny decoder: hidden 64, 2 layers, 4 heads (2 KV heads), tied embeddings."""
    if arch not in ARCHS:
        raise ValueError(f"tiny LLM arch must be one of {ARCHS}, got {arch!r}")
    config_class = LlamaConfig if arch == "llama" else Qwen2Config
    return config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_llm(out_dir, arch: str = "llama", texts: Iterable[str] | None = None, seed: int = 0) -> Path:
    """Write a tiny random `AutoModelForCausalLM` + tokenizer to `out_dir` (atomically) and return the path."""
    tokenizer = build_tiny_tokenizer(DEFAULT_TEXTS if texts is None else texts)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_llm_config(arch, tokenizer))
    with staging_dir(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info("tiny %s LLM (vocab %d) written to %s", arch, len(tokenizer), out_dir)
    return Path(out_dir)


def texts_from_dataset(dataset_dir, limit: int = 20000) -> list[str]:
    """Titles and history titles of a saved `DatasetDict` (train split first), as tokenizer training text."""
    from data_scripts.io import load_dataset_dict

    dataset = load_dataset_dict(dataset_dir)  # names a missing, non-dataset or damaged folder
    split = dataset["train"]
    split = split.select(range(min(limit, len(split))))
    texts = list(DEFAULT_TEXTS) + list(split["title"])
    if "history_titles" in split.column_names:
        texts.extend(", ".join(titles) for titles in split["history_titles"])
    return texts
