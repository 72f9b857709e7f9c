"""Tiny ``transformers.Trainer`` job that checks a multi-process launch really is data parallel.

Run under ``accelerate launch --config_file configs/accelerate/cpu_2proc.yaml tests/assets/ddp_check.py
--output_dir DIR``. Every rank builds a tiny random Llama with a *different* seed, trains a few steps on its
shard of a tiny token dataset and writes ``DIR/rank{R}.json`` with its world size, backend, the rows it saw and
a digest of its final parameters. Identical digests across ranks mean that DDP broadcast the initial weights
and averaged the gradients; different ``rows_seen`` mean the data really was sharded.
"""

import argparse
import hashlib
import json
import os

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, default_data_collator


class RecordingCollator:
    """Wraps ``default_data_collator`` and remembers the first token ids of every row it batches."""

    def __init__(self):
        self.rows_seen = []

    def __call__(self, features):
        self.rows_seen.extend(int(feature["input_ids"][0]) for feature in features)
        return default_data_collator(features)


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of all parameters (float32 bytes, name order)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=3)
    cli = parser.parse_args()

    rank = int(os.environ.get("RANK", "0"))
    torch.manual_seed(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
    )
    model = LlamaForCausalLM(config)
    initial_digest = parameter_digest(model)

    # Row r starts with token r, so the first token identifies the row a rank trained on.
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (16, 8), generator=generator)
    tokens[:, 0] = torch.arange(16)
    dataset = Dataset.from_dict({"input_ids": tokens.tolist(), "labels": tokens.tolist()})

    collator = RecordingCollator()
    args = TrainingArguments(
        output_dir=cli.output_dir,
        per_device_train_batch_size=2,
        max_steps=cli.max_steps,
        learning_rate=1e-2,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()

    state = trainer.accelerator.state
    report = {
        "rank": state.process_index,
        "env_rank": rank,
        "world_size": state.num_processes,
        "distributed_type": str(state.distributed_type),
        "backend": state.backend,
        "pid": os.getpid(),
        "rows_seen": collator.rows_seen,
        "initial_digest": initial_digest,
        "final_digest": parameter_digest(trainer.model),
    }
    with open(os.path.join(cli.output_dir, f"rank{state.process_index}.json"), "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    trainer.accelerator.wait_for_everyone()  # as trainers.cli does: every rank done, then a clean gloo shutdown
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
