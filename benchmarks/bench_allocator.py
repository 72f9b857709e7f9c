"""Training speed over a long run with glibc's malloc and with jemalloc (`trainers.cpu_allocator`).

An allocator is chosen when a process starts, so each runs in its own worker process, one after the other: stage
`lora` as the trainer runs it (`bench_speedups.py`'s "ours, shared prefixes" path: LoRA dropout 0, frozen decoder
weights in bf16, shared prompt prefixes, `model(**batch).loss`, AdamW) over `--steps` batches of real ML-1M train
rows in the trainer's context-grouped order, the same rows for both. Seconds per step are reported in windows of
`--window` steps: glibc's heap fragments under the ever-changing tensor shapes of these batches, so its steps slow
down as a run goes on, while jemalloc's stay flat. Run from the repository root:
`python benchmarks/bench_allocator.py --allow-pickle [--steps 120 --window 30 --threads 2]` (`--quick`: a smoke
run whose numbers mean nothing). Without jemalloc installed (`apt install libjemalloc2`) it says so and skips.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from trainers.arg_types import ArgumentParser, positive_int  # noqa: E402
from benchmarks.bench_speedups import grouped_rows  # noqa: E402
from benchmarks.bench_training import Setting, build_stage  # noqa: E402
from trainers.cpu_allocator import (  # noqa: E402
    OPT_OUT_VARIABLE,
    allocator_in_use,
    find_jemalloc,
    library_dirs,
    restart_with_jemalloc,
    system_malloc_environment,
)

ALLOCATORS = ("system malloc", "jemalloc")


def step_seconds(args) -> list[float]:
    """Seconds of each of `args.steps` stage-`lora` training steps (after one untimed warm-up step)."""
    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset
    from trainers.training.stages import fast_frozen_weights

    common.set_threads(args.threads)
    attention = "eager" if common.device().type == "cpu" else "sdpa"
    model, tokenizer, with_ids = build_stage(args, Setting("lora", False, "fp32", 0.0, attention, False))
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.get_base_model().config, with_ids)
    rows = grouped_rows(args.data, args.batch_size * (args.steps + 1), args.allow_pickle)
    features = tokenize_dataset(rows, processor).to_list()
    collator = CL3MRecCollator(processor, model.get_base_model().shared_prefix_parts)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = common.device()
    seconds = []
    with fast_frozen_weights(model, torch.bfloat16):
        for index in range(args.steps + 1):
            batch = collator(features[index * args.batch_size : (index + 1) * args.batch_size])
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(**{name: tensor.to(device) for name, tensor in batch.items()}).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            common.synchronize()
            if index:
                seconds.append(time.perf_counter() - start)
    return seconds


def worker_environment(allocator: str) -> dict[str, str]:
    """This process's environment for a worker that runs on `allocator` (a jemalloc worker restarts onto it)."""
    if allocator == "system malloc":
        return system_malloc_environment(os.environ)
    return {key: value for key, value in os.environ.items() if key != OPT_OUT_VARIABLE}


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM)
    common.add_data_arguments(parser, common.DEFAULT_TRAIN_DATA, "CoLLM pickle / split with the train rows")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="per_device_train_batch_size of the configs",
    )
    parser.add_argument("--steps", type=positive_int, default=120, help="timed training steps per allocator")
    parser.add_argument("--window", type=positive_int, default=30, help="steps per reported window")
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    parser.add_argument("--quick", action="store_true", help="4 steps of 2 rows, windows of 2")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.window = 2, 4, 2
    if args.worker_out:
        Path(args.worker_out).write_text(json.dumps({"allocator": allocator_in_use(), "seconds": step_seconds(args)}))
        return 0
    if find_jemalloc(library_dirs(os.environ)) is None:
        print("jemalloc is not installed (apt install libjemalloc2): nothing to compare, skipped", file=sys.stderr)
        return 0

    session = common.Session.start(args.threads)
    passed = [*common.data_arguments(args), "--llm", args.llm, "--batch-size", str(args.batch_size)]
    passed += ["--steps", str(args.steps), "--threads", str(session.threads), "--lora-targets", *args.lora_targets]
    seconds = {}
    for allocator in ALLOCATORS:
        result = common.run_worker(Path(__file__), passed, env=worker_environment(allocator))
        if result["allocator"] != allocator:
            raise RuntimeError(f"the {allocator} worker ran on {result['allocator']}")
        seconds[allocator] = result["seconds"]
        print(allocator, f"{sum(result['seconds']) / len(result['seconds']):.2f} s/step", flush=True)

    windows = [(start, min(start + args.window, args.steps)) for start in range(0, args.steps, args.window)]
    table = []
    for label, (start, stop) in [(f"{a + 1}–{b}", (a, b)) for a, b in windows] + [("all", (0, args.steps))]:
        system, jemalloc = (sum(seconds[name][start:stop]) / (stop - start) for name in ALLOCATORS)
        table.append([label, system, jemalloc, f"{system / jemalloc:.2f}x"])
    body = [
        f"Stage `lora`, {args.steps} steps of {args.batch_size} rows of `{args.data}` in the trainer's context-grouped "
        f"order, shared prompt prefixes, bf16 autocast, {session.threads} threads, device {common.device()}, LLM "
        f"`{args.llm}`; each allocator in its own process, one after the other, on the same rows. Seconds per step:",
        "",
        common.markdown_table(["steps", "glibc malloc s/step", "jemalloc s/step", "jemalloc speed-up"], table),
    ]
    session.write("allocator", args.quick, "Training steps with glibc's malloc and with jemalloc", "\n".join(body))
    return 0


if __name__ == "__main__":
    restart_with_jemalloc()
    sys.exit(main())
