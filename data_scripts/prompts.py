"""Prompt templates and rendering.

Templates are plain text (``configs/prompts/<name>.txt``) with ``str.format`` fields:
``{history}`` (the user's most recent liked titles), ``{user}`` (user placeholder tokens),
``{title}`` (candidate title) and ``{item}`` (item placeholder tokens). The user-only fields must
come before the candidate fields so the shared prefix can be cached when ranking many candidates.
The rendered prompt ends right before the answer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from pathlib import Path

USER_TOKEN = "<|user_emb|>"
ITEM_TOKEN = "<|item_emb|>"
HISTORY_TOKEN = "<|hist_emb|>"
PLACEHOLDER_TOKENS = (USER_TOKEN, ITEM_TOKEN, HISTORY_TOKEN)

CONTEXT_FIELDS = ("history", "user")
CANDIDATE_FIELDS = ("title", "item")
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "configs" / "prompts"
HISTORY_SEPARATOR = ", "


def template_fields(template: str) -> list[str]:
    """The template's field names in order; raise ``ValueError`` on unknown, positional or
    formatted fields, on a missing ``{title}``, or on a context field after a candidate field."""
    fields = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if name not in CONTEXT_FIELDS + CANDIDATE_FIELDS:
            raise ValueError(
                f"prompt template field {{{name}}} is unknown; allowed: {list(CONTEXT_FIELDS + CANDIDATE_FIELDS)}"
            )
        if spec or conversion:
            raise ValueError(f"prompt template field {{{name}}} must not carry a format spec or conversion")
        fields.append(name)
    if "title" not in fields:
        raise ValueError("prompt template has no {title} field")
    first_candidate = min(i for i, name in enumerate(fields) if name in CANDIDATE_FIELDS)
    late = [name for name in fields[first_candidate:] if name in CONTEXT_FIELDS]
    if late:
        raise ValueError(
            f"prompt template puts {{{late[0]}}} after {{{fields[first_candidate]}}}; "
            "{history}/{user} must come before {title}/{item}"
        )
    return fields


def load_template(name_or_path: str | Path) -> str:
    """Template text from a bare name (``configs/prompts/<name>.txt``) or a file path.

    One trailing newline (the file's last line end) is removed; the text is validated.
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


def render_history(
    titles: Sequence[str], max_history: int = 10, tokens_per_entity: int = 1, with_history_tokens: bool = False
) -> str:
    """The ``max_history`` most recent titles (oldest first), each followed by ``tokens_per_entity``
    history placeholders when ``with_history_tokens``, joined by ``", "``."""
    if max_history < 0 or tokens_per_entity < 1:
        raise ValueError(f"need max_history >= 0 and tokens_per_entity >= 1, got {max_history}, {tokens_per_entity}")
    recent = list(titles)[max(len(titles) - max_history, 0) :] if max_history else []
    if with_history_tokens:
        recent = [f"{title} {HISTORY_TOKEN * tokens_per_entity}" for title in recent]
    return HISTORY_SEPARATOR.join(str(title) for title in recent)


def _field_values(row: Mapping, max_history: int, tokens_per_entity: int, with_history_tokens: bool) -> dict:
    """``str.format`` values for one dataset row (needs ``history_titles`` and ``title``)."""
    missing = [key for key in ("history_titles", "title") if key not in row]
    if missing:
        raise ValueError(f"prompt row is missing field(s) {missing}")
    return {
        "history": render_history(row["history_titles"], max_history, tokens_per_entity, with_history_tokens),
        "title": str(row["title"]),
        "user": USER_TOKEN * tokens_per_entity,
        "item": ITEM_TOKEN * tokens_per_entity,
    }


def render_prompt(
    template: str,
    row: Mapping,
    max_history: int = 10,
    tokens_per_entity: int = 1,
    with_history_tokens: bool = False,
) -> str:
    """The prompt for one row, ending right before the answer.

    Example (``tallrec_ml1m``): ``"#Question: A user has given high ratings to the following movies:
    Heat (1995), Fargo (1996). Using all available information, ... titled Alien (1979)? ..."``
    """
    template_fields(template)
    return template.format(**_field_values(row, max_history, tokens_per_entity, with_history_tokens))


def split_prompt(
    template: str,
    row: Mapping,
    max_history: int = 10,
    tokens_per_entity: int = 1,
    with_history_tokens: bool = False,
) -> tuple[str, str]:
    """``(prefix, suffix)`` with ``prefix + suffix == render_prompt(...)``; the prefix is everything
    before the first candidate field (``{title}`` / ``{item}``), so it depends on the user only."""
    template_fields(template)
    prefix_template = ""
    suffix_template = None
    for literal, name, _, _ in string.Formatter().parse(template):
        piece = literal.replace("{", "{{").replace("}", "}}") + ("" if name is None else f"{{{name}}}")
        if suffix_template is None and name in CANDIDATE_FIELDS:
            prefix_template += literal.replace("{", "{{").replace("}", "}}")
            suffix_template = f"{{{name}}}"
        elif suffix_template is None:
            prefix_template += piece
        else:
            suffix_template += piece
    values = _field_values(row, max_history, tokens_per_entity, with_history_tokens)
    return prefix_template.format(**values), suffix_template.format(**values)
