"""Type checks of a stage's config values against the argument dataclasses' annotations, before parsing.

``HfArgumentParser.parse_dict`` converts nothing, so a quoted number (``lora_r: "8"``), a boolean for a number
(``learning_rate: true``) or an empty override (``lora_r=``) used to surface as a traceback deep inside
``__post_init__``. Each is refused here with one line naming the file, the field, the value and the fix.
YAML quirks are undone: a bare ``no`` / ``true`` for a string field (``save_strategy: no``) becomes ``"no"`` /
``"true"``, and ``1e-4`` (a string in YAML 1.1) becomes a float for a float field. Broken YAML is reported
with its file and line (:func:`load_yaml_file`).
"""

import difflib
import enum
import types
import typing

import yaml


def closest_name(key: str, names) -> str | None:
    """The known name ``key`` most likely misspells: a name it starts with (``lora_rank`` → ``lora_r``), else a close
    spelling; ``None`` when nothing is close."""
    prefixes = [name for name in names if key.startswith(name) and len(name) >= 4]
    if prefixes:
        return max(prefixes, key=len)
    matches = difflib.get_close_matches(key, names, n=1, cutoff=0.8)
    return matches[0] if matches else None


def refuse_unknown(keys, known, source: str, what: str = "argument(s)", list_known: bool = False) -> None:
    """``ValueError`` naming ``source`` and the ``keys`` not in ``known``, each with the known name it most likely
    misspells (``'lora_rank': did you mean 'lora_r'?``); ``list_known`` appends the known names."""
    unknown = sorted(str(key) for key in keys if key not in known)
    if not unknown:
        return
    close = {key: closest_name(key, list(known)) for key in unknown}
    hints = "; ".join(f"{key!r}: did you mean {name!r}?" for key, name in close.items() if name)
    message = f"{source}: unknown {what} {unknown}" + (f" ({hints})" if hints else "")
    raise ValueError(message + (f"; known: {sorted(known)}" if list_known else ""))


def allowed(annotation) -> tuple[set, tuple]:
    """``(python types, literal choices)`` a field annotation accepts; ``(set(), ())`` when it cannot say."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return set(), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds, choices = set(), ()
        for argument in typing.get_args(annotation):
            more, literal = allowed(argument)
            kinds |= more
            choices += literal
        return kinds, choices
    if origin is not None:  # list[str], dict[str, Any], ...
        return {origin}, ()
    if annotation is type(None):
        return {type(None)}, ()
    if isinstance(annotation, type):
        return ({str} if issubclass(annotation, enum.Enum) else {annotation}), ()
    return set(), ()


def checked_value(key: str, value, annotation, source: str):
    """``value`` for a field annotated ``annotation`` (converted where YAML changed its type); ``ValueError`` if it
    cannot fit."""
    kinds, choices = allowed(annotation)
    if not kinds and not choices:
        return value  # an annotation we cannot read: left to the dataclass
    if choices and (value in choices or (value is None and type(None) in kinds)):
        return value
    if choices and not kinds - {type(None)}:
        raise ValueError(f"{source}: {key} must be one of {list(choices)}, got {value!r}")
    if value is None:
        if type(None) in kinds:
            return value
        raise ValueError(f"{source}: {key} has no value (an empty override `{key}=`?); give it a value")
    if isinstance(value, bool):
        if bool in kinds:
            return value
        if str in kinds:
            return "true" if value else "no"  # YAML 1.1 read `no` / `true` as booleans
        raise ValueError(f"{source}: {key} must be {describe_kinds(kinds)}, got the boolean {value}")
    if isinstance(value, int) and (int in kinds or float in kinds):
        return value
    if isinstance(value, float) and float in kinds:
        return value
    if isinstance(value, str) and float in kinds and str not in kinds:
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            raise ValueError(f"{source}: {key} must be a number, got {value!r}") from None
    if isinstance(value, str) and int in kinds and str not in kinds:
        hint = "write it without quotes" if value.strip().lstrip("+-").isdigit() else "give a whole number"
        raise ValueError(f"{source}: {key} must be an integer, got the string {value!r}; {hint}")
    if isinstance(value, (int, float)) and str in kinds:
        return str(value)
    if type(value) in kinds or any(isinstance(value, kind) for kind in kinds if kind is not type(None)):
        return value
    raise ValueError(f"{source}: {key} must be {describe_kinds(kinds)}, got {value!r}")


def describe_kinds(kinds: set) -> str:
    """``{int, float}`` → ``"a number or an integer"``: the accepted kinds in words, for messages."""
    names = {
        int: "an integer", float: "a number", str: "a string", bool: "true/false", list: "a list", dict: "a mapping"
    }
    return " or ".join(sorted(names.get(kind, kind.__name__) for kind in kinds if kind is not type(None)))


def annotations_of(classes) -> dict:
    """Field name → annotation of the dataclasses ``classes``, read from the classes themselves
    (``HfArgumentParser`` rewrites ``Field.type`` in place, e.g. ``int | None`` → ``int``)."""
    return {name: hint for cls in classes for name, hint in typing.get_type_hints(cls).items()}


def checked_values(values: dict, classes, source: str) -> dict:
    """Every ``values[key]`` checked (and converted) against its annotation in ``classes``; see
    :func:`checked_value`."""
    annotations = annotations_of(classes)
    return {key: checked_value(key, value, annotations.get(key), source) for key, value in values.items()}


def load_yaml_file(path):
    """The YAML document in ``path``; broken YAML is one ``ValueError`` naming the file, line and problem."""
    with open(path) as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or "not valid YAML"
            raise ValueError(f"{path}: broken YAML{where} ({problem}); fix the syntax there") from None
