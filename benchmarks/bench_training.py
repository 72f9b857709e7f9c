"""Training throughput (samples/s), model FLOPs utilisation (MFU) and peak memory per stage.

The loop is the trainer's step without the Trainer around it: the stage model exactly as
`trainers.training.stage_model.build_stage_model` makes it (`build_cl3mrec` + `add_lora`, then `apply_stage`), batches of
real ML-1M train rows from `tokenize_dataset` + `CL3MRecCollator` (random order, as Trainer's sampler),
`model(**batch).loss` (BCE on the answer score) under bf16 autocast, `backward`, `AdamW.step`, `zero_grad`.

* `lora`: text-only template `tallrec_ml1m`, LoRA (r=8 on the modules of `configs/ml1m/tallrec_lora.yaml`) trains.
* `cie`: CoLLM template `collm_ml1m` with user/item placeholders from a random MF encoder; only the projector
  trains (LoRA frozen; merged into the base weights as `trainers.training.stages.merged_frozen_lora` does in the trainer,
  or left as PEFT layers), gradients flow back through the LLM to the placeholder embeddings. With the frozen
  prefix (what the trainer does in stage `cie`: `model(..., frozen_prefix=True)`) the prompt columns before the
  first placeholder run once without an autograd graph into a KV cache and only the rest is backpropagated.

Model FLOPs per step = 2 · N · tokens (forward) × 2 (backward of a frozen-weight network: input gradients
only, as costly as the forward; LoRA / projector weight gradients are negligible), i.e. `4 · N · tokens`;
a full fine-tune, where weight gradients flow too, would be `6 · N · tokens` (×3). A frozen-prefix row is
charged the same full-pass FLOPs (it computes fewer): its MFU reads as "full-pass-equivalent", its samples/s is
the figure to compare. N = LLM parameters without
the embedding table (and without the LM head: only its 2 answer rows meet one position), LoRA included;
tokens = non-padding tokens; attention score FLOPs are not counted (conservative). Gradient-checkpointing
recomputation is not counted either (MFU counts useful FLOPs only). MFU = model FLOP/s ÷ the best bf16
`torch.matmul` FLOP/s measured in the same run. Run from the repository root:
`python benchmarks/bench_training.py [--quick]`.
"""

import argparse
import contextlib
import sys
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from trainers.arg_types import ArgumentParser, count, positive_int  # noqa: E402
from trainers.cpu_allocator import restart_with_jemalloc  # noqa: E402
from trainers.training.training_args import load_stage_config  # noqa: E402

STAGE_TEMPLATES = {"lora": "tallrec_ml1m", "cie": "collm_ml1m"}
BUNDLED_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml1m" / "tallrec_lora.yaml"


class Setting(NamedTuple):
    """One measured configuration. ``weights``: "bf16" keeps the frozen LLM in bf16 (``dtype: bfloat16``; LoRA,
    projector and CF encoder stay fp32), "fp32" is fp32 weights + bf16 autocast, "nf4" is QLoRA (CUDA only).
    ``merge``: frozen LoRA merged into the base weights while training (what the trainer does in stage ``cie``).
    ``sampler``: "random" (Trainer's default) or "group_by_length" (``train_sampling_strategy: group_by_length``,
    transformers' ``LengthGroupedSampler`` over one megabatch of 50 batches). ``frozen_prefix``: stage ``cie``'s
    columns before the first placeholder without an autograd graph (``CL3MRecModel.forward(frozen_prefix=True)``)."""

    stage: str
    checkpointing: bool
    weights: str
    dropout: float
    attention: str
    merge: bool
    sampler: str = "random"
    frozen_prefix: bool = False

    def key(self) -> str:
        return ":".join(str(value) for value in self)

    @classmethod
    def from_key(cls, key: str) -> "Setting":
        stage, checkpointing, weights, dropout, attention, merge, sampler, prefix = key.split(":")
        return cls(
            stage, checkpointing == "True", weights, float(dropout), attention, merge == "True", sampler, prefix == "True"
        )


def configurations(quick: bool, device_type: str, qlora: bool) -> list[Setting]:
    """The measured settings. The first row of each stage is what `configs/ml1m/*.yaml` train with (fp32 weights +
    bf16 autocast, LoRA dropout 0, `train_attn_implementation: auto` = eager on a CPU / SDPA on a GPU, frozen LoRA
    merged and the prompt prefix without a graph in cie); the last row of each stage is the plain PEFT + transformers path (PEFT's dropout 0.05, acting
    even on a frozen adapter, SDPA); the rows between change one knob of the first row. ``qlora`` (CUDA +
    bitsandbytes) adds a 4-bit NF4 row per stage."""
    auto, other = ("eager", "sdpa") if device_type == "cpu" else ("sdpa", "eager")
    bundled_lora = Setting("lora", False, "fp32", 0.0, auto, False)
    plain_lora = Setting("lora", False, "fp32", 0.05, "sdpa", False)
    if quick:
        return [bundled_lora, plain_lora]
    settings = [
        bundled_lora,
        bundled_lora._replace(weights="bf16"),
        bundled_lora._replace(dropout=0.05),
        bundled_lora._replace(attention=other),
        bundled_lora._replace(checkpointing=True),
        bundled_lora._replace(sampler="group_by_length"),
        *([bundled_lora._replace(weights="nf4")] if qlora else []),
        plain_lora,
    ]
    bundled_cie = Setting("cie", False, "fp32", 0.0, auto, True, frozen_prefix=True)
    return settings + [
        bundled_cie,
        bundled_cie._replace(frozen_prefix=False),
        bundled_cie._replace(dropout=0.05, merge=False),
        bundled_cie._replace(weights="bf16"),
        bundled_cie._replace(checkpointing=True),
        bundled_cie._replace(sampler="group_by_length"),
        *([bundled_cie._replace(weights="nf4", merge=False)] if qlora else []),
        Setting("cie", False, "fp32", 0.05, "sdpa", False),
    ]


def qlora_available() -> bool:
    """CUDA and bitsandbytes are both present (4-bit NF4 rows are measured)."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


WEIGHTS_LABELS = {
    "fp32": "fp32 + bf16 autocast",
    "bf16": "bf16 frozen LLM + autocast",
    "nf4": "4-bit NF4 frozen LLM (QLoRA) + autocast",
}
PEAK_SHAPES = [(4096, 4096, 4096), (2048, 2048, 2048), (4096, 576, 1536), (4096, 1536, 576)]


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM)
    common.add_data_arguments(parser, common.DEFAULT_TRAIN_DATA, "CoLLM pickle / split with the train rows")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="per_device_train_batch_size of the configs",
    )
    parser.add_argument(
        "--lora-targets", nargs="+", default=load_stage_config(BUNDLED_CONFIG)["lora_target_modules"],
        help="LoRA target modules (default: those of configs/ml1m/tallrec_lora.yaml)",
    )
    parser.add_argument("--steps", type=positive_int, default=8, help="timed optimizer steps per configuration")
    parser.add_argument(
        "--warmup", type=count(0), default=2, help="untimed steps first (allocator and caches warm up)",
    )
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--quick", action="store_true", help="2 lora configurations, 2 timed steps of batch 4")
    parser.add_argument("--stages", nargs="+", choices=["lora", "cie"], default=["lora", "cie"], help="stages to measure")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.warmup = min(args.batch_size, 4), min(args.steps, 2), 1
    return args


def measure_peak(threads: int, repeats: int = 5) -> dict:
    """Best matmul FLOP/s: bf16 over `PEAK_SHAPES` (the peak is their max) and fp32 4096³ for reference."""
    import torch

    torch.set_num_threads(threads)
    dev = common.device()
    results = {}
    for dtype, shapes in ((torch.bfloat16, PEAK_SHAPES), (torch.float32, PEAK_SHAPES[:1])):
        for m, k, n in shapes:
            a = torch.randn(m, k, dtype=dtype, device=dev)
            b = torch.randn(k, n, dtype=dtype, device=dev)
            torch.matmul(a, b)
            seconds, _ = common.timed(lambda: torch.matmul(a, b), repeats)
            results[f"{str(dtype).removeprefix('torch.')} {m}x{k}x{n}"] = 2 * m * k * n / seconds
    return results


def non_embedding_parameters(language_model) -> int:
    """LLM parameters without the input embedding table and the LM head (LoRA layers included)."""
    skip = {id(p) for p in language_model.get_input_embeddings().parameters()}
    skip |= {id(p) for p in language_model.get_output_embeddings().parameters()}
    return sum(p.numel() for p in language_model.parameters() if id(p) not in skip)


def build_stage(args, setting: Setting):
    """`(peft_model, tokenizer, with_ids)` as `stage_model.build_stage_model` + `apply_stage` build them."""
    import torch

    from trainers.llm_loading import add_lora, build_cl3mrec
    from trainers.prompt_templates import load_template
    from trainers.training.stage_model import prepare_quantized_llm
    from trainers.training.stages import apply_stage

    template = load_template(STAGE_TEMPLATES[setting.stage])
    with_ids = setting.stage == "cie"
    cf_config = common.random_mf_config(common.load_split(args.data, args.allow_pickle)) if with_ids else None
    torch.manual_seed(0)
    model, tokenizer = build_cl3mrec(
        args.llm,
        cf_config=cf_config,
        prompt_template=template if with_ids else None,
        text_prompt_template=None if with_ids else template,
        dtype=torch.bfloat16 if setting.weights in ("bf16", "nf4") else torch.float32,
        quantization="nf4" if setting.weights == "nf4" else None,
    )
    model.language_model.set_attn_implementation(setting.attention)
    if setting.weights == "nf4":  # a 4-bit model is placed on the GPU when loaded
        prepare_quantized_llm(model, gradient_checkpointing=False, gradient_checkpointing_kwargs=None)
    else:
        model = model.to(common.device())
    model = add_lora(model, dropout=setting.dropout, target_modules=args.lora_targets)
    apply_stage(model, setting.stage)
    if setting.checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model.train(), tokenizer, with_ids


def worker(args) -> None:
    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.training.prompt_dataset import CL3MRecCollator, tokenize_dataset
    from trainers.training.stages import merged_frozen_lora

    threads = common.set_threads(args.threads)
    setting = Setting.from_key(args.worker)
    model, tokenizer, with_ids = build_stage(args, setting)
    loaded_rss = common.current_rss_mib()
    config = model.get_base_model().config
    needed = args.batch_size * (args.steps + args.warmup)
    grouped = setting.sampler == "group_by_length"
    rows = common.load_rows(
        args.data, max(needed, 50 * args.batch_size) if grouped else needed, seed=1, allow_pickle=args.allow_pickle
    )
    processor = CL3MRecProcessor.from_model_config(tokenizer, config, with_ids)
    features = tokenize_dataset(rows, processor).to_list()
    if grouped:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        lengths = [len(feature["input_ids"]) for feature in features]
        order = LengthGroupedSampler(args.batch_size, lengths=lengths, generator=torch.Generator().manual_seed(0))
        features = [features[i] for i in list(order)[:needed]]
    collator = CL3MRecCollator(processor)
    batches = [collator(features[i : i + args.batch_size]) for i in range(0, len(features), args.batch_size)]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    dev = common.device()

    def step(batch):
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            inputs = {name: tensor.to(dev) for name, tensor in batch.items()}
            loss = model(**inputs, frozen_prefix=setting.frozen_prefix).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = 0.0
    timed = batches[args.warmup :]
    with merged_frozen_lora(model) if setting.merge else contextlib.nullcontext():
        for batch in batches[: args.warmup]:
            step(batch)
        for batch in timed:
            elapsed, _ = common.timed(lambda: step(batch))
            seconds += elapsed
    real_tokens = sum(int(b["attention_mask"].sum()) for b in timed)
    padded_tokens = sum(b["attention_mask"].numel() for b in timed)
    common.write_worker_result(
        args.worker_out,
        {
            "samples": sum(len(b["input_ids"]) for b in timed),
            "seconds": seconds,
            "real_tokens": real_tokens,
            "padded_tokens": padded_tokens,
            "n_params": non_embedding_parameters(model.get_base_model().language_model),
            "trainable": sum(p.numel() for p in trainable),
            "threads": threads,
        },
        loaded_rss,
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    session = common.Session.start(args.threads)
    info, threads = session.info, session.threads
    peaks = measure_peak(threads)
    peak_bf16 = max(value for name, value in peaks.items() if name.startswith("bfloat16"))
    print(f"bf16 matmul peak: {peak_bf16 / 1e9:.0f} GFLOP/s", flush=True)
    passed = ["--llm", args.llm, *common.data_arguments(args), "--batch-size", str(args.batch_size)]
    passed += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(threads)]
    passed += ["--lora-targets", *args.lora_targets]
    table = []
    settings = [s for s in configurations(args.quick, common.device().type, qlora_available()) if s.stage in args.stages]
    for setting in settings:
        key = setting.key()
        result = common.run_worker(Path(__file__), ["--worker", key, *passed])
        flops = 4 * result["n_params"] * result["real_tokens"]
        flops_per_second = flops / result["seconds"]
        samples_per_second = result["samples"] / result["seconds"]
        print(f"{key}: {samples_per_second:.2f} samples/s, MFU {flops_per_second / peak_bf16:.1%}", flush=True)
        table.append(
            [
                setting.stage,
                "on" if setting.checkpointing else "off",
                WEIGHTS_LABELS[setting.weights],
                setting.dropout,
                setting.attention,
                "merged" if setting.merge else "PEFT layers",
                setting.sampler,
                "no graph" if setting.frozen_prefix else "-",
                samples_per_second,
                result["real_tokens"] / result["seconds"],
                flops_per_second / 1e9,
                f"{flops_per_second / peak_bf16:.1%}",
                f"{1 - result['real_tokens'] / result['padded_tokens']:.0%}",
                *common.memory_cells(result, info),
                result["trainable"],
            ]
        )
    headers = ["stage", "grad. checkpointing", "weights", "LoRA dropout", "attention", "frozen LoRA", "batches", "prompt prefix",
               "samples/s", "tokens/s", "model GFLOP/s", "MFU", "padding", *common.MEMORY_HEADERS, "trainable params"]
    n_params = result["n_params"]
    body = [
        f"Batch {args.batch_size} rows of `{args.data}` (random order), {args.steps} timed steps after {args.warmup} "
        f"warm-up steps, {threads} threads, device {common.device()}, LLM `{args.llm}`, LoRA r=8 on "
        f"{'/'.join(args.lora_targets)} "
        f"(N = {n_params / 1e6:.1f} M non-embedding parameters incl. LoRA).",
        "",
        "Matmul peak measured in this run (best of 5):",
        "",
        common.markdown_table(["matmul", "GFLOP/s"], [[name, value / 1e9] for name, value in peaks.items()]),
        "",
        f"MFU is against the best bf16 figure, {peak_bf16 / 1e9:.0f} GFLOP/s; "
        "model FLOPs = 4 · N · non-padding tokens (see the script's docstring).",
        "",
        common.markdown_table(headers, table),
    ]
    session.write("training", args.quick, "Training throughput and MFU per stage", "\n".join(body))
    return 0


if __name__ == "__main__":
    restart_with_jemalloc()
    sys.exit(main())
