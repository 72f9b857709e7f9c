"""``trainers.run_state``: the completion mark and the newest complete checkpoint."""

import json

import numpy as np
import pytest

from trainers.run_state import (
    STAGE_COMPLETE_FILE,
    clear_stage_complete,
    mark_stage_complete,
    newest_complete_checkpoint,
    require_stage_complete,
)


def checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"weights")
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_the_newest_complete_checkpoint_wins_by_step_not_by_name(tmp_path):
    checkpoint(tmp_path, 9)
    checkpoint(tmp_path, 10)
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-10"


def test_half_written_checkpoints_are_skipped_and_removed_on_request(tmp_path):
    checkpoint(tmp_path, 2)
    checkpoint(tmp_path, 4, complete=False)
    truncated = checkpoint(tmp_path, 6)
    (truncated / "trainer_state.json").write_text('{"global_st')
    assert newest_complete_checkpoint(tmp_path).name == "checkpoint-2"
    assert (tmp_path / "checkpoint-4").exists()  # only looked at
    assert newest_complete_checkpoint(tmp_path, remove_incomplete=True).name == "checkpoint-2"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint-2"]


def test_no_checkpoint_or_no_folder_gives_none(tmp_path):
    assert newest_complete_checkpoint(tmp_path / "absent") is None
    checkpoint(tmp_path, 2, complete=False)
    assert newest_complete_checkpoint(tmp_path) is None


def test_the_completion_mark_is_required_written_and_cleared(tmp_path):
    with pytest.raises(ValueError, match=f"init_from={tmp_path / 'absent'}: no such folder"):
        require_stage_complete(tmp_path / "absent")
    with pytest.raises(ValueError, match=f"init_from={tmp_path}: that stage did not finish"):
        require_stage_complete(tmp_path)
    mark_stage_complete(tmp_path, {"stage": "lora", "eval_auc": np.float32(0.5)})
    require_stage_complete(tmp_path)
    assert json.loads((tmp_path / STAGE_COMPLETE_FILE).read_text()) == {"stage": "lora", "eval_auc": 0.5}
    clear_stage_complete(tmp_path)
    clear_stage_complete(tmp_path)  # absent: nothing to do
    assert not (tmp_path / STAGE_COMPLETE_FILE).exists()
