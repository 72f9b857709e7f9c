"""Stage `cie` training step with and without the frozen prompt prefix, interleaved A/B in one process.

`CL3MRecModel.forward(frozen_prefix=True)` runs the prompt columns before the first CF placeholder without an
autograd graph into a KV cache and backpropagates only through the rest (same function: tested in
`tests/test_modeling_cl3mrec.py`). The stage model and batches are `bench_training.py`'s `cie` row (fp32
weights + bf16 autocast, eager attention on a CPU, frozen LoRA merged, random ML-1M train rows). Each round runs
every batch once with and once without the shortcut, alternating which goes first, so a busy machine slows both
alike and the ratio stays meaningful. Run from the repository root:
`python benchmarks/bench_frozen_prefix.py --allow-pickle [--rounds 3 --batches 4 --threads 2]`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.bench_training import Setting, build_stage  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM)
    common.add_data_arguments(parser, common.DEFAULT_TRAIN_DATA, "CoLLM pickle / split with the train rows")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    args = parser.parse_args(argv)

    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset
    from trainers.training.stages import merged_frozen_lora

    threads = common.set_threads(args.threads)
    model, tokenizer, _ = build_stage(args, Setting("cie", False, "fp32", 0.0, "eager", True))
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.get_base_model().config, True)
    rows = common.load_rows(args.data, args.batch_size * args.batches, seed=1, allow_pickle=args.allow_pickle)
    features = tokenize_dataset(rows, processor).to_list()
    collator = CL3MRecCollator(processor)
    batches = [collator(features[i : i + args.batch_size]) for i in range(0, len(features), args.batch_size)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dev = common.device()

    def step(batch, frozen_prefix: bool):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            inputs = {name: tensor.to(dev) for name, tensor in batch.items()}
            loss = model(**inputs, frozen_prefix=frozen_prefix).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = {True: 0.0, False: 0.0}
    with merged_frozen_lora(model):
        step(batches[0], True)  # warm-up, both paths
        step(batches[0], False)
        for round_index in range(args.rounds):
            for index, batch in enumerate(batches):
                first = (round_index + index) % 2 == 0
                for frozen_prefix in (first, not first):
                    elapsed, _ = common.timed(lambda: step(batch, frozen_prefix))
                    seconds[frozen_prefix] += elapsed
    samples = args.rounds * sum(len(batch["input_ids"]) for batch in batches)
    shortcut, full = samples / seconds[True], samples / seconds[False]
    lines = [
        f"{samples} training rows per path ({args.rounds} rounds x {len(batches)} batches of {args.batch_size}), "
        f"{threads} threads, device {dev}, LLM `{args.llm}`; interleaved A/B.",
        "",
        common.markdown_table(
            ["path", "samples/s"], [["full prompt with autograd", full], ["frozen prefix (stage cie)", shortcut]]
        ),
        "",
        f"speed-up: {shortcut / full:.2f}x",
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
