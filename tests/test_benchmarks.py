"""The benchmark scripts run end to end (quick mode, tiny random LLM, tiny rows): they must not rot between
measurements. Their numbers on a tiny model mean nothing and are not checked; results go to a temporary folder."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.cpu_allocator import find_jemalloc, library_dirs

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory, tiny_rows):
    folder = tmp_path_factory.mktemp("bench")
    data = folder / "rows.parquet"
    tiny_rows.to_parquet(str(data))
    env = {**os.environ, "CL3MREC_BENCH_RESULTS_DIR": str(folder / "results"), "TOKENIZERS_PARALLELISM": "false"}
    return env, data, folder / "results"


@pytest.mark.parametrize(
    "script, results_file, last_line",
    [
        ("bench_scoring.py", "scoring_quick", r"scoring speed-up ours-bf16 vs plain-fp32: [0-9.]+x"),
        ("bench_ranking.py", "ranking_quick", r"ranking speed-up prefix-cached vs pair-by-pair: [0-9.]+x"),
        ("bench_training.py", "training_quick", r"results written to .*training_quick\S*\.md"),
        ("bench_speedups.py", "speedups_quick", r"results written to .*speedups_quick\S*\.md"),
        ("bench_allocator.py", "allocator_quick", r"results written to .*allocator_quick\S*\.md"),
    ],
)
def test_benchmark_quick_mode_runs(bench_env, tiny_llama_dir, script, results_file, last_line):
    env, data, results = bench_env
    if script == "bench_allocator.py" and find_jemalloc(library_dirs(os.environ)) is None:
        pytest.skip("jemalloc not installed: nothing to compare")
    command = [sys.executable, f"benchmarks/{script}", "--quick", "--llm", str(tiny_llama_dir), "--data", str(data)]
    if script == "bench_speedups.py":
        command += ["--valid-data", str(data)]
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert re.fullmatch(last_line, completed.stdout.strip().splitlines()[-1])
    text = next(results.glob(f"{results_file}*.md")).read_text()
    assert "- machine:" in text and "memory allocator:" in text and "| --- |" in text
    if script == "bench_speedups.py":  # every path measured, compiled training and scoring included
        assert "| train `lora` | ours, compiled (whole prompts) |" in text and "`compile=True`" in text


def test_scoring_batches_are_spread_over_the_length_sorted_order():
    """`bench_speedups.spread` takes batches from every stretch of the order, not its (longest-prompt) head."""
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_speedups import spread

    assert spread(list(range(100)), 4) == [12, 37, 62, 87]
    assert spread(list(range(3)), 5) == [0, 1, 2]


@pytest.mark.parametrize("text", ["0", "-3"])
def test_benchmark_counts_must_be_positive(text):
    """A zero or negative count is refused by argparse (one line, exit 2), not run as an empty measurement."""
    sys.path.insert(0, str(REPO))
    from benchmarks.bench_speedups import main

    with pytest.raises(SystemExit) as refused:
        main(["--score-batches", text])
    assert refused.value.code == 2
