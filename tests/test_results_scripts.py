"""scripts/ml1m_results.py and scripts/paired_bootstrap.py: the results table and paired bootstraps of finished runs."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_scripts.io import load_dataset_dict
from trainers.inference.metrics import ranking_report
from trainers.inference.scoring import load_scorer

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args):
    command = [sys.executable, str(SCRIPTS / name), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def fake_run(run: Path, rows: np.ndarray, scores: np.ndarray, split: str = "valid_small") -> Path:
    """A folder shaped like a finished `cl3mrec train` output that scored ``rows`` of ``split``."""
    run.mkdir(parents=True)
    np.save(run / "eval_rows.npy", rows)
    np.save(run / "eval_scores.npy", scores)
    (run / "eval_results.json").write_text(json.dumps({split: {"auc": 0.5}}))
    return run


@pytest.fixture(scope="module")
def setup(synthetic_data_dir, synthetic_mf_dir, tmp_path_factory):
    """Fake runs on every other valid_small row: MF's logits plus noise, a noisier copy, and ``exported``: MF's
    logits plus noise, with MF itself as its ``merged/`` export (so its other-half scores are MF's)."""
    data = load_dataset_dict(synthetic_data_dir)
    small = data["valid_small"]
    rows = np.arange(0, len(small), 2)
    cf = load_scorer(synthetic_mf_dir).score(small)[rows]
    noise = np.random.default_rng(0).normal(size=(2, len(rows)))
    root = tmp_path_factory.mktemp("results")
    runs = {"close": fake_run(root / "close", rows, cf + 0.2 * noise[0]),
            "noisy": fake_run(root / "noisy", rows, cf + 2.0 * noise[1])}
    runs["exported"] = fake_run(root / "exported", rows, cf + 0.5 * noise[1])
    (runs["exported"] / "merged").symlink_to(synthetic_mf_dir, target_is_directory=True)
    return data, rows, cf, runs, root


def table_row(stdout: str, name: str) -> list[str]:
    line = next(line for line in stdout.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.split("|")[1:-1]]


def cell(report: dict, key: str = "auc") -> str:
    return f"{report[key]:.4f}"


def other_half_rows(data):
    small = data["valid_small"]
    small_keys = set(zip(small["user_id"], small["item_id"], small["timestamp"]))
    keys = zip(data["valid"]["user_id"], data["valid"]["item_id"], data["valid"]["timestamp"])
    return data["valid"].select([index for index, key in enumerate(keys) if key not in small_keys])


def test_cf_models_on_both_halves_of_valid(setup, synthetic_data_dir, synthetic_mf_dir, tmp_path):
    data, *_ = setup
    out = tmp_path / "table.md"
    result = run_script(
        "ml1m_results.py", "--data", synthetic_data_dir, "--model", f"MF={synthetic_mf_dir}",
        "--model", f"MF twice={synthetic_mf_dir},{synthetic_mf_dir}", "--compare", "MF twice:MF",
        "--other-half", "--resamples", "50", "--out", out,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rest = other_half_rows(data)
    assert 0 < len(rest) < len(data["valid"])
    scorer = load_scorer(synthetic_mf_dir)
    small_report = ranking_report(data["valid_small"]["user_id"], data["valid_small"]["label"],
                                  scorer.score(data["valid_small"]))
    rest_report = ranking_report(rest["user_id"], rest["label"], scorer.score(rest))
    cells = table_row(result.stdout, "MF")
    assert cells[2] == cell(small_report) and cells[3] == cell(small_report, "uauc")
    assert cells[-2:] == [cell(rest_report), cell(rest_report, "uauc")] != cells[2:4]
    assert table_row(result.stdout, "MF twice")[1] == "2"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["comparisons"]) == {"valid_small", "valid_rest"}
    assert out.read_text().strip() == result.stdout.strip()


def test_an_llm_run_is_scored_on_the_other_half_from_its_export(setup, synthetic_data_dir, synthetic_mf_dir, tmp_path):
    data, _, _, runs, _ = setup
    args = ["ml1m_results.py", "--data", synthetic_data_dir, "--model", f"MF={synthetic_mf_dir}",
            "--model", f"run={runs['exported']}", "--compare", "run:MF", "--other-half", "--resamples", "50"]
    result = run_script(*args, "--out", tmp_path / "table.md")
    assert result.returncode == 0, result.stderr[-2000:]
    small_diff, rest_diff = [line for line in result.stdout.splitlines() if line.startswith("| run − MF |")]
    assert rest_diff == "| run − MF | +0.0000 [+0.0000, +0.0000] | +0.0000 [+0.0000, +0.0000] |" != small_diff
    assert f"the other half of valid ({len(other_half_rows(data))} rows)" in result.stdout
    assert table_row(result.stdout, "run")[-2:] == table_row(result.stdout, "MF")[-2:]
    (cache,) = runs["exported"].glob("valid_rest_scores_*.npy")
    np.save(cache, np.zeros(len(other_half_rows(data))))  # a second call reads the cache, not the export
    again = run_script(*args, "--out", tmp_path / "again.md")
    assert again.returncode == 0 and table_row(again.stdout, "run")[-2:] == ["0.5000", "0.5000"]
    cache.write_bytes(cache.read_bytes()[:90])  # damaged outside the script: scored again, not a traceback
    third = run_script(*args, "--out", tmp_path / "third.md")
    assert third.returncode == 0 and "scoring again" in third.stderr
    assert table_row(third.stdout, "run")[-2:] == table_row(result.stdout, "run")[-2:]
    cache.unlink()


def test_llm_runs_and_cf_models_share_the_scored_rows(setup, synthetic_data_dir, synthetic_mf_dir, tmp_path):
    data, rows, cf, runs, _ = setup
    small = data["valid_small"].select(rows)
    result = run_script(
        "ml1m_results.py", "--data", synthetic_data_dir, "--model", f"MF={synthetic_mf_dir}",
        "--model", f"close={runs['close']}", "--model", f"noisy={runs['noisy']}", "--compare", "close:noisy",
        "--resamples", "50", "--out", tmp_path / "table.md",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"valid_small: {len(rows)} rows" in result.stdout
    for name, scores in (("MF", cf), ("close", np.load(runs["close"] / "eval_scores.npy"))):
        report = ranking_report(small["user_id"], small["label"], scores)
        assert table_row(result.stdout, name)[2:4] == [cell(report), cell(report, "uauc")]
    assert "| close − noisy | +" in result.stdout


def test_paired_bootstrap_matches_the_auc_difference(setup, synthetic_data_dir):
    data, rows, _, runs, _ = setup
    small = data["valid_small"].select(rows)
    result = run_script("paired_bootstrap.py", "--baseline", runs["noisy"], "--candidate", runs["close"],
                        "--data", synthetic_data_dir, "--resamples", "50")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    aucs = {name: ranking_report(small["user_id"], small["label"], np.load(run / "eval_scores.npy"))["auc"]
            for name, run in runs.items()}
    assert report["auc"]["observed"] == pytest.approx(aucs["close"] - aucs["noisy"]) and report["auc"]["observed"] > 0


def damage(path: Path, content: bytes | np.ndarray | None = None) -> None:
    """Replace the file at ``path`` by ``content`` (an array is saved as .npy), or cut it to half its bytes."""
    if isinstance(content, np.ndarray):
        np.save(path, content)
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2] if content is None else content)


def test_bad_runs_and_arguments_exit_2_with_one_line(setup, synthetic_data_dir, synthetic_mf_dir, tmp_path):
    _, rows, cf, runs, _ = setup
    on_valid = fake_run(tmp_path / "on_valid", rows, cf, split="valid")
    beyond = fake_run(tmp_path / "beyond", rows + 10_000, cf)
    with_nan = fake_run(tmp_path / "with_nan", rows, np.where(np.arange(len(rows)) % 5 == 3, np.nan, cf))
    with_inf = fake_run(tmp_path / "with_inf", rows, np.where(np.arange(len(rows)) == 2, -np.inf, cf))
    truncated, text = fake_run(tmp_path / "truncated", rows, cf), fake_run(tmp_path / "text", rows, cf)
    damage(truncated / "eval_scores.npy")
    damage(text / "eval_scores.npy", b"0.1,0.2\n")
    data, mf, close, out = synthetic_data_dir, f"MF={synthetic_mf_dir}", runs["close"], tmp_path / "x.md"
    bootstrap = ("paired_bootstrap.py", "--baseline", runs["noisy"], "--data", data, "--candidate")
    a_file = tmp_path / "stats.json"
    a_file.write_text("{}")
    cases = {
        "scored valid, not valid_small": ("ml1m_results.py", "--data", data, "--model", f"run={on_valid}",
                                          "--out", out),
        "scored another data folder": ("ml1m_results.py", "--data", data, "--model", f"run={beyond}", "--out", out),
        "no such dataset directory": ("ml1m_results.py", "--data", tmp_path / "nope", "--model", mf, "--out", out),
        "expected CANDIDATE:BASELINE, two of MF": ("ml1m_results.py", "--data", data, "--model", mf,
                                                   "--compare", "MF:LGCN", "--out", out),
        "the baseline needs 1 seed or as many as the candidate (1), got 2": (
            "ml1m_results.py", "--data", data, "--model", f"one={close}", "--model", f"two={close},{close}",
            "--compare", "one:two", "--out", out),
        "name the Markdown report": ("ml1m_results.py", "--data", data, "--model", mf, "--out", tmp_path / "x.json"),
        "not a finished `cl3mrec train` folder": ("paired_bootstrap.py", "--baseline", close, "--candidate",
                                                  tmp_path, "--data", data),
        "no such folder": ("paired_bootstrap.py", "--baseline", close, "--candidate", tmp_path / "nope",
                           "--data", data),
        "scored valid, not valid_small ": ("paired_bootstrap.py", "--baseline", close, "--candidate", on_valid,
                                           "--data", data),
        "no nope split": (*bootstrap, close, "--split", "nope"),
        "the baseline needs 1 seed or as many as the candidate (2), got 3": (
            "paired_bootstrap.py", "--baseline", close, close, close, "--candidate", close, close, "--data", data),
        "--model name 'MF' given twice": ("ml1m_results.py", "--data", data, "--model", mf, "--model",
                                          f"MF={close}", "--out", out),
        "--model name 'a:b': a name cannot hold ':' or '|'": ("ml1m_results.py", "--data", data, "--model",
                                                              f"a:b={close}", "--out", out),
        "--compare 'MF:MF': compares a model with itself": ("ml1m_results.py", "--data", data, "--model", mf,
                                                            "--compare", "MF:MF", "--out", out),
        "--compare 'run:MF' given twice": ("ml1m_results.py", "--data", data, "--model", mf, "--model",
                                           f"run={close}", "--compare", "run:MF", "--compare", "run:MF",
                                           "--out", out),
        f"{with_nan}/eval_scores.npy: row 3 (valid_small row {rows[3]}) is nan; scores must be finite (": (
            "ml1m_results.py", "--data", data, "--model", mf, "--model", f"run={close},{with_nan}", "--out", out),
        f"{with_inf}/eval_scores.npy: row 2 (valid_small row {rows[2]}) is -inf": (*bootstrap, with_inf),
        f"{truncated}/eval_scores.npy: not a readable .npy array (": (*bootstrap, truncated),
        f"{text}/eval_scores.npy: not a readable .npy array (no NumPy header": (*bootstrap, text),
        f"{a_file}: is a file, not a dataset directory": ("paired_bootstrap.py", "--baseline", runs["noisy"],
                                                                  "--candidate", close, "--data", a_file),
        "--baseline and --candidate name the same run folders": ("paired_bootstrap.py", "--baseline", close,
                                                                 "--candidate", close, "--data", data),
    }
    for message, args in cases.items():
        result = run_script(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error:") and message.strip() in lines[0], (args, lines)
    for args in (("ml1m_results.py", "--data", data, "--model", mf, "--out", out, "--resamples", "0"),
                 (*bootstrap, close, "--resamples", "-5")):
        result = run_script(*args)  # argparse's refusal: one line, no usage block
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, (args, result.stderr[-2000:])
        assert lines[0].startswith(f"{args[0]}: error: argument --resamples: must be an integer >= 1, got {args[-1]}")
    assert not list(tmp_path.glob("x.*"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("eval_scores.npy", b"", "not a readable .npy array (empty file)"),
        ("eval_rows.npy", None, "not a readable .npy array (EOF: reading array header"),
        ("eval_scores.npy", np.array([None, 0.5], dtype=object), "not a readable .npy array (Object arrays"),
        ("eval_rows.npy", np.array(["3", "7"]), "expected integer row numbers, found dtype <U1"),
        ("eval_scores.npy", np.array([0.5, 1 + 2j]), "expected real-valued scores, found dtype complex128"),
        ("eval_scores.npy", np.array([0.5, np.inf]), "row 1 (valid_small row 7) is inf; scores must be finite"),
    ],
)
def test_unreadable_or_non_finite_eval_arrays_are_refused_naming_the_file(tmp_path, name, content, message):
    from trainers.model_dirs import read_eval_scores

    run = fake_run(tmp_path / "run", np.array([3, 7]), np.array([0.5, 0.25]))
    damage(run / name, content)
    with pytest.raises(ValueError, match="^" + re.escape(f"{run / name}: {message}")) as error:
        read_eval_scores(run, "--run", num_rows=10)
    assert "\n" not in str(error.value)
