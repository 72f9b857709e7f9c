"""`cl3mrec train` / `pipeline` refuse bad settings before any work (one line, exit 2, nothing written), and
`train`'s stdout is its JSON answer only (the Trainer's log dicts go to stderr)."""

import json
import logging
from pathlib import Path

import pytest

from trainers.cli import main
from trainers.training.smoke_pipeline import read_seed_and_tolerance

REPO = Path(__file__).resolve().parents[1]


def refused(argv, caplog) -> str:
    """The one error line of ``cl3mrec argv``, which must exit 2."""
    with caplog.at_level(logging.ERROR, logger="cl3mrec"):
        assert main(argv) == 2
    errors = [record.getMessage() for record in caplog.records if record.name == "cl3mrec"]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("per_device_eval_batch_size=0", "per_device_eval_batch_size must be >= 1, got 0"),
        ("per_device_train_batch_size=0", "per_device_train_batch_size must be >= 1, got 0"),
        ("learning_rate=-1", "learning_rate must be >= 0, got -1"),
    ],
)
def test_bad_batch_sizes_and_learning_rates_are_refused_before_training(override, expected, tmp_path, caplog):
    config = tmp_path / "stage.yaml"
    config.write_text(f"llm_path: {tmp_path}/llm\ndata_dir: {tmp_path}/data\noutput_dir: {tmp_path}/out\n")
    assert expected in refused(["train", "--config", str(config), override], caplog)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("reload_atol", -1, "reload_atol must be a finite number >= 0, got -1"),
        ("reload_atol", "inf", "reload_atol must be a finite number >= 0, got inf"),  # would pass any reload
        ("reload_atol", True, "reload_atol must be a number, got the boolean True"),
        ("reload_atol", "fast", "reload_atol must be a number, got 'fast'"),
        ("seed", 1.7, "seed must be an integer, got 1.7"),
    ],
)
def test_a_bad_seed_or_reload_tolerance_is_refused_before_the_pipeline_runs(field, value, expected, tmp_path, caplog):
    config = tmp_path / "pipeline.yaml"
    spec = {"out_dir": str(tmp_path / "out"), "stages": [{"stage": "lora"}], field: value}
    config.write_text(json.dumps(spec))
    assert f"{config}: {expected}" in refused(["pipeline", "--config", str(config)], caplog)
    assert not (tmp_path / "out").exists()
    assert read_seed_and_tolerance({"reload_atol": "1e-4"}, "x.yaml") == (0, 1e-4)  # YAML reads 1e-4 as a string


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"stages": []}, "stages must be a non-empty list of stage mappings, got []"),
        ({"data": 5}, "data must be a mapping, got 5"),
        ({"data": {"seed": 3}}, "data.seed is not a field"),
        ({"cf": {"train": {"epochs": 0}}}, "cf: train.epochs must be an integer >= 1, got 0"),
        ({"cf": {"modle": {"encoder_type": "din"}}}, "cf: unknown key(s) ['modle'] ('modle': did you mean 'model'?)"),
        ({"llm": {"arhc": "qwen2"}}, "llm: unknown key(s) ['arhc']"),
        ({"cf": {"model": 5}}, "cf.model must be a mapping, got 5"),
        ({"defaults": {"lora_rr": 3}}, "stage 'lora': unknown argument(s) ['lora_rr'] ('lora_rr': did you mean"),
        ({"llm": {"arch": "gpt2"}}, "llm.arch must be one of ['llama', 'qwen2'], got 'gpt2'"),
        ({"stages": [{"stage": "lora"}, {"stage": "lora"}]},
         "stage 2 would write into out_dir/lora, another stage's folder; give it a `name:` of its own"),
        ({"stages": [{"stage": "lora", "name": "cf"}]}, "stage 1 would write into out_dir/cf, the pipeline's own"),
    ],
)
def test_a_badly_shaped_pipeline_config_is_refused_before_any_work(changes, expected, tmp_path, caplog):
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"out_dir": str(tmp_path / "out"), "stages": [{"stage": "lora"}], **changes}))
    message = refused(["pipeline", "--config", str(config)], caplog)
    assert f"{config}: {expected}" in message or f"{config}, {expected}" in message
    assert not (tmp_path / "out").exists()


def test_a_pipeline_into_a_folder_of_other_files_is_refused(tmp_path, caplog):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    config = tmp_path / "pipeline.yaml"
    config.write_text(json.dumps({"out_dir": str(tmp_path / "out"), "stages": [{"stage": "lora"}]}))
    message = refused(["pipeline", "--config", str(config)], caplog)
    assert f"{config}: out_dir={tmp_path / 'out'}: folder holds 1 unrelated entries" in message
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_llm_tiny_texts_from_a_file_is_refused(tmp_path, caplog):
    (tmp_path / "stats.json").write_text("{}")
    argv = ["llm", "tiny", "--out", str(tmp_path / "llm"), "--texts-from", str(tmp_path / "stats.json")]
    assert "stats.json: is a file, not a dataset directory" in refused(argv, caplog)
    assert not (tmp_path / "llm").exists()


def test_train_prints_its_metrics_as_json_and_nothing_else(synthetic_data_dir, tiny_llama_dir, tmp_path, capsys):
    overrides = [
        f"llm_path={tiny_llama_dir}", f"data_dir={synthetic_data_dir}", f"output_dir={tmp_path / 'run'}",
        f"text_cache_dir={tmp_path / 'cache'}", "max_train_samples=16", "max_eval_samples=32", "report_to=none",
        "logging_steps=1", "bf16=false", "save_strategy=no",
    ]
    assert main(["train", "--config", str(REPO / "configs/ml1m/tallrec_lora.yaml"), *overrides]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)  # the whole of stdout
    assert 0.0 <= answer["eval_auc"] <= 1.0 and answer["eval_n_rows"] == 32
    assert "'loss'" in captured.err  # the Trainer's step logs, moved off stdout
