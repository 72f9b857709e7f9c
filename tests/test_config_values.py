"""``trainers.training.config_values``: stage config values checked against the argument dataclasses' annotations."""

import pytest

from trainers.training.config_values import checked_values
from trainers.training.training_args import ARGUMENT_CLASSES

ACCEPTED = [
    ({"lora_r": 8}, {"lora_r": 8}),
    ({"learning_rate": "1e-4"}, {"learning_rate": 1e-4}),  # YAML 1.1 reads 1e-4 as a string
    ({"learning_rate": 3}, {"learning_rate": 3}),
    ({"save_strategy": False}, {"save_strategy": "no"}),  # YAML 1.1 reads a bare no as False
    ({"resume_from_checkpoint": True}, {"resume_from_checkpoint": "true"}),
    ({"max_train_samples": None}, {"max_train_samples": None}),
    ({"stage": "cie"}, {"stage": "cie"}),
    ({"lora_target_modules": ["q_proj"]}, {"lora_target_modules": ["q_proj"]}),
    ({"report_to": "none"}, {"report_to": "none"}),
    ({"bf16": True}, {"bf16": True}),
]
REFUSED = [
    ({"lora_r": "8"}, "lora_r must be an integer, got the string '8'"),
    ({"lora_r": 8.5}, "lora_r must be an integer, got 8.5"),
    ({"lora_r": None}, "lora_r has no value"),
    ({"learning_rate": True}, "learning_rate must be a number, got the boolean True"),
    ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
    ({"stage": "warmup"}, "stage must be one of ['lora', 'cie', 'joint']"),
    ({"lora_target_modules": "q_proj"}, "lora_target_modules must be a list"),
    ({"bf16": "yes"}, "bf16 must be true/false"),
]


@pytest.mark.parametrize(("values", "expected"), ACCEPTED)
def test_accepted_values_and_yaml_quirks(values, expected):
    assert checked_values(values, ARGUMENT_CLASSES, "stage.yaml") == expected


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_refused_values_name_the_file_and_the_field(values, message):
    with pytest.raises(ValueError, match="^stage.yaml: " + message.replace("[", r"\[").replace("(", r"\(")):
        checked_values(values, ARGUMENT_CLASSES, "stage.yaml")
