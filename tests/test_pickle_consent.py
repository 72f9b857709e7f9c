"""No code path unpickles a file without ``--allow-pickle`` / ``allow_pickle=True`` from the caller."""

import pickle
import re
import sys
from pathlib import Path

import pytest

from trainers.cli import main

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates ``path``: proof that the file's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def crafted_pickle_dir(tmp_path):
    folder = tmp_path / "collm"
    folder.mkdir()
    for split in ("train", "valid", "valid_small"):
        (folder / f"{split}_ood2.pkl").write_bytes(pickle.dumps(Payload(tmp_path / "code_ran")))
    return folder


@pytest.mark.parametrize("command", ["train", "tune"])
def test_cf_with_a_pickle_dir_refuses_without_allow_pickle(command, crafted_pickle_dir, tmp_path, caplog):
    config = tmp_path / "mf.yaml"
    config.write_text("model: {encoder_type: mf, hidden_size: 4}\n")
    argv = ["cf", command, "--config", str(config), "--data", str(crafted_pickle_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert not (tmp_path / "code_ran").exists()
    assert "--allow-pickle" in caplog.text and "train_ood2.pkl" in caplog.text


def test_benchmarks_refuse_a_pickle_without_allow_pickle(crafted_pickle_dir, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import common
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    with pytest.raises(ValueError, match="allow_pickle"):
        common.load_rows(str(crafted_pickle_dir / "valid_ood2.pkl"), 4)
    assert not (tmp_path / "code_ran").exists()


def test_no_library_code_grants_pickle_consent_itself():
    """``allow_pickle=True`` may only come from a caller (a flag); the library never hard-codes it, and never
    calls ``torch.load`` without ``weights_only=True``."""
    offenders = []
    for folder in ("trainers", "data_scripts", "benchmarks", "modeling_cl3mrec", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                unsafe = r"allow_pickle\s*=\s*True|pickle\.loads?\(|read_pickle\(|torch\.load\((?!.*weights_only=True)"
                if re.search(unsafe, line) and "def " not in line:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    allowed = {"data_scripts/collm_import.py"}  # the one reader, behind its allow_pickle check
    assert [line for line in offenders if line.split(":")[0] not in allowed] == []
