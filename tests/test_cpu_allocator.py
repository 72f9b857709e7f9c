"""The ``cl3mrec`` command's jemalloc restart: when it happens, what it sets, and a real restart in a subprocess."""

import os
import subprocess
import sys

import pytest

from trainers.cpu_allocator import (
    MALLOC_CONF,
    RESTARTED_VARIABLE,
    find_jemalloc,
    jemalloc_environment,
    library_dirs,
    system_malloc_environment,
)


@pytest.fixture
def fake_prefix(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libjemalloc.so.2").write_bytes(b"")
    return tmp_path


def test_restart_environment_preloads_jemalloc_before_other_libraries(fake_prefix):
    environment = jemalloc_environment({"CONDA_PREFIX": str(fake_prefix), "LD_PRELOAD": "libother.so"}, "linux")
    assert environment["LD_PRELOAD"] == f"{fake_prefix}/lib/libjemalloc.so.2:libother.so"
    assert environment["MALLOC_CONF"] == MALLOC_CONF and environment[RESTARTED_VARIABLE] == "1"
    assert environment["CONDA_PREFIX"] == str(fake_prefix)  # the rest of the environment is kept
    kept = jemalloc_environment({"CONDA_PREFIX": str(fake_prefix), "MALLOC_CONF": "narenas:1"}, "linux")
    assert kept["MALLOC_CONF"] == "narenas:1" and kept["LD_PRELOAD"].endswith("libjemalloc.so.2")


@pytest.mark.parametrize(
    "extra, platform",
    [
        ({"CL3MREC_ALLOCATOR": "system"}, "linux"),
        ({RESTARTED_VARIABLE: "1"}, "linux"),
        ({"LD_PRELOAD": "/opt/lib/libjemalloc.so"}, "linux"),
        ({}, "darwin"),
    ],
)
def test_no_restart_when_opted_out_done_already_or_not_linux(fake_prefix, extra, platform):
    assert jemalloc_environment({"CONDA_PREFIX": str(fake_prefix), **extra}, platform) is None


def test_system_malloc_environment_undoes_a_restart(fake_prefix):
    restarted = jemalloc_environment({"CONDA_PREFIX": str(fake_prefix), "LD_PRELOAD": "libother.so", "A": "1"}, "linux")
    environment = system_malloc_environment(restarted)
    kept = {"CONDA_PREFIX": str(fake_prefix), "LD_PRELOAD": "libother.so", "A": "1"}
    assert environment == {**kept, "CL3MREC_ALLOCATOR": "system"}
    assert jemalloc_environment(environment, "linux") is None
    own_conf = system_malloc_environment({"LD_PRELOAD": "/l/libjemalloc.so.2", "MALLOC_CONF": "narenas:1"})
    assert own_conf == {"MALLOC_CONF": "narenas:1", "CL3MREC_ALLOCATOR": "system"}  # a user's own setting stays


def test_library_search(fake_prefix, tmp_path_factory):
    assert find_jemalloc([str(tmp_path_factory.mktemp("empty")), str(fake_prefix / "lib")]).endswith("libjemalloc.so.2")
    assert find_jemalloc([str(tmp_path_factory.mktemp("empty"))]) is None
    assert library_dirs({"CONDA_PREFIX": "/c"})[:2] == [os.path.join(sys.prefix, "lib"), "/c/lib"]


SYSTEM_JEMALLOC = find_jemalloc(library_dirs(os.environ))


@pytest.mark.skipif(SYSTEM_JEMALLOC is None or not sys.platform.startswith("linux"), reason="jemalloc not installed")
@pytest.mark.parametrize("opt_out, expected", [(None, "jemalloc"), ("system", "system malloc")])
def test_a_real_restart_runs_the_same_command_with_jemalloc(opt_out, expected):
    code = (
        "import sys; from trainers.cpu_allocator import allocator_in_use, restart_with_jemalloc\n"
        "print('start', flush=True); restart_with_jemalloc(); print(allocator_in_use(), sys.argv[1:])"
    )
    environment = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", RESTARTED_VARIABLE)}
    if opt_out:
        environment["CL3MREC_ALLOCATOR"] = opt_out
    result = subprocess.run(
        [sys.executable, "-c", code, "an argument"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    started = 2 if opt_out is None else 1  # the restarted process runs the code again from the top
    assert result.stdout.count("start") == started
    assert result.stdout.splitlines()[-1] == f"{expected} ['an argument']"
