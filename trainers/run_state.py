"""What is finished in a stage's output folder: the completion mark, and the newest complete checkpoint.

A stage writes ``stage_complete.json`` as its very last act (after the export and the model card), so a stage
that was killed, interrupted or ran out of disk at any point is never mistaken for a finished one: the runner
(``scripts/run_ml1m.sh``) and the next stage (``init_from``) both check that mark. A checkpoint is complete once
the Trainer has written ``trainer_state.json`` (its last file) and that file parses.
"""

import json
import logging
import re
import shutil
from pathlib import Path

from .atomic_io import write_text_atomic

logger = logging.getLogger(__name__)

STAGE_COMPLETE_FILE = "stage_complete.json"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def clear_stage_complete(output_dir) -> None:
    """Remove the completion mark before a stage (re)runs: until it ends, the folder is unfinished."""
    (Path(output_dir) / STAGE_COMPLETE_FILE).unlink(missing_ok=True)


def mark_stage_complete(output_dir, payload: dict) -> Path:
    """Write the completion mark (atomically); call it only after every output of the stage is in place.
    Values JSON cannot hold (NumPy / torch scalars) are written as numbers, anything else as text."""
    text = json.dumps(payload, indent=2, default=_plain)
    return write_text_atomic(Path(output_dir) / STAGE_COMPLETE_FILE, text + "\n")


def _plain(value):
    """A JSON-ready stand-in for ``value``: its float when it has one, else its text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def require_stage_complete(stage_dir, field: str = "init_from") -> None:
    """Raise ``ValueError`` unless ``stage_dir`` holds a finished stage (its completion mark)."""
    stage_dir = Path(stage_dir)
    if not stage_dir.is_dir():
        raise ValueError(f"{field}={stage_dir}: no such folder; give the output_dir of a finished training stage")
    if not (stage_dir / STAGE_COMPLETE_FILE).is_file():
        raise ValueError(
            f"{field}={stage_dir}: that stage did not finish (no {STAGE_COMPLETE_FILE}); rerun it to the end first "
            "(or give the output_dir of a `cl3mrec train` stage)"
        )


def checkpoint_is_complete(checkpoint: Path) -> bool:
    """True when the Trainer finished saving ``checkpoint`` (``trainer_state.json`` parses, same step)."""
    state_file = checkpoint / "trainer_state.json"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return False
    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    return match is not None and state.get("global_step") == int(match.group(1))


def newest_complete_checkpoint(output_dir, remove_incomplete: bool = False) -> Path | None:
    """The highest-step complete ``checkpoint-N`` in ``output_dir`` (``None`` when there is none).

    Checkpoints a kill left half-written are skipped with a warning, and deleted when ``remove_incomplete``
    (main process only), so that the rerun can save that step again from scratch.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    checkpoints = sorted(
        (path for path in output_dir.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)),
        key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if checkpoint_is_complete(checkpoint):
            return checkpoint
        logger.warning("%s: half-written checkpoint (no complete trainer_state.json), skipped", checkpoint)
        if remove_incomplete:
            shutil.rmtree(checkpoint, ignore_errors=True)
    return None
