"""The bundled prompt templates (``configs/prompts/<name>.txt``): CoLLM / TALLRec wording for ML-1M and Amazon-Book.

Rendering belongs to :class:`modeling_cl3mrec.processing_cl3mrec.CL3MRecProcessor`; this module only finds and
validates template text.
"""

from pathlib import Path

from modeling_cl3mrec.processing_cl3mrec import template_fields

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "configs" / "prompts"


def load_template(name_or_path: str | Path) -> str:
    """Template text from a bare name (``configs/prompts/<name>.txt``) or a file path.

    One trailing newline (the file's last line end) is removed; the text is validated
    (:func:`~modeling_cl3mrec.processing_cl3mrec.template_fields`).
    """
    text = str(name_or_path)
    is_name = Path(text).name == text and not text.endswith(".txt")
    path = TEMPLATE_DIR / f"{text}.txt" if is_name else Path(text)
    if not path.is_file():
        available = sorted(p.stem for p in TEMPLATE_DIR.glob("*.txt"))
        raise FileNotFoundError(f"prompt template {path} not found; bundled templates: {available}")
    template = path.read_text(encoding="utf-8")
    template = template[:-1] if template.endswith("\n") else template
    template_fields(template)
    return template
