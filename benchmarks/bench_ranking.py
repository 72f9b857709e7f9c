"""Ranking many candidates per user: prefix-cached `CandidateRanker` vs pair-by-pair `CL3MRecScorer`.

A CL3M-Rec model on the real LLM with the CoLLM ML-1M template (`collm_ml1m`: history titles, user and item
placeholders) and a randomly initialised MF encoder (speed does not depend on its training). For each of a
few users of the valid split, 100 candidate items (fixed random sample of the items with titles) are scored

* pair by pair: one dataset row per candidate through `CL3MRecScorer.score` (tokenise, length-grouped,
  left-padded batches, bf16 autocast);
* prefix-cached: `trainers.inference.ranking.CandidateRanker` (prefix once, suffixes against its KV cache, bf16 autocast).

Both paths run in their own subprocess (peak memory), after a warm-up user. Run from the repository root:
`python benchmarks/bench_ranking.py [--quick]`.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from trainers.arg_types import ArgumentParser, positive_int  # noqa: E402
from trainers.cpu_allocator import restart_with_jemalloc  # noqa: E402

TEMPLATE = "collm_ml1m"
PATHS = ("pair-by-pair", "prefix-cached")


def parse_args(argv=None):
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", default=common.DEFAULT_LLM)
    common.add_data_arguments(parser, common.DEFAULT_DATA, "split whose users are ranked")
    parser.add_argument("--users", type=positive_int, default=2)
    parser.add_argument("--candidates", type=positive_int, default=100)
    parser.add_argument(
        "--batch-size", type=positive_int, default=16, help="scorer rows per forward (pair by pair)",
    )
    parser.add_argument(
        "--rank-batch-size", type=positive_int, default=32, help="candidate suffixes per forward",
    )
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--quick", action="store_true", help="1 user x 50 candidates")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.candidates = 1, min(args.candidates, 50)
    return args


def ranking_inputs(args):
    """`(user_rows, candidate_ids, candidate_titles, random MF config)` from the data file."""
    import numpy as np

    data = common.load_split(args.data, args.allow_pickle)
    titles = dict(zip(data["item_id"], data["title"]))
    rng = np.random.default_rng(0)
    item_ids = np.array(sorted(titles))
    candidates = rng.choice(item_ids, size=min(args.candidates, len(item_ids)), replace=False).tolist()
    # Users with the longest histories first: the realistic (10-title) prefix; one extra user warms up.
    order = np.argsort([-len(h) for h in data["history_item_ids"]], kind="stable")
    users, seen = [], set()
    for index in order:
        row = data[int(index)]
        if row["user_id"] not in seen:
            seen.add(row["user_id"])
            users.append(row)
        if len(users) == args.users + 1:
            break
    return users, candidates, [titles[i] for i in candidates], common.random_mf_config(data)


def worker(args) -> None:
    import numpy as np
    import torch
    from datasets import Dataset

    from modeling_cl3mrec import CL3MRecProcessor
    from trainers.inference.llm_scoring import CL3MRecScorer
    from trainers.inference.ranking import CandidateRanker
    from trainers.llm_loading import build_cl3mrec
    from trainers.prompt_templates import load_template

    common.set_threads(args.threads)
    users, candidates, titles, cf_config = ranking_inputs(args)
    torch.manual_seed(0)
    model, tokenizer = build_cl3mrec(args.llm, cf_config=cf_config, prompt_template=load_template(TEMPLATE))
    model = model.to(common.device()).eval()
    processor = CL3MRecProcessor.from_model_config(tokenizer, model.config)
    loaded_rss = common.current_rss_mib()
    if args.worker == "pair-by-pair":
        scorer = CL3MRecScorer(model, processor, batch_size=args.batch_size, use_bf16=True, show_progress=False)

        def score(user):
            rows = [{**user, "item_id": item, "title": title} for item, title in zip(candidates, titles)]
            return scorer.score(Dataset.from_list(rows))

    else:
        ranker = CandidateRanker(model, processor, batch_size=args.rank_batch_size, autocast_dtype=torch.bfloat16)

        def score(user):
            return ranker.score(user, candidates, titles)

    score(users[0])  # warm-up user
    seconds, all_scores = 0.0, []
    for user in users[1:]:
        elapsed, scores = common.timed(lambda: score(user))
        seconds += elapsed
        all_scores.append([float(s) for s in np.asarray(scores)])
    common.write_worker_result(
        args.worker_out,
        {
            "seconds": seconds,
            "users": len(users) - 1,
            "candidates": len(candidates),
            "scores": all_scores,
            "prompt_tokens": [len(tokenizer(p)["input_ids"]) for p in _prompts(processor, users[1], titles[:1])],
        },
        loaded_rss,
    )


def _prompts(processor, user, titles):
    row = {**user, "title": titles[0]}
    return [processor.render(row), processor.split_prompt(row)[0]]


def main(argv=None) -> int:
    import numpy as np

    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    session = common.Session.start(args.threads)
    info, threads = session.info, session.threads
    passed = ["--llm", args.llm, *common.data_arguments(args), "--users", str(args.users)]
    passed += ["--candidates", str(args.candidates), "--batch-size", str(args.batch_size)]
    passed += ["--rank-batch-size", str(args.rank_batch_size), "--threads", str(threads)]
    results = {}
    for path in PATHS:
        results[path] = common.run_worker(Path(__file__), ["--worker", path, *passed])
        rate = results[path]["users"] * results[path]["candidates"] / results[path]["seconds"]
        print(f"{path}: {rate:.2f} candidates/s", flush=True)

    base = results["pair-by-pair"]
    reference = np.array(base["scores"])
    table = []
    for path, result in results.items():
        scores = np.array(result["scores"])
        rate = result["users"] * result["candidates"] / result["seconds"]
        k = min(10, scores.shape[1])
        top = [len(set(np.argsort(-s)[:k]) & set(np.argsort(-r)[:k])) / k for s, r in zip(scores, reference)]
        table.append(
            [
                path,
                rate,
                result["seconds"] / result["users"],
                f"{base['seconds'] / result['seconds']:.2f}x",
                *common.memory_cells(result, info),
                float(np.abs(scores - reference).max()),
                float(np.mean(top)),
            ]
        )
    full_tokens, prefix_tokens = base["prompt_tokens"]
    headers = ["path", "candidates/s", "s per user", "speed-up", *common.MEMORY_HEADERS,
               "max abs Δscore vs pair-by-pair", "top-10 overlap"]
    speedup = base["seconds"] / results["prefix-cached"]["seconds"]
    body = [
        f"{args.users} users (longest histories of `{args.data}`) × {args.candidates} candidates, template "
        f"`{TEMPLATE}` (user prompt: {full_tokens} tokens with the first candidate, "
        f"prefix ≈ {prefix_tokens} tokens), "
        f"LLM `{args.llm}` + random MF encoder, bf16 autocast, {threads} threads, device {common.device()}; "
        f"scorer batch {args.batch_size} rows, ranker batch {args.rank_batch_size} suffixes (sorted by length). "
        "One warm-up user per path is not timed.",
        "",
        common.markdown_table(headers, table),
        "",
        f"**Ranking speed-up, prefix-cached vs pair-by-pair: {speedup:.2f}x** (target ≥ 5x). Score differences are "
        "bf16 rounding (the fp32 equality is tested in `tests/test_ranking.py`).",
    ]
    title = "Ranking 100 candidates per user: prefix cache vs pair by pair"
    session.write("ranking", args.quick, title, "\n".join(body))
    print(f"ranking speed-up prefix-cached vs pair-by-pair: {speedup:.2f}x")
    return 0


if __name__ == "__main__":
    restart_with_jemalloc()
    sys.exit(main())
