"""The bundled prompt templates (``trainers/prompts/<name>.txt``, package data shipped in the wheel): CoLLM / TALLRec
wording for ML-1M and Amazon-Book.

A bare name (``collm_ml1m``) reads the bundled copy; anything else is the path of a template of your own (e.g. in
``configs/prompts/``). ``configs/prompts/<bundled name>.txt`` — where the bundled templates lived before they moved
into the package — still finds the bundled copy when no such file exists. Rendering belongs to
:class:`modeling_cl3mrec.processing_cl3mrec.CL3MRecProcessor`; this module only finds and validates template text.
"""

import logging
from importlib.resources import files
from pathlib import Path

from modeling_cl3mrec.processing_cl3mrec import template_fields

logger = logging.getLogger(__name__)

TEMPLATE_DIR = files(__package__).joinpath("prompts")
USER_TEMPLATE_DIR = Path("configs") / "prompts"  # the old home of the bundled templates, now for users' own


def bundled_templates() -> list[str]:
    """Names of the bundled templates, sorted."""
    return sorted(entry.name.removesuffix(".txt") for entry in TEMPLATE_DIR.iterdir() if entry.name.endswith(".txt"))


def template_source(name_or_path: str | Path):
    """Where ``name_or_path`` is read from: the bundled ``<name>.txt`` for a bare name, or for a missing
    ``configs/prompts/<bundled name>.txt``; otherwise the path itself."""
    text = str(name_or_path)
    if Path(text).name == text and not text.endswith(".txt"):
        return TEMPLATE_DIR.joinpath(f"{text}.txt")
    path = Path(text)
    moved = not path.exists() and path.parent.parts[-2:] == USER_TEMPLATE_DIR.parts and path.stem in bundled_templates()
    if moved:
        logger.info("%s: using the bundled template %r (bundled templates ship in trainers/prompts/)", path, path.stem)
        return TEMPLATE_DIR.joinpath(path.name)
    return path


def load_template(name_or_path: str | Path) -> str:
    """Template text from a bare name (the bundled ``trainers/prompts/<name>.txt``) or a file path.

    One trailing newline (the file's last line end) is removed; the text is validated
    (:func:`~modeling_cl3mrec.processing_cl3mrec.template_fields`).
    """
    source = template_source(name_or_path)
    if not source.is_file():
        raise FileNotFoundError(f"prompt template {name_or_path} not found; bundled templates: {bundled_templates()}")
    template = source.read_text(encoding="utf-8")
    template = template[:-1] if template.endswith("\n") else template
    template_fields(template)
    return template
