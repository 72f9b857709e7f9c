"""``cl3mrec train --help`` lists every argument field of a stage with its help text."""

import dataclasses

import pytest

from trainers.cli import main
from trainers.training.training_args import ARGUMENT_CLASSES


def test_train_help_lists_every_field_with_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo the formatter's line wrapping
    for cls in ARGUMENT_CLASSES:
        assert f"{cls.__name__} (" in text
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            assert f"--{field.name}" in text, field.name
            help_text = field.metadata.get("help")
            if help_text:
                assert " ".join(help_text.split())[:40] in text, field.name
