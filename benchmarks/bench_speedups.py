"""Our training and scoring paths against the plain PEFT + transformers loop, interleaved in one process.

For each stage the same batches of real ML-1M rows go through each path, one step each in turn (the order rotates
every batch), so a busy machine slows all of them alike and the ratios stay meaningful:

* **plain**: the loop a user writes with PEFT + transformers (as CoLLM / TALLRec do): the stage model of
  `bench_training.py` with PEFT's default LoRA dropout 0.05 and SDPA, whole left-padded prompts, placeholders filled
  by the projector (`embed_inputs`), `language_model(inputs_embeds=..., attention_mask=...)` computing
  full-vocabulary logits at every position, BCE on the "Yes" logit of the last position.
* **ours, whole prompts**: what the configs train with (`configs/ml1m/base.yaml`: LoRA dropout 0, eager attention
  on a CPU; in stage `cie` the frozen LoRA merged and the prompt before the first placeholder without an autograd
  graph; frozen decoder weights held in bf16: `fast_frozen_weights`), `model(**batch).loss` with answer-row
  logits only.
* **ours, shared prefixes** (the trainer's default, `share_prefix: true`): the same model, batches collated as shared
  prompt prefixes + suffixes (`CL3MRecProcessor.pad_shared_prefix`): each user context's prefix runs once.
* **ours, compiled (whole prompts)** (stage `lora` only; `compile_train: true`): the same model and batches as
  whole prompts, its decoder layers run through `torch.compile` (`compiled_decoder_layers`, forward and backward;
  the two warm-up steps that compile are not counted). Stage `cie` runs its frozen prefix through a KV cache, which
  the compiled layers cannot take.

Rows are the first rows of the trainer's context-grouped order (`ContextGroupedSampler`, seed 0) over the whole
train split, so a batch holds as many shared contexts as training batches do; every path sees the same rows.
Scoring (stage-`cie` model): `--score-batches` of `CL3MRecScorer`'s batches of valid_small, taken at the midpoints of
equal stretches of its length-sorted order (the first batches hold the longest prompts and would understate both
paths); plain = the PEFT model, fp32, full-vocabulary logits, whole prompts; ours = `CL3MRecScorer` on the model as
exported (frozen LoRA merged; bf16 autocast, answer rows only, shared prefixes, SDPA); ours, `compile=True` = the
same scorer with its decoder layers compiled (whole prompts; its first pass over the rows, which compiles, is
reported but not counted).
The projected wall-clock of one epoch (33,891 train rows) or of valid_small (5,200 rows) is rows ÷ rows/s.
Run from the repository root: `python benchmarks/bench_speedups.py --allow-pickle [--batches 6 --threads 2]`
(`--quick`: a smoke run whose numbers mean nothing).
"""

import contextlib
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from trainers.arg_types import ArgumentParser, positive_int  # noqa: E402
from benchmarks.bench_training import Setting, build_stage  # noqa: E402
from trainers.cpu_allocator import restart_with_jemalloc  # noqa: E402

TRAIN_ROWS, VALID_SMALL_ROWS = 33_891, 5_200
PATHS = ("plain", "ours, whole prompts", "ours, shared prefixes")
COMPILED = "ours, compiled (whole prompts)"  # stage lora only: stage cie's frozen prefix runs through a KV cache


def grouped_rows(path: str, count: int, allow_pickle: bool):
    """The first `count` rows of the trainer's context-grouped training order (seed 0) over the whole split."""
    import numpy as np

    from trainers.training.prompt_dataset import context_groups, grouped_order

    dataset = common.load_split(path, allow_pickle)
    order = grouped_order(context_groups(dataset), generator=np.random.default_rng(0))
    return dataset.select(order[:count])


def spread(items: list, count: int) -> list:
    """`count` of `items` at the midpoints of `count` equal stretches (all of them when there are no more)."""
    if count >= len(items):
        return list(items)
    return [items[int((k + 0.5) * len(items) / count)] for k in range(count)]


def plain_logit(model, batch, yes_token_id):
    """The plain path's score: the LLM's full-vocabulary logits at every position, "Yes" at the last one."""
    base = model.get_base_model()
    embeds, _ = base.embed_inputs(batch["input_ids"], batch.get("user_ids"), batch.get("item_ids"), batch.get("history_item_ids"))
    logits = base.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    return logits[:, -1, yes_token_id].float()


def stage_speeds(args, stage: str) -> tuple[dict[str, float], int, int]:
    """`(rows/s of each path, timed rows, shared prefixes among them)` for training `stage`, interleaved."""
    import torch
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset
    from trainers.training.stages import compiled_decoder_layers, fast_frozen_weights

    cie = stage == "cie"
    plain_model, tokenizer, with_ids = build_stage(args, Setting(stage, False, "fp32", 0.05, "sdpa", False))
    attention = "eager" if common.device().type == "cpu" else "sdpa"
    ours_model, _, _ = build_stage(args, Setting(stage, False, "fp32", 0.0, attention, cie))
    config = ours_model.get_base_model().config
    processor = CL3MRecProcessor.from_model_config(tokenizer, config, with_ids)
    rows = grouped_rows(args.data, args.batch_size * (args.batches + 1), args.allow_pickle)
    features = tokenize_dataset(rows, processor).to_list()
    chunks = [features[i : i + args.batch_size] for i in range(0, len(features), args.batch_size)]
    whole = CL3MRecCollator(processor)
    shared = CL3MRecCollator(processor, ours_model.get_base_model().shared_prefix_parts)
    dev = common.device()
    optimizers = {
        model: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for model in (plain_model, ours_model)
    }

    paths = PATHS if cie else PATHS + (COMPILED,)

    def step(path, chunk):
        model = plain_model if path == "plain" else ours_model
        batch = (shared if path == PATHS[2] else whole)(chunk)
        batch = {name: tensor.to(dev) for name, tensor in batch.items()}
        compiled = compiled_decoder_layers(ours_model) if path == COMPILED else contextlib.nullcontext()
        with torch.autocast(dev.type, dtype=torch.bfloat16), compiled:
            if path == "plain":
                loss = bce(plain_logit(model, batch, config.yes_token_id), batch["labels"].float())
            else:
                loss = model(**batch, frozen_prefix=cie).loss
        loss.backward()
        optimizers[model].step()
        optimizers[model].zero_grad(set_to_none=True)

    seconds = dict.fromkeys(paths, 0.0)
    with fast_frozen_weights(ours_model, torch.bfloat16):  # merges nothing in stage lora: its LoRA trains
        for path in paths:  # warm-up
            step(path, chunks[0])
        if not cie:  # dynamo specialises on the first shapes and builds the dynamic graph on the next ones
            step(COMPILED, chunks[1])
        for index, chunk in enumerate(chunks[1:]):
            for offset in range(len(paths)):
                path = paths[(index + offset) % len(paths)]
                elapsed, _ = common.timed(lambda: step(path, chunk))
                seconds[path] += elapsed
    samples = sum(len(chunk) for chunk in chunks[1:])
    groups = sum(len({processor.context_key(feature) for feature in chunk}) for chunk in chunks[1:])
    print(f"{stage}: {samples} rows in {groups} shared prefixes", flush=True)
    return {path: samples / seconds[path] for path in paths}, samples, groups


def scoring_speeds(args) -> tuple[dict[str, float], int]:
    """`(rows/s of each path, rows, compile seconds)`: plain fp32 full-logit whole prompts vs `CL3MRecScorer`, eager
    (shared prefixes) and compiled (whole prompts), same valid_small rows."""
    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.inference.llm_scoring import CL3MRecScorer
    from trainers.training.prompt_dataset import CL3MRecCollator, context_groups, length_grouped_batches, tokenize_dataset

    model, tokenizer, _ = build_stage(args, Setting("cie", False, "fp32", 0.0, "sdpa", False))
    model.eval()
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.get_base_model().config, True)
    rows = common.load_split(args.valid_data, args.allow_pickle)
    tokenized = tokenize_dataset(rows, processor)
    batches = length_grouped_batches(tokenized["length"], args.score_batch_size, context_groups(tokenized))
    chosen = [index for batch in spread(batches, args.score_batches) for index in batch]
    subset = rows.select(chosen)
    exported = copy.deepcopy(model).merge_and_unload().eval()  # what an export holds and `load_scorer` scores
    scorers = {
        name: CL3MRecScorer(exported, processor, batch_size=args.score_batch_size, show_progress=False, compile=flag)
        for name, flag in (("ours", False), ("compiled", True))
    }
    features = tokenized.select(chosen).to_list()
    collator, dev = CL3MRecCollator(processor), common.device()
    yes = model.get_base_model().config.yes_token_id

    @torch.inference_mode()
    def plain():
        for start in range(0, len(features), args.score_batch_size):
            batch = collator(features[start : start + args.score_batch_size])
            plain_logit(model, {name: tensor.to(dev) for name, tensor in batch.items()}, yes)

    scorers["ours"].score(subset.select(range(min(8, len(subset)))))  # warm-up
    # A whole pass: dynamo specialises on the first shapes it sees and builds the dynamic graph on the next ones.
    compile_seconds, _ = common.timed(lambda: scorers["compiled"].score(subset))
    names = ("plain", "ours", "compiled")
    seconds = dict.fromkeys(names, 0.0)
    for round_index in range(args.score_rounds):
        for offset in range(len(names)):
            name = names[(round_index + offset) % len(names)]
            start = time.perf_counter()
            plain() if name == "plain" else scorers[name].score(subset)
            seconds[name] += time.perf_counter() - start
    speeds = {name: args.score_rounds * len(chosen) / value for name, value in seconds.items()}
    return speeds, len(chosen), compile_seconds


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM)
    common.add_data_arguments(parser, common.DEFAULT_TRAIN_DATA, "CoLLM pickle / split with the train rows")
    parser.add_argument("--valid-data", default=common.DEFAULT_DATA, help="valid_small rows for the scoring paths")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="per_device_train_batch_size of the configs",
    )
    parser.add_argument(
        "--batches", type=positive_int, default=6, help="timed training batches per stage (after 1 warm-up)",
    )
    parser.add_argument("--score-batch-size", type=positive_int, default=16)
    parser.add_argument(
        "--score-batches", type=positive_int, default=8, help="valid_small batches per scoring round",
    )
    parser.add_argument("--score-rounds", type=positive_int, default=2)
    parser.add_argument("--stages", nargs="+", choices=["lora", "cie", "scoring"], default=["lora", "cie", "scoring"])
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--lora-targets", nargs="+", default=["q_proj", "k_proj", "v_proj", "o_proj"])
    parser.add_argument("--quick", action="store_true", help="1 timed batch of 4 rows per stage, 1 scoring round")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.batches, args.score_batch_size, args.score_batches, args.score_rounds = 4, 1, 4, 1, 1

    session = common.Session.start(args.threads)
    common.set_threads(session.threads)
    table = []
    for stage in [s for s in args.stages if s != "scoring"]:
        speeds, samples, groups = stage_speeds(args, stage)
        for path in speeds:
            ratio = speeds[path] / speeds["plain"]
            hours = TRAIN_ROWS / speeds[path] / 3600
            table.append([f"train `{stage}`", path, speeds[path], f"{ratio:.2f}x", f"{hours:.2f} h / epoch"])
            print(table[-1], flush=True)
    if "scoring" in args.stages:
        speeds, scored, compile_seconds = scoring_speeds(args)
        labels = {
            "plain": "plain (fp32, full logits, whole prompts)",
            "ours": "ours (CL3MRecScorer)",
            "compiled": f"ours, `compile=True` (whole prompts; first pass with compiling {compile_seconds:.0f} s, "
            "not counted)",
        }
        for name, label in labels.items():
            minutes = VALID_SMALL_ROWS / speeds[name] / 60
            table.append(["score (`cie` model)", label, speeds[name], f"{speeds[name] / speeds['plain']:.2f}x",
                          f"{minutes:.1f} min / valid_small"])
            print(table[-1], flush=True)
    body = [
        f"Training: {args.batches} timed batches of {args.batch_size} rows per stage after the warm-up (two batches "
        f"for the compiled path, one for the others), the "
        f"paths interleaved batch by batch (rows of `{args.data}` in the trainer's context-grouped order). "
        f"Scoring: {args.score_rounds} rounds (the three paths in rotating order) over {args.score_batches} grouped "
        f"batches of "
        f"`{args.valid_data}` spread over its length-sorted order. {session.threads} threads, device "
        f"{common.device()}, LLM `{args.llm}`, bf16 autocast.",
        "",
        common.markdown_table(["what", "path", "rows/s", "vs plain", "projected wall-clock"], table),
    ]
    session.write("speedups", args.quick, "Speed-ups over the plain PEFT + transformers loop (interleaved)", "\n".join(body))
    return 0


if __name__ == "__main__":
    restart_with_jemalloc()
    sys.exit(main())
