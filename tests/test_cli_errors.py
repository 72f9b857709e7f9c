"""Bad input to ``cl3mrec`` subcommands: one clear log line naming the problem and exit code 2.

Every case here is a row of ``docs/errors.md`` (checked by ``test_every_case_is_in_the_docs_table``).
"""

import json
import logging
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from trainers.cli import main

REPO = Path(__file__).resolve().parents[1]

STAGE_YAML = "llm_path: {root}/llm\ndata_dir: {root}/no_such_data\noutput_dir: {root}/out\nuse_cpu: true\n"
SPLIT_ROW = {
    "user_id": 1, "item_id": 2, "label": 1, "timestamp": 0, "history_item_ids": [3], "history_titles": ["m3"],
    "title": "m2", "user_warm": True, "item_warm": True, "warm": True,
}


def stage_yaml(root, extra=""):
    path = root / "stage.yaml"
    path.write_text(STAGE_YAML.format(root=root) + extra)
    return str(path)


def collm_pickle(root):
    path = root / "valid_ood2.pkl"
    with open(path, "wb") as handle:
        pickle.dump(pd.DataFrame({"uid": [1], "iid": [2], "label": [1]}), handle)
    return str(path)


def parquet_without_title(root):
    path = root / "valid.parquet"
    pd.DataFrame([{key: value for key, value in SPLIT_ROW.items() if key != "title"}] * 2).to_parquet(path)
    return str(path)


def parquet_with_two_titles(root):
    path = root / "valid.parquet"
    pd.DataFrame([SPLIT_ROW, {**SPLIT_ROW, "label": 0, "title": "m2, renamed"}]).to_parquet(path)
    return str(path)


def text_model(root):
    """A model folder whose config is read first (a text-only model: no id space), so the split file's error shows."""
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text('{"model_type": "cl3mrec"}')
    return str(root / "model")


def cf_yaml(root):
    path = root / "cf.yaml"
    path.write_text("data: nowhere\nmodel: {encoder_type: mf}\ntrain: {learning_rate: 0.1}\n")
    return str(path)


CASES = {
    "cf train, unknown train key": (lambda root: ["cf", "train", "--config", cf_yaml(root)], "learning_rate"),
    "train, missing data dir": (lambda root: ["train", "--config", stage_yaml(root)], "no_such_data"),
    "train, unknown yaml key": (
        lambda root: ["train", "--config", stage_yaml(root, "lora_rank: 4\n")], "'lora_rank': did you mean 'lora_r'?"),
    "train, missing config": (lambda root: ["train", "--config", str(root / "nope.yaml")], "nope.yaml"),
    "evaluate, pickle without flag": (
        lambda root: ["evaluate", "--model", text_model(root), "--split-file", collm_pickle(root)],
        "allow",
    ),
    "evaluate, missing column": (
        lambda root: ["evaluate", "--model", text_model(root), "--split-file", parquet_without_title(root)],
        "title",
    ),
    "evaluate, one item with two titles": (
        lambda root: ["evaluate", "--model", text_model(root), "--split-file", parquet_with_two_titles(root)],
        "row 1: item 2 is titled 'm2, renamed', but 'm2' at",
    ),
    "evaluate, split spec without a folder": (
        lambda root: ["evaluate", "--model", text_model(root), "--split-file", "::valid"],
        "::valid: expected DATASET_DIR::SPLIT, e.g. runs/ml1m/data::valid",
    ),
    "evaluate, missing split file": (
        lambda root: ["evaluate", "--model", text_model(root), "--split-file", str(root / "gone.parquet")],
        "gone.parquet",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error_with_exit_code_2(case, tmp_path, caplog):
    make_argv, expected = CASES[case]
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        assert main(make_argv(tmp_path)) == 2
    errors = [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize(("argv", "expected"), [
    (["evaluate"], "cl3mrec evaluate: error: the following arguments are required: --model, --split-file"),
    (["evaluate", "--model", "m", "--split-file", "s", "--batch-size", "0"],
     "cl3mrec evaluate: error: argument --batch-size: must be an integer >= 1, got 0"),
    (["no-such-command"], "cl3mrec: error: argument COMMAND: invalid choice: 'no-such-command'"),
])
def test_a_bad_command_line_is_one_line_not_the_usage_block(argv, expected, capsys):
    with pytest.raises(SystemExit) as refused:
        main(argv)
    lines = capsys.readouterr().err.splitlines()
    assert refused.value.code == 2 and len(lines) == 1 and lines[0].startswith(expected), lines
    assert lines[0].endswith("--help` lists the options)"), lines


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as shown:
        main(["evaluate", "--help"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("usage: cl3mrec evaluate")


# ---- data import -------------------------------------------------------------------------------------------------

COLLM_ROW = {"uid": 1, "iid": 2, "label": 1, "timestamp": 0, "his": [0, 3], "his_title": ["", "m3"], "title": "m2",
             "flag": -1, "not_cold": 1}


def collm_split(root, name="train", rows=None, **changes):
    """A two-row CoLLM pickle (labels 1 and 0) with ``changes`` applied to the first row; the valid split's rows are
    rated later than train's (a split never repeats another's ratings)."""
    base = {**COLLM_ROW, "timestamp": 0 if name == "train" else 10}
    rows = rows or [{**base, **changes}, {**base, "uid": 2, "label": 0}]
    path = root / f"{name}.pkl"
    pd.DataFrame(rows).to_pickle(path)
    return path


def import_argv(root, train=None, out=None, allow=True, valid=None, valid_small=None):
    train = train or collm_split(root)
    valid = valid or collm_split(root, "valid")
    out = out or root / "data"
    return ["data", "import-collm", *(["--allow-pickle"] if allow else []), "--train", str(train),
            "--valid", str(valid), "--valid-small", str(valid_small or valid), "--out", str(out)]


def truncated_pickle(root):
    path = collm_split(root, "whole")
    broken = root / "truncated.pkl"
    broken.write_bytes(path.read_bytes()[:50])
    return broken


def csv_as_pickle(root):
    path = root / "train.pkl"
    pd.DataFrame([COLLM_ROW]).to_csv(path)
    return path


def list_pickle(root):
    path = root / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    return path


def empty_file(root):
    path = root / "empty.pkl"
    path.write_bytes(b"")
    return path


def a_file(root, name="taken"):
    path = root / name
    path.write_text("not a folder")
    return path


def unrelated_folder(root, *outputs):
    """A folder holding a user's ``notes.txt`` (and empty files named ``outputs``, as if beside a cl3mrec output)."""
    path = root / "mine"
    path.mkdir()
    (path / "notes.txt").write_text("keep me")
    for name in outputs:
        (path / name).write_text("{}")
    return path


DATA_CASES = {
    "import, pickle without --allow-pickle": (lambda r: import_argv(r, allow=False), "--allow-pickle"),
    "import, truncated pickle": (lambda r: import_argv(r, train=truncated_pickle(r)), "cannot be unpickled"),
    "import, CSV given as pickle": (lambda r: import_argv(r, train=csv_as_pickle(r)), "cannot be unpickled"),
    "import, pickle of a list": (lambda r: import_argv(r, train=list_pickle(r)), "expected a pickled pandas DataFrame"),
    "import, empty file": (lambda r: import_argv(r, train=empty_file(r)), "empty file"),
    "import, missing file": (lambda r: import_argv(r, train=r / "gone.pkl"), "gone.pkl: no such file"),
    "import, missing CoLLM column": (
        lambda r: import_argv(r, train=collm_split(r, rows=[{"uid": 1, "iid": 2}])), "missing CoLLM column"),
    "import, string labels": (lambda r: import_argv(r, train=collm_split(r, label="yes")), "must be 0/1, found 'yes'"),
    "import, one label class": (
        lambda r: import_argv(r, train=collm_split(r, rows=[COLLM_ROW, {**COLLM_ROW, "uid": 2}])), "single class"),
    "import, null title": (lambda r: import_argv(r, train=collm_split(r, title=None)), "item 2 has a null title"),
    "import, NaN history title": (
        lambda r: import_argv(r, train=collm_split(r, his_title=["", float("nan")])),
        "history item 3 has a null title"),
    "import, his / his_title lengths differ": (
        lambda r: import_argv(r, train=collm_split(r, his_title=["", "m3", "m4"])), "'his_title' has 3"),
    "import, null history": (
        lambda r: import_argv(r, train=collm_split(r, his=None)), "row 0: column 'his' must be a list, found None"),
    "import, history as a string": (
        lambda r: import_argv(r, train=collm_split(r, his="0 3")), "column 'his' must be a list, found '0 3'"),
    "import, fractional history id": (
        lambda r: import_argv(r, train=collm_split(r, his=[0, 3.7])), "column 'his' holds 3.7, not an integer item id"),
    "import, --valid is the train file": (
        lambda r: import_argv(r, valid=collm_split(r)), "[valid]: 2 of 2 rows repeat rows of"),
    "import, train and valid swapped": (
        lambda r: import_argv(r, train=collm_split(r, "valid"), valid=collm_split(r)),
        "are the train and valid files swapped?"),
    "import, --valid-small not a sample of valid": (
        lambda r: import_argv(r, valid_small=collm_split(r, "later", rows=[
            {**COLLM_ROW, "timestamp": 30}, {**COLLM_ROW, "uid": 2, "label": 0, "timestamp": 30}])),
        "[valid_small]: 2 of 2 rows are not rows of"),
    "import, id 0 (padding)": (lambda r: import_argv(r, train=collm_split(r, iid=0)), "outside the valid range"),
    "import, item id 10^9": (lambda r: import_argv(r, train=collm_split(r, iid=10**9)), "ids must be dense"),
    "import, --out is a file": (lambda r: import_argv(r, out=a_file(r)), "is a file, not a folder"),
    "import, --out under a file": (lambda r: import_argv(r, out=a_file(r) / "data"), "a file is in the way"),
    "import, --out holds unrelated files": (lambda r: import_argv(r, out=unrelated_folder(r)), "unrelated"),
    "import, --out holds a data set and a user's file": (
        lambda r: import_argv(r, out=unrelated_folder(r, "stats.json")), "the output replaces the folder whole"),
    "llm tiny, --out holds a model and a user's file": (
        lambda r: ["llm", "tiny", "--out", str(unrelated_folder(r, "config.json")), "--arch", "llama"],
        "1 entries this output does not write (e.g. ['notes.txt'])"),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_import_is_one_clear_error(case, tmp_path, caplog):
    make_argv, expected = DATA_CASES[case]
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        assert main(make_argv(tmp_path)) == 2
    errors = [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors
    assert not (tmp_path / "data" / "stats.json").exists()


# ---- cf, train and evaluate against a small real workspace --------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Synthetic data, a saved MF model and a tiny Llama (built once, a few seconds)."""
    from trainers.training.smoke_pipeline import prepare_pipeline_inputs

    root = tmp_path_factory.mktemp("errors")
    spec = {"data": {"num_users": 12, "num_items": 20, "interactions_per_user": 12},
            "cf": {"model": {"encoder_type": "mf", "hidden_size": 4, "max_history": 3}, "train": {"epochs": 1}}}
    prepare_pipeline_inputs(spec, root, seed=0)
    rows = [{"user_id": 1, "item_id": 2, "label": label, "timestamp": 0, "history_item_ids": [3],
             "history_titles": ["m3"], "title": "m2", "user_warm": True, "item_warm": True, "warm": True}
            for label in (1, 0)]
    pd.DataFrame(rows).to_parquet(root / "ok.parquet")
    return root


def train_yaml(root, ws, extra=""):
    path = root / "stage.yaml"
    path.write_text(
        f"llm_path: {ws / 'llm'}\ndata_dir: {ws / 'data'}\noutput_dir: {root / 'out'}\nuse_cpu: true\n"
        f"do_train: true\nmax_steps: 1\nreport_to: none\n{extra}"
    )
    return str(path)


def train_argv(root, ws, extra="", *overrides):
    return ["train", "--config", train_yaml(root, ws, extra), *overrides]


def cie_argv(root, ws, *overrides):
    return train_argv(root, ws, "stage: cie\ntemplate: collm_ml1m\n", f"cf_model_dir={ws / 'cf'}", *overrides)


def stage_folder(root, model):
    """A `cl3mrec train` output folder: the exported model under ``merged/``, none at its top."""
    import shutil

    shutil.copytree(model, root / "stage" / "merged")
    return root / "stage"


def copy_model(root, source, drop=(), truncate=None, config=None):
    """A copy of the model folder ``source`` without ``drop``, with ``truncate`` cut short, or another config."""
    import shutil

    target = root / f"model-{source.name}"
    shutil.copytree(source, target)
    for name in drop:
        (target / name).unlink()
    if truncate:
        data = (target / truncate).read_bytes()
        (target / truncate).write_bytes(data[: len(data) // 2])
    if config:
        (target / "config.json").write_text(json.dumps(config))
    return target


def unfinished_stage(root):
    path = root / "lora"
    path.mkdir()
    (path / "eval_results.json").write_text("{}")
    return path


def finished_stage_with_broken_adapter(root):
    path = root / "lora"
    path.mkdir()
    (path / "stage_complete.json").write_text("{}")
    (path / "adapter_model.safetensors").write_bytes(b"garbage" * 10)
    return path


def half_checkpoint(root):
    path = root / "out" / "checkpoint-2"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text('{"global_st')
    return path


def parquet_split(root, name, **changes):
    rows = [{"user_id": 1, "item_id": 2, "label": label, "timestamp": 0, "history_item_ids": [3],
             "history_titles": ["m3"], "title": "m2", "user_warm": True, "item_warm": True, "warm": True, **changes}
            for label in (1, 0)]
    path = root / f"{name}.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def truncated_copy(source, root):
    target = root / source.name
    target.write_bytes(source.read_bytes()[:200])
    return target


def evaluate_argv(ws, split=None, model=None, *extra):
    return ["evaluate", "--model", str(model or ws / "cf"), "--split-file", str(split or ws / "ok.parquet"), *extra]


def cf_yaml_for(root, body="model: {encoder_type: mf, hidden_size: 4}\ntrain: {epochs: 1}\n"):
    path = root / "cf.yaml"
    path.write_text(body)
    return str(path)


WORKSPACE_CASES = {
    # cf
    "cf train, broken YAML": (lambda r, w: ["cf", "train", "--config", cf_yaml_for(r, "model: [mf\n"), "--data",
                                            str(w / "data")], "cf.yaml"),
    "cf train, no data found": (lambda r, w: ["cf", "train", "--config", cf_yaml_for(r), "--data", str(r)],
                                "neither a saved dataset"),
    "cf train, config data path missing": (
        lambda r, w: ["cf", "train", "--config", cf_yaml_for(r, "data: gone/ml-1m\nmodel: {encoder_type: mf}\n")],
        "cf.yaml: data: gone/ml-1m does not exist under the working directory"),
    "cf train, --out holds unrelated files": (
        lambda r, w: ["cf", "train", "--config", cf_yaml_for(r), "--data", str(w / "data"), "--out",
                      str(unrelated_folder(r))], "unrelated"),
    "cf train, --out is an LLM folder": (
        lambda r, w: ["cf", "train", "--config", cf_yaml_for(r), "--data", str(w / "data"), "--out",
                      str(copy_model(r, w / "llm"))], "the output replaces the folder whole"),
    # train: config values
    "train, broken YAML": (lambda r, w: train_argv(r, w, "lora_r: [8\n"), "broken YAML at line"),
    "train, quoted number (lora_r: \"8\")": (
        lambda r, w: train_argv(r, w, 'lora_r: "8"\n'), "lora_r must be an integer"),
    "train, boolean for a number (learning_rate: true)": (
        lambda r, w: train_argv(r, w, "learning_rate: true\n"), "learning_rate must be a number"),
    "train, empty override (lora_r=)": (lambda r, w: train_argv(r, w, "", "lora_r="), "lora_r has no value"),
    "train, a word for an integer override": (
        lambda r, w: train_argv(r, w, "", "max_train_samples=abc"),
        "command-line override: max_train_samples must be an integer, got the string 'abc'; give a whole number"),
    "train, unreadable override": (lambda r, w: train_argv(r, w, "", "lora_r"), "cannot read override"),
    "train, unknown stage": (lambda r, w: train_argv(r, w, "stage: warmup\n"), "stage must be one of"),
    "train, num_train_epochs: -1": (
        lambda r, w: train_argv(r, w, "max_steps: -1\nnum_train_epochs: -1\n"), "num_train_epochs must be > 0"),
    "train, negative contrastive_weight": (
        lambda r, w: train_argv(r, w, "contrastive_weight: -1\n"), "contrastive_weight must be >= 0"),
    # train: folders
    "train, missing llm_path": (
        lambda r, w: train_argv(r, w, "", f"llm_path={r / 'no_llm'}"), "llm_path=" + "{root}/no_llm: no such folder"),
    "train, llm_path without weights": (
        lambda r, w: train_argv(r, w, "", f"llm_path={copy_model(r, w / 'llm', drop=['model.safetensors'])}"),
        "no weights"),
    "train, llm_path truncated safetensors": (
        lambda r, w: train_argv(r, w, "", f"llm_path={copy_model(r, w / 'llm', truncate='model.safetensors')}"),
        "corrupt or truncated safetensors"),
    "train, llm_path is a CF model": (
        lambda r, w: train_argv(r, w, "", f"llm_path={w / 'cf'}"), "not a language model"),
    "train, missing cf_model_dir": (
        lambda r, w: cie_argv(r, w, f"cf_model_dir={r / 'no_cf'}"), "cf_model_dir=" + "{root}/no_cf: no such folder"),
    "train, cf_model_dir is an LLM folder": (
        lambda r, w: cie_argv(r, w, f"cf_model_dir={w / 'llm'}"), "holds a 'llama' model, expected 'cl3mrec_cf'"),
    "train, placeholder template without cf_model_dir": (
        lambda r, w: train_argv(r, w, "stage: cie\ntemplate: collm_ml1m\n"), "set cf_model_dir"),
    "train, score fusion on a text-only stage": (
        lambda r, w: train_argv(r, w, "", "score_fusion=residual", "cf_features=embedding_bias"),
        "template 'tallrec_ml1m' is text-only (no CF placeholders), so cf_features, score_fusion would change nothing"),
    "train, init_from an unfinished stage": (
        lambda r, w: cie_argv(r, w, f"init_from={unfinished_stage(r)}"), "that stage did not finish"),
    "train, init_from with a corrupt adapter": (
        lambda r, w: train_argv(r, w, "", f"init_from={finished_stage_with_broken_adapter(r)}"),
        "adapter_model.safetensors: corrupt or truncated safetensors"),
    "train, output_dir holds unrelated files": (
        lambda r, w: train_argv(r, w, "", f"output_dir={unrelated_folder(r)}"), "unrelated"),
    "train, output_dir is a file": (lambda r, w: train_argv(r, w, "", f"output_dir={a_file(r)}"), "is a file"),
    "train, resume from a half-written checkpoint": (
        lambda r, w: train_argv(r, w, "", f"resume_from_checkpoint={half_checkpoint(r)}"), "not a complete checkpoint"),
    # evaluate
    "evaluate, string labels": (lambda r, w: evaluate_argv(w, parquet_split(r, "s", label="yes")), "must be 0/1"),
    "evaluate, null title": (lambda r, w: evaluate_argv(w, parquet_split(r, "t", title=None)), "null title"),
    "evaluate, null history": (
        lambda r, w: evaluate_argv(w, parquet_split(r, "h", history_item_ids=None)),
        "row 0: column 'history_item_ids' must be a list, found None"),
    "evaluate, fractional history id": (
        lambda r, w: evaluate_argv(w, parquet_split(r, "f", history_item_ids=[3.7])),
        "column 'history_item_ids' holds 3.7, not an integer item id"),
    "evaluate, warm flag as a string": (
        lambda r, w: evaluate_argv(w, parquet_split(r, "w", warm="False")),
        "row 0: column 'warm' must be true/false, found 'False'"),
    "evaluate, history id outside the model": (
        lambda r, w: evaluate_argv(w, parquet_split(r, "h", history_item_ids=[99])),
        "'history_item_ids' has id 99 outside"),
    "evaluate, user id outside the model": (
        lambda r, w: evaluate_argv(w, parquet_split(r, "u", user_id=500)), "'user_id' has id 500"),
    "evaluate, truncated Parquet file": (
        lambda r, w: evaluate_argv(w, truncated_copy(w / "ok.parquet", r)), "not a readable Parquet file"),
    "evaluate, CSV split file": (lambda r, w: evaluate_argv(w, a_file(r, "rows.csv")), "unknown split file type"),
    "evaluate, split file is a folder": (lambda r, w: evaluate_argv(w, r), "is a directory"),
    "evaluate, missing split of a dataset": (lambda r, w: evaluate_argv(w, f"{w / 'data'}::nope"), "no split 'nope'"),
    "evaluate, --model without config.json": (lambda r, w: evaluate_argv(w, None, r), "no config.json"),
    "evaluate, --compile on a CF model": (
        lambda r, w: evaluate_argv(w, None, None, "--compile"), "compile applies to LLM models"),
    "evaluate, --model a training output folder": (
        lambda r, w: evaluate_argv(w, None, stage_folder(r, w / "cf")), "no config.json; its exported model is"),
    "evaluate, --model without weights": (
        lambda r, w: evaluate_argv(w, None, copy_model(r, w / "cf", drop=["model.safetensors"])), "no weights"),
    "evaluate, --model truncated safetensors": (
        lambda r, w: evaluate_argv(w, None, copy_model(r, w / "cf", truncate="model.safetensors")),
        "corrupt or truncated safetensors"),
    "evaluate, --model of another library": (
        lambda r, w: evaluate_argv(w, None, copy_model(r, w / "cf", config={"model_type": "bert"})),
        "is not a cl3mrec model"),
    "evaluate, --output under a file": (
        lambda r, w: evaluate_argv(w, None, None, "--output", str(a_file(r) / "report.json")), "cannot be written"),
    "evaluate, --output is a folder": (lambda r, w: evaluate_argv(w, None, None, "--output", str(r)), "is a folder"),
    # pipeline
    "pipeline, config without stages": (
        lambda r, w: ["pipeline", "--config", cf_yaml_for(r, "out_dir: x\n")],
        "needs out_dir (or --out-dir) and stages"),
}


@pytest.mark.parametrize("case", list(WORKSPACE_CASES))
def test_bad_cf_train_evaluate_input_is_one_clear_error(case, workspace, tmp_path, caplog):
    make_argv, expected = WORKSPACE_CASES[case]
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        assert main(make_argv(tmp_path, workspace)) == 2
    errors = [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]
    expected = expected.replace("{root}", str(tmp_path))
    assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors


def test_one_line_on_stderr_exit_2_and_a_traceback_only_with_debug(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("lora_r: [8\n")
    command = [sys.executable, "-m", "trainers.cli", "train", "--config", str(config)]
    plain = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    lines = [line for line in plain.stderr.splitlines() if " ERROR " in line]
    assert len(lines) == 1 and "broken.yaml: broken YAML at line 2" in lines[0]
    debug = subprocess.run([command[0], "-m", "trainers.cli", "--debug", *command[3:]], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_every_case_is_in_the_docs_table():
    table = (REPO / "docs" / "errors.md").read_text()
    rows = set(re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE))
    cases = set(CASES) | set(DATA_CASES) | set(WORKSPACE_CASES)
    assert cases - rows == set(), "add these cases to docs/errors.md"


@pytest.mark.parametrize(("raised", "status", "expected"), [
    (KeyboardInterrupt(), 130, "interrupted; rerun the same command"),
    (RuntimeError("boom"), 1, "unexpected RuntimeError: boom (a bug: rerun with `cl3mrec --debug ...`"),
    (OSError(28, "No space left on device", "/data/x.arrow"), 2, "/data/x.arrow: no space left on the device"),
    (PermissionError(13, "Permission denied", "/srv/out"), 2, "/srv/out: permission denied; choose a path you can"),
])
def test_interrupts_bugs_and_full_disks_are_one_line_too(raised, status, expected, tmp_path, monkeypatch, caplog):
    from trainers.cli import evaluate_cli

    def fail(args):
        raise raised

    monkeypatch.setattr(evaluate_cli, "evaluate_command", fail)
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        assert main(["evaluate", "--model", str(tmp_path), "--split-file", "x.parquet"]) == status
    errors = [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]
    assert len(errors) == 1 and expected in errors[0], errors
