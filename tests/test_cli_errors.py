"""Bad input to ``cl3mrec`` subcommands: one clear log line naming the problem and exit code 2."""

import logging
import pickle

import pandas as pd
import pytest

from trainers.cli import main

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


def cf_yaml(root):
    path = root / "cf.yaml"
    path.write_text("data: nowhere\nmodel: {encoder_type: mf}\ntrain: {learning_rate: 0.1}\n")
    return str(path)


CASES = {
    "cf train, unknown train key": (lambda root: ["cf", "train", "--config", cf_yaml(root)], "learning_rate"),
    "train, missing data dir": (lambda root: ["train", "--config", stage_yaml(root)], "no_such_data"),
    "train, unknown yaml key": (lambda root: ["train", "--config", stage_yaml(root, "lora_rank: 4\n")], "lora_rank"),
    "train, missing config": (lambda root: ["train", "--config", str(root / "nope.yaml")], "nope.yaml"),
    "evaluate, pickle without flag": (
        lambda root: ["evaluate", "--model", str(root), "--split-file", collm_pickle(root)],
        "allow",
    ),
    "evaluate, missing column": (
        lambda root: ["evaluate", "--model", str(root), "--split-file", parquet_without_title(root)],
        "title",
    ),
    "evaluate, missing split file": (
        lambda root: ["evaluate", "--model", str(root), "--split-file", str(root / "gone.parquet")],
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
