"""Bad values in a CF config (``cl3mrec cf train`` / ``cf tune``, the pipeline's ``cf:`` section, a saved CF folder):
one clear log line naming the file, the field and the value, and exit status 2 — never a crash or a silent default.
"""

import json
import logging
import shutil

import pytest

from trainers.cf_training import train_cf_model
from trainers.cli import main

MF_YAML = """\
model:
  encoder_type: mf
  hidden_size: 4
  use_bias: true
train:
  lr: 0.003
  weight_decay: 0.0001
  batch_size: 64
  epochs: 1
  patience: 5
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small synthetic dataset (a second or two to write)."""
    from data_scripts.synthetic import generate_synthetic

    path = tmp_path_factory.mktemp("cf_errors") / "data"
    generate_synthetic(path, num_users=12, num_items=20, interactions_per_user=12, seed=0)
    return path


def cf_yaml(root, old="", new="", body=MF_YAML):
    """``body`` with ``old`` replaced by ``new``, written to ``root/cf.yaml``."""
    assert old in body
    path = root / "cf.yaml"
    path.write_text(body.replace(old, new) if old else body)
    return path


def tune_yaml(root, search):
    """A popularity model (fitted, not trained: fast) with the ``search:`` lines ``search``."""
    return cf_yaml(root, body="model: {encoder_type: popularity}\ntrain: {epochs: 1}\nsearch:\n" + search)


def run(argv, caplog) -> tuple[int, list]:
    """``(exit status, error lines)`` of ``cl3mrec argv`` run in this process."""
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        status = main([str(arg) for arg in argv])
    return status, [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]


TRAIN_CASES = {
    "unknown model key": (("hidden_size: 4", "hiden_size: 4"),
                          "unknown model field(s) ['hiden_size'] ('hiden_size': did you mean 'hidden_size'?)"),
    "string boolean": (("use_bias: true", 'use_bias: "no"'), "model.use_bias must be true/false, got 'no'"),
    "model not a mapping": (("model:\n  encoder_type: mf\n  hidden_size: 4\n  use_bias: true\n", "model: mf\n"),
                            "'model' must be a mapping"),
    "hidden_size 0": (("hidden_size: 4", "hidden_size: 0"),
                      "model: CFRecConfig.hidden_size must be an int >= 1, got 0"),
    "mlp sizes not a list": (("use_bias: true", "use_bias: true\n  mlp_hidden_sizes: 64"),
                             "CFRecConfig.mlp_hidden_sizes must be a list of positive ints, got 64"),
    "negative patience": (("patience: 5", "patience: -1"), "train.patience must be an integer >= 1, got -1"),
    "batch_size 0": (("batch_size: 64", "batch_size: 0"), "train.batch_size must be an integer >= 1, got 0"),
    "epochs 0": (("epochs: 1", "epochs: 0"), "train.epochs must be an integer >= 1, got 0"),
    "negative epochs": (("epochs: 1", "epochs: -3"), "train.epochs must be an integer >= 1, got -3"),
    "fractional epochs": (("epochs: 1", "epochs: 2.5"), "train.epochs must be an integer, got 2.5"),
    "boolean epochs": (("epochs: 1", "epochs: true"), "train.epochs must be an integer, got the boolean True"),
    "lr not a number": (("lr: 0.003", "lr: fast"), "train.lr must be a number, got 'fast'"),
    "negative lr": (("lr: 0.003", "lr: -0.003"), "train.lr must be a finite number > 0.0, got -0.003"),
    "NaN lr": (("lr: 0.003", "lr: .nan"), "train.lr must be a finite number > 0.0, got nan"),
    "negative weight_decay as 1e-4 text": (("weight_decay: 0.0001", "weight_decay: -1e-4"),
                                           "train.weight_decay must be a finite number >= 0.0, got -0.0001"),
    "unknown selection split": (("patience: 5", "patience: 5\n  selection_split: test"),
                                "train.selection_split must be one of ['valid', 'valid_small'], got 'test'"),
    "unknown train key": (("lr: 0.003", "lrate: 0.003"), "unknown train field(s) ['lrate']"),
    "seed not an integer": (("model:", "seed: abc\nmodel:"), "seed must be an integer, got the string 'abc'"),
}


def assert_refused_before_any_data(command: str, config, expected: str, tmp_path, caplog) -> None:
    """``cl3mrec cf <command>`` exits 2 with one line starting with the config's path and holding ``expected``,
    before any data is read (its --data folder does not exist) and without writing --out."""
    argv = ["cf", command, "--config", config, "--data", tmp_path / "no_data", "--out", tmp_path / "o"]
    status, errors = run(argv, caplog)
    assert status == 2
    assert len(errors) == 1 and errors[0].startswith(f"{config}: ") and expected in errors[0], errors
    assert "\n" not in errors[0] and not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_bad_cf_train_value_is_one_line_naming_file_and_field(case, tmp_path, caplog):
    (old, new), expected = TRAIN_CASES[case]
    assert_refused_before_any_data("train", cf_yaml(tmp_path, old, new), expected, tmp_path, caplog)


TUNE_CASES = {
    "scalar instead of a list": (
        "  model.popularity_smoothing: 5.0\n",
        "search key 'model.popularity_smoothing' needs a non-empty list of values to try, got 5.0",
    ),
    "empty list": (
        "  model.popularity_smoothing: []\n",
        "search key 'model.popularity_smoothing' needs a non-empty list of values to try, got []",
    ),
    "unknown search key": ("  model.popularity_smoothin: [0.0, 1.0]\n",
                           "search key 'model.popularity_smoothin': unknown model field(s) ['popularity_smoothin'] "
                           "('popularity_smoothin': did you mean 'popularity_smoothing'?)"),
    "unknown train search key": ("  train.learning_rate: [0.1]\n",
                                 "search key 'train.learning_rate': unknown train field(s) ['learning_rate']"),
    "bad train value": ("  train.lr: [0.1, -1]\n", "search: train.lr must be a finite number > 0.0, got -1"),
    "bad model value": ("  model.use_bias: [true, 'no']\n", "search: model.use_bias must be true/false, got 'no'"),
    "bad model combination": ("  model.encoder_type: [mf, sasrec]\n  model.num_heads: [1, 3]\n",
                              "search {'model.encoder_type': 'mf', 'model.num_heads': 3}: model: "
                              "CFRecConfig.hidden_size (64) must be divisible by num_heads (3)"),
}


@pytest.mark.parametrize("case", list(TUNE_CASES))
def test_bad_cf_tune_search_is_one_line_naming_the_key(case, tmp_path, caplog):
    search, expected = TUNE_CASES[case]
    assert_refused_before_any_data("tune", tune_yaml(tmp_path, search), expected, tmp_path, caplog)


def test_weight_decay_written_1e_4_trains_as_the_number(data_dir, tmp_path, caplog, capsys):
    # PyYAML reads `1e-4` (no dot) as the string '1e-4'; it must reach Adam as 0.0001.
    config = cf_yaml(tmp_path, "weight_decay: 0.0001\n", "weight_decay: 1e-4\n  bias_weight_decay: 1e-5\n")
    status, errors = run(["cf", "train", "--config", config, "--data", data_dir, "--out", tmp_path / "mf"], caplog)
    assert (status, errors) == (0, [])
    train_args = json.loads((tmp_path / "mf" / "metrics.json").read_text())["train_args"]
    assert train_args["weight_decay"] == 1e-4 and train_args["bias_weight_decay"] == 1e-5


def test_tune_search_values_written_1e_4_are_numbers(data_dir, tmp_path, caplog, capsys):
    config = tune_yaml(tmp_path, "  train.weight_decay: [1e-4, 0.0]\n")
    status, errors = run(["cf", "tune", "--config", config, "--data", data_dir, "--out", tmp_path / "tune"], caplog)
    assert (status, errors) == (0, [])
    results = json.loads((tmp_path / "tune" / "search.json").read_text())["results"]
    assert sorted(row["overrides"]["train.weight_decay"] for row in results) == [0.0, 1e-4]


@pytest.mark.parametrize(("train_args", "expected"), [
    ({"epochs": 0}, "cf: train.epochs must be an integer >= 1, got 0"),
    ({"weight_decay": "1e-4x"}, "cf: train.weight_decay must be a number, got '1e-4x'"),
    ({"lr_decay": 0.1}, "cf: unknown train field(s) ['lr_decay']"),
])
def test_train_cf_model_checks_its_fields_first(train_args, expected):
    # The pipeline's `cf:` section (trainers/training/smoke_pipeline.py) goes through train_cf_model directly.
    with pytest.raises(ValueError) as error:
        train_cf_model({"encoder_type": "mf"}, train_args, splits={}, num_users=3, num_items=3, seed=0)
    assert str(error.value).startswith(expected)


def test_pipeline_cf_section_with_epochs_0_is_refused(tmp_path):
    from trainers.training.smoke_pipeline import prepare_pipeline_inputs

    spec = {"data": {"num_users": 12, "num_items": 20, "interactions_per_user": 12},
            "cf": {"model": {"encoder_type": "mf", "hidden_size": 4}, "train": {"epochs": 0}}}
    with pytest.raises(ValueError, match="train.epochs must be an integer >= 1, got 0"):
        prepare_pipeline_inputs(spec, tmp_path, seed=0)
    assert not (tmp_path / "cf").exists()


def test_evaluate_cf_folder_with_weights_of_another_size(data_dir, tmp_path, caplog, capsys):
    # config.json says hidden_size 2, the weights are 4 wide: one line naming the folder and the tensor shapes.
    assert run(["cf", "train", "--config", cf_yaml(tmp_path), "--data", data_dir, "--out", tmp_path / "mf"],
               caplog)[0] == 0
    folder = tmp_path / "mf32"
    shutil.copytree(tmp_path / "mf", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 2}))
    caplog.clear()
    status, errors = run(["evaluate", "--model", folder, "--split-file", f"{data_dir}::valid_small"], caplog)
    assert status == 2 and len(errors) == 1 and "\n" not in errors[0], errors
    assert str(folder) in errors[0] and "encoder.user_embedding.weight [13, 4] vs [13, 2]" in errors[0], errors
