"""A wheel built from the sources ships every subpackage and the package data that installed code reads (the bundled
prompt templates, the model-card template, the metric cards)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "modeling_cl3mrec", "trainers", "data_scripts")


def test_wheel_ships_the_bundled_prompt_templates(tmp_path):
    source = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    wheel_dir = tmp_path / "whl"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir)]
    result = subprocess.run([*command, str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = wheel_dir.glob("cl3mrec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"trainers/prompts/{path.name}" for path in (ROOT / "trainers" / "prompts").glob("*.txt")}
    assert len(templates) == 4 and templates <= names
    assert {"trainers/hub/model_card_template.md", "trainers/inference/metric_modules/auc/README.md"} <= names
    assert {"trainers/training/stage_run.py", "trainers/cli/__main__.py", "trainers/hub/push.py"} <= names
