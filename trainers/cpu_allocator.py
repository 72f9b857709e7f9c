"""jemalloc for CPU runs: the ``cl3mrec`` command restarts itself once with jemalloc preloaded when it is installed.

PyTorch's CPU tensors come straight from ``malloc``. Under the ever-changing shapes of length-grouped batches,
glibc's heap fragments: a stage-``lora`` training run on 2 cores slowed from 2.8 s to 5.7 s per step over 400
steps, with a quarter of its time in glibc's ``_int_malloc`` (``perf``); jemalloc keeps allocation flat
(``benchmarks/results/allocator.md``). PyTorch's own CPU launcher (``torch.backends.xeon.run_cpu
--enable-jemalloc``) preloads it the same way.

``CL3MREC_ALLOCATOR=system`` keeps glibc's ``malloc``. Nothing changes where jemalloc is not installed
(``apt install libjemalloc2``, ``conda install -c conda-forge jemalloc``), outside Linux, or when ``LD_PRELOAD``
already names it.
"""

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path

OPT_OUT_VARIABLE = "CL3MREC_ALLOCATOR"  # "system": keep glibc malloc
RESTARTED_VARIABLE = "CL3MREC_ALLOCATOR_RESTARTED"  # set in the restarted process: never restart twice
# PyTorch's setting for jemalloc in torch.backends.xeon.run_cpu: keep freed pages instead of returning them.
MALLOC_CONF = (
    "oversize_threshold:1,background_thread:true,metadata_thp:auto,dirty_decay_ms:9000000000,muzzy_decay_ms:9000000000"
)


def library_dirs(environ: Mapping[str, str]) -> list[str]:
    """Where a jemalloc shared library is looked for: this Python's prefix, conda, then the system's library dirs."""
    prefixes = [sys.prefix, environ.get("CONDA_PREFIX", ""), environ.get("VIRTUAL_ENV", "")]
    dirs = [str(Path(prefix, "lib")) for prefix in prefixes if prefix]
    system = ["/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
    return dirs + system


def find_jemalloc(dirs: list[str]) -> str | None:
    """Path of the first ``libjemalloc.so*`` in ``dirs``, or None."""
    for directory in dirs:
        found = sorted(glob.glob(os.path.join(directory, "libjemalloc.so*")))
        if found:
            return found[0]
    return None


def jemalloc_environment(environ: Mapping[str, str], platform: str = sys.platform) -> dict[str, str] | None:
    """The environment to restart with (``LD_PRELOAD`` + ``MALLOC_CONF``), or None when no restart is wanted:
    not Linux, opted out, restarted already, jemalloc already preloaded, or not installed."""
    if not platform.startswith("linux") or environ.get(OPT_OUT_VARIABLE) == "system":
        return None
    if environ.get(RESTARTED_VARIABLE) or allocator_in_use(environ) == "jemalloc":
        return None
    library = find_jemalloc(library_dirs(environ))
    if library is None:
        return None
    preload = ":".join(filter(None, [library, environ.get("LD_PRELOAD", "")]))
    malloc_conf = environ.get("MALLOC_CONF", MALLOC_CONF)
    return {**environ, "LD_PRELOAD": preload, "MALLOC_CONF": malloc_conf, RESTARTED_VARIABLE: "1"}


def restart_with_jemalloc() -> None:
    """Replace this process by the same command line with jemalloc preloaded (same pid), when
    :func:`jemalloc_environment` asks for it; return otherwise. Call it before any work starts."""
    environment = jemalloc_environment(os.environ)
    if environment is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, environment)


def allocator_in_use(environ: Mapping[str, str] = os.environ) -> str:
    """``"jemalloc"`` when this process runs with jemalloc preloaded, else ``"system malloc"``."""
    return "jemalloc" if "jemalloc" in environ.get("LD_PRELOAD", "") else "system malloc"


def system_malloc_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` for a child process that must run on glibc's malloc: jemalloc taken out of ``LD_PRELOAD`` (with
    the settings a restart added) and the opt-out set, so that it does not restart onto jemalloc either."""
    environment = {key: value for key, value in environ.items() if key not in (RESTARTED_VARIABLE, "LD_PRELOAD")}
    if environ.get("MALLOC_CONF") == MALLOC_CONF:
        del environment["MALLOC_CONF"]
    preload = [library for library in environ.get("LD_PRELOAD", "").split(":") if library and "jemalloc" not in library]
    if preload:
        environment["LD_PRELOAD"] = ":".join(preload)
    return {**environment, OPT_OUT_VARIABLE: "system"}
