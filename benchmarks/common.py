"""Shared helpers of the benchmark scripts: machine facts, real ML-1M prompts, timing, subprocess workers, tables.

Each benchmark runs every measured path in its own subprocess (`run_worker`), so peak memory
(`ru_maxrss`, or `torch.cuda.max_memory_allocated` on a GPU) belongs to that path alone. Run as programs, the
scripts restart once with jemalloc preloaded when it is installed, as the `cl3mrec` command does
(`trainers.cpu_allocator`; `CL3MREC_ALLOCATOR=system` measures glibc's malloc instead); the results header names
the allocator.
"""

import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trainers.cpu_allocator import OPT_OUT_VARIABLE, allocator_in_use  # noqa: E402

RESULTS_DIR = Path(os.environ.get("CL3MREC_BENCH_RESULTS_DIR", REPO / "benchmarks" / "results"))
DEFAULT_LLM = str(REPO / "runs" / "llm" / "smollm2-135m")  # where `make run` / `make bench` fetch SmolLM2-135M
DATA_DIR = Path(os.environ.get("DATA", REPO.parent / "shared" / "data" / "ml-1m"))  # CoLLM's ML-1M pickles
DEFAULT_DATA = str(DATA_DIR / "valid_small_ood2.pkl")
DEFAULT_TRAIN_DATA = str(DATA_DIR / "train_ood2.pkl")


def device():
    """`cuda` when available, else `cpu` (nothing here needs a GPU)."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cores() -> int:
    """CPU cores this process may run on (`nproc`)."""
    return len(os.sched_getaffinity(0))


def set_threads(threads: int | None) -> int:
    """Use `threads` intra-op threads (default: all cores, `nproc`); returns the number set."""
    import torch

    threads = threads or cores()
    torch.set_num_threads(threads)
    return threads


def machine_info() -> dict:
    """CPU model, cores, RAM, GPU (if any) and library versions, for the results header."""
    import peft
    import torch
    import transformers

    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    fields = {}  # first CPU's "key: value" lines
    for line in cpuinfo:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name") or platform.processor() or "unknown"
    flags = f" {fields.get('flags', '')} "
    isa = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16", "avx2") if f" {flag} " in flags]
    ram_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info = {
        "cpu": cpu,
        "cpu_isa": ", ".join(isa) or "n/a",
        "cores": cores(),
        "ram_gib": round(ram_gib, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "allocator": allocator_in_use(),
    }
    return info


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def add_data_arguments(parser, default: str, help_text: str) -> None:
    """`--data PATH` (a CoLLM pickle or one of our split files) and `--allow-pickle` (consent to unpickle it)."""
    parser.add_argument("--data", default=default, help=help_text)
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow unpickling a .pkl --data file (runs code from it: trusted files only)",
    )


def data_arguments(args) -> list[str]:
    """The `--data` / `--allow-pickle` arguments of `args` again, for a worker subprocess."""
    return ["--data", args.data] + (["--allow-pickle"] if args.allow_pickle else [])


def load_split(path: str, allow_pickle: bool = False):
    """A CoLLM pickle (only with `allow_pickle`) or one of our split files, as a `datasets.Dataset`."""
    from data_scripts.io import load_split_file

    return load_split_file(path, allow_pickle=allow_pickle)


def load_rows(path: str, count: int, seed: int = 0, allow_pickle: bool = False):
    """`count` rows (fixed random sample, `seed`) of a CoLLM pickle / our split, as a `datasets.Dataset`."""
    dataset = load_split(path, allow_pickle)
    count = min(count, len(dataset))
    return dataset.shuffle(seed=seed).select(range(count))


def random_mf_config(data):
    """Config of a randomly initialised MF encoder covering every user / item id of `data` (history items
    included); the benchmarks' speed does not depend on its training."""
    from data_scripts.schema import id_space
    from modeling_cl3mrec import CFRecConfig

    num_users, num_items = id_space({"rows": data.to_pandas()})
    return CFRecConfig(encoder_type="mf", num_users=num_users, num_items=num_items, hidden_size=64)


def peak_memory_mib() -> float:
    """Peak memory of this process: GPU allocator peak on CUDA, else the max resident set size."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function, repeats: int = 1) -> tuple[float, object]:
    """Best wall time (s) of `repeats` calls of `function()` and its last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        result = function()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def run_worker(script: Path, args: list[str], timeout: float = 1800, env: dict | None = None) -> dict:
    """Run `script --worker-out FILE args...` in a fresh interpreter (environment `env`, default this process's) and
    return the JSON it wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(script), "--worker-out", str(out), *args]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(f"worker {shlex.join(command)} failed:\n{completed.stderr[-4000:]}")
        return json.loads(out.read_text())


def write_worker_result(path: str, result: dict, loaded_rss_mib: float) -> None:
    """Write a worker's `result` + its peak memory and its RSS right after loading the model (`memory_cells`)."""
    memory = {"peak_mib": peak_memory_mib(), "loaded_rss_mib": loaded_rss_mib}
    Path(path).write_text(json.dumps({**result, **memory}))


def memory_cells(result: dict, info: dict) -> list:
    """Table cells "peak memory MiB" and "peak − after-load MiB" (RSS only: n/a on a GPU) of a worker result."""
    peak = result["peak_mib"]
    return [peak, peak - result["loaded_rss_mib"] if info["gpu"] == "none" else "n/a"]


MEMORY_HEADERS = ["peak memory MiB", "peak − after-load MiB"]


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def results_name(base: str, quick: bool, threads: int) -> str:
    """`<base>[_quick][_threads<N>]`: the thread count is named only when it is not all cores."""
    name = f"{base}_quick" if quick else base
    return name if threads == cores() else f"{name}_threads{threads}"


@dataclass
class Session:
    """One benchmark run in the parent process: machine facts, intra-op threads, load average at the start."""

    info: dict
    threads: int
    load_before: str

    @classmethod
    def start(cls, threads: int | None) -> "Session":
        info = machine_info()
        return cls(info, threads or info["cores"], load_average())

    def write(self, base: str, quick: bool, title: str, body: str) -> Path:
        """Write `benchmarks/results/<base>[_quick][_threads<N>][_system_malloc].md` (load average now = after the
        run; `_system_malloc`: a run that opted out of jemalloc with `CL3MREC_ALLOCATOR=system`)."""
        loads = (self.load_before, load_average())
        name = results_name(base, quick, self.threads)
        if os.environ.get(OPT_OUT_VARIABLE) == "system":
            name += "_system_malloc"
        path = write_results(name, title, body, self.info, loads, sys.argv)
        print(f"results written to {path}")
        return path


def write_results(name: str, title: str, body: str, info: dict, loads: tuple[str, str], argv: list[str]) -> Path:
    """Write `benchmarks/results/<name>.md`: header (machine, versions, date, command, load) + `body`."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    command = "python " + shlex.join([os.path.relpath(argv[0], REPO), *argv[1:]])
    header = [
        f"# {title}",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- command (from the repository root): `{command}`",
        f"- machine: {info['cpu']} ({info['cpu_isa']}), {info['cores']} cores, {info['ram_gib']} GiB RAM, "
        f"GPU: {info['gpu']}, memory allocator: {info['allocator']}",
        f"- versions: torch {info['torch']}, transformers {info['transformers']}, peft {info['peft']}, "
        f"python {info['python']}",
        f"- load average (1/5/15 min) before: {loads[0]}; after: {loads[1]} "
        "(the machine is shared: loads above the core count mean other jobs competed for the CPUs)",
        "",
    ]
    path = RESULTS_DIR / f"{name}.md"
    path.write_text("\n".join(header) + "\n" + body.rstrip() + "\n")
    return path
