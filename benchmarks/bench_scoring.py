"""Rows/s of `CL3MRecScorer` against the plain transformers path, on real ML-1M prompts (text-only template).

Paths (each in its own subprocess, same rows, same batch size, same threads):

* `plain-fp32`: `AutoModelForCausalLM` fp32, prompts left-padded in dataset order,
  `model(**batch).logits[:, -1, yes_id]` (full-vocabulary logits at every position);
* `plain-bf16`: the same under bf16 autocast;
* `plain-bf16-sorted`: the same with batches of similar length (what length grouping alone gives);
* `ours-fp32`, `ours-bf16` (the scorer's default: fp32 weights + bf16 autocast), `ours-bf16-weights`
  (bf16 weights, no re-casting per step): `CL3MRecScorer` on a text-only `CL3MRecModel` built by
  `trainers.llm_loading.build_cl3mrec` — answer position only, "Yes"/"No" rows of the LM head,
  length-grouped batches, inference mode.

Times cover tokenisation + all forward passes, after one warm-up batch. Scores of every path are compared
with `plain-fp32`. Run from the repository root: `python benchmarks/bench_scoring.py [--quick]`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from trainers.arg_types import ArgumentParser, positive_int  # noqa: E402
from trainers.cpu_allocator import restart_with_jemalloc  # noqa: E402

TEMPLATE = "tallrec_ml1m"
FULL_PATHS = ("plain-fp32", "plain-bf16", "plain-bf16-sorted", "ours-fp32", "ours-bf16", "ours-bf16-weights")
QUICK_PATHS = ("plain-fp32", "ours-bf16")
PATH_NOTES = {
    "plain-fp32": "AutoModelForCausalLM fp32, full logits, dataset order",
    "plain-bf16": "+ bf16 autocast",
    "plain-bf16-sorted": "+ length-sorted batches",
    "ours-fp32": "CL3MRecScorer, fp32",
    "ours-bf16": "CL3MRecScorer, bf16 autocast (default)",
    "ours-bf16-weights": "CL3MRecScorer, bf16 weights + autocast",
}


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM, help="local LLM directory (weights + tokenizer)")
    common.add_data_arguments(parser, common.DEFAULT_DATA, "CoLLM pickle / split with the rows to score")
    parser.add_argument("--rows", type=positive_int, default=64)
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--threads", type=positive_int, default=None, help="intra-op threads (default: nproc)")
    parser.add_argument("--paths", nargs="+", choices=FULL_PATHS, default=None)
    parser.add_argument("--quick", action="store_true", help="32 rows, plain-fp32 vs ours-bf16 only (< 1 min)")
    parser.add_argument("--worker", choices=FULL_PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rows = min(args.rows, 32)
        args.paths = args.paths or list(QUICK_PATHS)
    args.paths = args.paths or list(FULL_PATHS)
    return args


def plain_worker(args, rows, precision_bf16: bool, sort_by_length: bool):
    """The plain transformers path: returns (seconds, scores, rss after load)."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.prompt_templates import load_template

    device = common.device()
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    tokenizer.padding_side = "left"
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.llm, dtype=torch.float32).to(device).eval()
    loaded_rss = common.current_rss_mib()
    yes_id = tokenizer("Yes", add_special_tokens=False)["input_ids"][0]
    processor = CL3MRecProcessor(tokenizer, template=load_template(TEMPLATE), max_history=10)
    prompts = [processor.render(row) for row in rows]
    if sort_by_length:
        lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    else:
        order = list(range(len(prompts)))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision_bf16)

    @torch.inference_mode()
    def score(indices):
        scores = np.empty(len(prompts))
        with autocast:
            for start in range(0, len(indices), args.batch_size):
                chunk = indices[start : start + args.batch_size]
                batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True).to(device)
                scores[chunk] = model(**batch).logits[:, -1, yes_id].float().cpu().numpy()
        return scores

    score(order[: args.batch_size])  # warm-up
    seconds, scores = common.timed(lambda: score(order))
    return seconds, scores, loaded_rss


def ours_worker(args, rows, mode: str):
    """`CL3MRecScorer` on a text-only CL3M-Rec model: returns (seconds, scores, rss after load)."""
    import torch

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.inference.llm_scoring import CL3MRecScorer
    from trainers.llm_loading import build_cl3mrec
    from trainers.prompt_templates import load_template

    weights_dtype = torch.bfloat16 if mode == "ours-bf16-weights" else torch.float32
    model, tokenizer = build_cl3mrec(args.llm, text_prompt_template=load_template(TEMPLATE), dtype=weights_dtype)
    model = model.to(common.device())
    loaded_rss = common.current_rss_mib()
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config)
    scorer = CL3MRecScorer(
        model, processor, batch_size=args.batch_size, use_bf16=mode != "ours-fp32", show_progress=False
    )
    scorer.score(rows.select(range(min(args.batch_size, len(rows)))))  # warm-up
    seconds, scores = common.timed(lambda: scorer.score(rows))
    return seconds, scores, loaded_rss


def worker(args) -> None:
    common.set_threads(args.threads)
    rows = common.load_rows(args.data, args.rows, allow_pickle=args.allow_pickle)
    if args.worker.startswith("plain"):
        seconds, scores, loaded_rss = plain_worker(
            args, rows, precision_bf16=args.worker != "plain-fp32", sort_by_length=args.worker.endswith("sorted")
        )
    else:
        seconds, scores, loaded_rss = ours_worker(args, rows, args.worker)
    common.write_worker_result(
        args.worker_out,
        {
            "path": args.worker,
            "seconds": seconds,
            "rows": len(rows),
            "scores": [float(s) for s in scores],
            "labels": [int(label) for label in rows["label"]],
        },
        loaded_rss,
    )


def main(argv=None) -> int:
    import numpy as np

    from trainers.inference.metrics import auc

    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    session = common.Session.start(args.threads)
    info, threads = session.info, session.threads
    passed = ["--llm", args.llm, *common.data_arguments(args), "--rows", str(args.rows)]
    passed += ["--batch-size", str(args.batch_size), "--threads", str(threads)]
    results = {}
    for path in args.paths:
        results[path] = common.run_worker(Path(__file__), ["--worker", path, *passed])
        print(f"{path}: {results[path]['rows'] / results[path]['seconds']:.2f} rows/s", flush=True)

    reference = np.array(results[args.paths[0]]["scores"])
    base_rate = results[args.paths[0]]["rows"] / results[args.paths[0]]["seconds"]
    table = []
    for path, result in results.items():
        scores = np.array(result["scores"])
        rate = result["rows"] / result["seconds"]
        diff = np.abs(scores - reference)
        table.append(
            [
                path,
                PATH_NOTES[path],
                rate,
                f"{rate / base_rate:.2f}x",
                *common.memory_cells(result, info),
                float(diff.max()),
                float(np.corrcoef(scores, reference)[0, 1]),
                auc(np.array(result["labels"]), scores),
            ]
        )
    headers = [
        "path",
        "what",
        "rows/s",
        f"vs {args.paths[0]}",
        *common.MEMORY_HEADERS,
        f"max abs Δscore vs {args.paths[0]}",
        "Pearson r",
        "AUC",
    ]
    body = [
        f"Rows: {args.rows} random rows (seed 0) of `{args.data}`, template `{TEMPLATE}` (text only), "
        f"LLM `{args.llm}`, "
        f"batch size {args.batch_size}, {threads} threads, device {common.device()}.",
        "Each path runs in its own subprocess; time = tokenisation + forward passes after a warm-up batch; "
        "peak memory = max RSS of the subprocess (CPU) or `torch.cuda.max_memory_allocated` (GPU), "
        "model weights included.",
        "",
        common.markdown_table(headers, table),
        "",
    ]
    ratio = None
    if "ours-bf16" in results and "plain-fp32" in results:
        ratio = (results["ours-bf16"]["rows"] / results["ours-bf16"]["seconds"]) / (
            results["plain-fp32"]["rows"] / results["plain-fp32"]["seconds"]
        )
        body.append(f"**Scoring speed-up, `ours-bf16` vs `plain-fp32`: {ratio:.2f}x** (target ≥ 3x).")
    title = "Scoring throughput: CL3MRecScorer vs plain transformers"
    session.write("scoring", args.quick, title, "\n".join(body))
    if ratio is not None:
        print(f"scoring speed-up ours-bf16 vs plain-fp32: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    restart_with_jemalloc()
    sys.exit(main())
