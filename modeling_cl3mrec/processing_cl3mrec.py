"""``CL3MRecProcessor``: (user, history, item) records → the tensors ``CL3MRecModel.forward`` takes.

Shaped after transformers' ``LlavaProcessor``: the processor holds the tokenizer and everything else that
turns raw inputs into model inputs — the prompt template, the placeholder tokens, ``tokens_per_entity`` and
``max_history`` — and is saved beside the weights (``processor_config.json``), so that
``AutoProcessor.from_pretrained(dir, trust_remote_code=True)`` rebuilds inputs exactly as in training.
It is the only place that renders prompts and truncates histories.

Templates are plain text with ``str.format`` fields: ``{history}`` (the user's most recent liked titles),
``{user}`` (user placeholder tokens), ``{title}`` (candidate title) and ``{item}`` (item placeholder tokens).
The user-only fields must come before the candidate fields, so the prompt prefix is shared by every candidate
of a user (ranking caches it). The rendered prompt ends right before the answer.

A record is a mapping with ``history_titles`` (oldest first) and ``title``; templates with ``{user}`` /
``{item}`` also need ``user_id``, ``item_id`` and ``history_item_ids`` (oldest first, same order as the titles).
"""

import numbers
import string
from collections.abc import Collection, Iterable, Mapping, Sequence

import torch
from transformers import BatchFeature, ProcessorMixin

USER_TOKEN = "<|user_emb|>"
ITEM_TOKEN = "<|item_emb|>"
HISTORY_TOKEN = "<|hist_emb|>"

PLACEHOLDERS = {"user": USER_TOKEN, "item": ITEM_TOKEN, "history": HISTORY_TOKEN}  # kind → token, as `parts` name them
CONTEXT_FIELDS = ("history", "user")
CANDIDATE_FIELDS = ("title", "item")
ID_FIELDS = ("user", "item")
HISTORY_SEPARATOR = ", "
PADDING_SIDES = ("left", "right")
RECORD_FIELDS = ("history_titles", "title")  # every record
ID_RECORD_FIELDS = ("user_id", "item_id", "history_item_ids")  # records for templates with CF placeholders


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


def common_prefix_length(sequences: Sequence[Sequence[int]], stop_token_ids: Iterable[int] = ()) -> int:
    """Length of the longest common prefix of token-id sequences, cut before the first of `stop_token_ids` and kept
    at least one token shorter than the shortest sequence (every row needs a suffix token)."""
    if not sequences:
        raise ValueError("common_prefix_length needs at least one sequence")
    first = sequences[0]
    length = min(len(seq) for seq in sequences) - 1
    for seq in sequences[1:]:
        length = next((i for i in range(length) if first[i] != seq[i]), length)
    stops = set(stop_token_ids)
    return next((i for i in range(length) if first[i] in stops), max(length, 0))


def check_id(value, where: str) -> int:
    """``value`` as an ``int``; ``TypeError`` naming ``where`` unless it is an integer (a bool, a string such as
    ``"7"`` or a float such as ``7.9`` would silently become another id)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where} must be an integer id, got {value!r}")
    return int(value)


def _list_field(record: Mapping, key: str, where: str) -> Collection:
    """``record[key]`` when it is a list-like of entries; ``TypeError`` for a string (read letter by letter), a
    mapping, ``None`` or a scalar."""
    value = record[key]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Collection):
        raise TypeError(f"{where}: {key} must be a list, got {type(value).__name__} {value!r}")
    return value


def template_uses_ids(template: str) -> bool:
    """Whether the template has CF placeholders (``{user}`` or ``{item}``), i.e. needs CF id tensors."""
    return any(name in ID_FIELDS for name in template_fields(template))


class CL3MRecProcessor(ProcessorMixin):
    r"""Renders, tokenises and pads CL3M-Rec prompts, with the CF id tensors of each record.

    Args:
        tokenizer: the model's tokenizer, holding the placeholder tokens (see :meth:`add_placeholder_tokens`)
            and a pad token.
        template (`str`): the prompt template (fields ``{history}``, ``{user}``, ``{title}``, ``{item}``).
        tokens_per_entity (`int`, defaults to 1): placeholder tokens per user / item / history item.
        max_history (`int`, defaults to 10): most recent history items kept (0 keeps none).
        use_history_embeddings (`bool`): follow each history title with ``<|hist_emb|>`` placeholders
            (templates with CF placeholders only).
        padding_side (`"left"` or `"right"`, defaults to `"left"`): where :meth:`pad` puts padding. The model
            reads its score at the last position, so scoring needs left padding.

    Calling the processor on records returns a `BatchFeature` with ``input_ids [B, T]``,
    ``attention_mask [B, T]`` and, for templates with CF placeholders, ``user_ids [B]``, ``item_ids [B]``,
    ``history_item_ids [B, L]`` (the ``max_history`` most recent, left-padded with 0, most recent last,
    L = max(1, longest history)).
    """

    def __init__(
        self,
        tokenizer=None,
        template: str | None = None,
        tokens_per_entity: int = 1,
        max_history: int = 10,
        use_history_embeddings: bool = False,
        padding_side: str = "left",
        **kwargs,
    ):
        if template is None:
            raise ValueError("CL3MRecProcessor needs a prompt template")
        self.with_ids = template_uses_ids(template)  # also validates the template
        if tokens_per_entity < 1 or max_history < 0:
            raise ValueError(
                f"need tokens_per_entity >= 1 and max_history >= 0, got {tokens_per_entity}, {max_history}"
            )
        if padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
        if use_history_embeddings and not self.with_ids:
            raise ValueError("use_history_embeddings needs a template with CF placeholders ({user} / {item})")
        if tokenizer is not None and tokenizer.pad_token_id is None:
            raise ValueError("CL3MRecProcessor needs a tokenizer with a pad token")
        self.template = template
        self.tokens_per_entity = tokens_per_entity
        self.max_history = max_history
        self.use_history_embeddings = use_history_embeddings
        self.padding_side = padding_side
        super().__init__(tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, tokenizer, config, with_ids: bool | None = None, **kwargs) -> "CL3MRecProcessor":
        """The processor of a [`CL3MRecConfig`]: its ``prompt_template`` (``with_ids``, default: the model has a
        CF encoder) or ``text_prompt_template``, ``tokens_per_entity`` and ``use_history_embeddings`` (ID prompts
        only). ``max_history`` is the processor's own (not in the model config): pass it in ``kwargs``."""
        with_ids = config.cf_config is not None if with_ids is None else with_ids
        name = "prompt_template" if with_ids else "text_prompt_template"
        template = getattr(config, name)
        if template is None:
            kind = "ID" if with_ids else "text"
            raise ValueError(f"CL3MRecConfig.{name} is not set; it is needed for {kind} prompts")
        if with_ids and config.cf_config is None:
            raise ValueError("ID prompts need a CL3M-Rec config with a cf_config (placeholders are filled from it)")
        return cls(
            tokenizer,
            template=template,
            tokens_per_entity=config.tokens_per_entity,
            use_history_embeddings=with_ids and bool(config.use_history_embeddings),
            **kwargs,
        )

    @staticmethod
    def add_placeholder_tokens(tokenizer, use_history_embeddings: bool = False) -> dict[str, int]:
        """Add the placeholder special tokens to ``tokenizer``; return their ids as ``CL3MRecConfig`` fields
        (``user_token_id``, ``item_token_id`` and, with history embeddings, ``history_token_id``)."""
        names = {"user_token_id": USER_TOKEN, "item_token_id": ITEM_TOKEN}
        if use_history_embeddings:
            names["history_token_id"] = HISTORY_TOKEN
        tokenizer.add_tokens(list(names.values()), special_tokens=True)
        return {field: tokenizer.convert_tokens_to_ids(token) for field, token in names.items()}

    def recent_history(self, history: Sequence) -> list:
        """The ``max_history`` most recent entries of ``history`` (oldest first); ``max_history=0`` keeps none."""
        return list(history)[-self.max_history :] if self.max_history > 0 else []

    def _field_values(self, record: Mapping) -> dict[str, str]:
        """``str.format`` values of one record."""
        missing = [key for key in ("history_titles", "title") if key not in record]
        if missing:
            raise ValueError(f"prompt record is missing field(s) {missing}")
        titles = [str(title) for title in self.recent_history(record["history_titles"])]
        if self.use_history_embeddings:
            titles = [f"{title} {HISTORY_TOKEN * self.tokens_per_entity}" for title in titles]
        return {
            "history": HISTORY_SEPARATOR.join(titles),
            "title": str(record["title"]),
            "user": USER_TOKEN * self.tokens_per_entity,
            "item": ITEM_TOKEN * self.tokens_per_entity,
        }

    def render(self, record: Mapping) -> str:
        """The prompt of one record, ending right before the answer.

        Example (TALLRec ML-1M template): ``"#Question: A user has given high ratings to the following movies:
        Heat (1995), Fargo (1996). Using all available information, ... titled Alien (1979)? ..."``
        """
        return self.template.format(**self._field_values(record))

    def split_prompt(self, record: Mapping) -> tuple[str, str]:
        """``(prefix, suffix)`` with ``prefix + suffix == render(record)``; the prefix is everything before the
        first candidate field (``{title}`` / ``{item}``), so it depends on the user only."""
        prefix_template, suffix_template = "", None
        for literal, name, _, _ in string.Formatter().parse(self.template):
            escaped = literal.replace("{", "{{").replace("}", "}}")
            if suffix_template is None and name in CANDIDATE_FIELDS:
                prefix_template += escaped
                suffix_template = f"{{{name}}}"
            elif suffix_template is None:
                prefix_template += escaped + ("" if name is None else f"{{{name}}}")
            else:
                suffix_template += escaped + ("" if name is None else f"{{{name}}}")
        values = self._field_values(record)
        return prefix_template.format(**values), suffix_template.format(**values)

    @staticmethod
    def candidate_records(
        user_record: Mapping, candidate_item_ids: Sequence[int], candidate_titles: Sequence[str]
    ) -> list[dict]:
        """One record per candidate: the user's record (``user_id``, history) with the candidate's id and title
        (``TypeError`` naming the candidate for an id that is not an integer or a title that is not a string)."""
        if len(candidate_item_ids) != len(candidate_titles):
            raise ValueError(
                f"{len(candidate_item_ids)} candidate_item_ids but {len(candidate_titles)} candidate_titles"
            )
        records = []
        for index, (item_id, title) in enumerate(zip(candidate_item_ids, candidate_titles)):
            if not isinstance(title, str):
                raise TypeError(f"candidate {index}: title must be a string, got {title!r}")
            item_id = check_id(item_id, f"candidate {index}: item_id")
            records.append({**user_record, "item_id": item_id, "title": title})
        return records

    def check_record(self, record: Mapping, where: str = "record") -> None:
        """Refuse a record that would be rendered or looked up wrongly, with one message naming ``where`` and the
        field: not a mapping, a missing field (the id fields too for templates with CF placeholders), a title that
        is not a string, a history that is not a list (of titles / integer ids) or whose ids and titles differ in
        number, an id that is not an integer."""
        if not isinstance(record, Mapping):
            raise TypeError(f"{where}: expected a dict with {list(RECORD_FIELDS)}, got {type(record).__name__}")
        needed = RECORD_FIELDS + (ID_RECORD_FIELDS if self.with_ids else ())
        missing = [key for key in needed if key not in record]
        if missing:
            raise ValueError(f"{where} is missing field(s) {missing}")
        if not isinstance(record["title"], str):
            raise TypeError(f"{where}: title must be a string, got {record['title']!r}")
        titles = _list_field(record, "history_titles", where)
        for position, title in enumerate(titles):
            if not isinstance(title, str):
                raise TypeError(f"{where}: history_titles[{position}] must be a string, got {title!r}")
        for key in ("user_id", "item_id"):
            if key in record:
                check_id(record[key], f"{where}: {key}")
        if "history_item_ids" in record:
            ids = _list_field(record, "history_item_ids", where)
            for position, item_id in enumerate(ids):
                check_id(item_id, f"{where}: history_item_ids[{position}]")
            if len(ids) != len(titles):  # the prompt's titles and the history tokens must pair up
                raise ValueError(
                    f"{where}: history_item_ids has {len(ids)} entries but history_titles has "
                    f"{len(titles)}; they must list the same items in the same order"
                )

    def encode(self, records: Sequence[Mapping], names: Sequence[str] | None = None) -> dict[str, list]:
        """Unpadded features of ``records`` (each checked by :meth:`check_record`): ``input_ids`` (one list per
        record, with the tokenizer's special tokens) and, where every record carries them, ``user_id``,
        ``item_id`` and ``history_item_ids`` (the ``max_history`` most recent). ID templates require the three id
        fields. ``names``: what the error messages call each record (default ``"record <index>"``)."""
        if names is not None and len(names) != len(records):
            raise ValueError(f"{len(names)} names for {len(records)} records")
        for index, record in enumerate(records):
            self.check_record(record, f"record {index}" if names is None else names[index])
        prompts = [self.render(record) for record in records]
        features = {"input_ids": self.tokenizer(prompts, add_special_tokens=True)["input_ids"]}
        for key in ("user_id", "item_id"):
            if records and all(key in record for record in records):
                features[key] = [int(record[key]) for record in records]
        if records and all("history_item_ids" in record for record in records):
            features["history_item_ids"] = [
                [int(i) for i in self.recent_history(record["history_item_ids"])] for record in records
            ]
        return features

    def encode_rows(self, records: Sequence[Mapping], names: Sequence[str] | None = None) -> list[dict]:
        """:meth:`encode`, as one feature dict per record (the input of :meth:`pad`)."""
        encoded = self.encode(records, names)
        return [dict(zip(encoded, values)) for values in zip(*encoded.values())]

    def pad(self, features: Sequence[Mapping], padding_side: str | None = None) -> BatchFeature:
        """Pad encoded rows (each a mapping with ``input_ids`` and, for ID templates, ``user_id``, ``item_id``,
        ``history_item_ids``) into a `BatchFeature` of tensors (see the class docstring).

        Args:
            padding_side: ``"left"`` / ``"right"`` for ``input_ids`` (default: ``self.padding_side``); the history
                is always left-padded with 0.
        """
        side = padding_side or self.padding_side
        if side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {side!r}")
        input_ids, attention_mask = self._padded_ids([feature["input_ids"] for feature in features], side)
        return BatchFeature(data={"input_ids": input_ids, "attention_mask": attention_mask, **self._id_tensors(features)})

    def _padded_ids(self, sequences: Sequence[Sequence[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids [N, T], attention_mask [N, T])`` of token-id sequences padded on ``side``."""
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(sequences), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, ids in enumerate(sequences):
            span = slice(width - len(ids), width) if side == "left" else slice(0, len(ids))
            input_ids[row, span] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, span] = 1
        return input_ids, attention_mask

    def _id_tensors(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        """``user_ids [B]``, ``item_ids [B]``, ``history_item_ids [B, L]`` (left-padded with 0) for ID templates."""
        if not self.with_ids:
            return {}
        histories = [feature["history_item_ids"] for feature in features]
        history = torch.zeros((len(features), max(1, *(len(h) for h in histories))), dtype=torch.long)
        for row, ids in enumerate(histories):
            if ids:
                history[row, history.shape[1] - len(ids) :] = torch.as_tensor(ids, dtype=torch.long)
        return {
            "user_ids": torch.tensor([feature["user_id"] for feature in features], dtype=torch.long),
            "item_ids": torch.tensor([feature["item_id"] for feature in features], dtype=torch.long),
            "history_item_ids": history,
        }

    @staticmethod
    def context_key(feature: Mapping) -> tuple:
        """What a row's prompt prefix depends on: its user and recent history (`user_id`, `history_item_ids`);
        rows with equal keys share it (rows without either share by their common token prefix only)."""
        return feature.get("user_id"), tuple(feature.get("history_item_ids") or ())

    def placeholder_ids(self, kinds: Iterable[str]) -> list[int]:
        """Token ids of the placeholder ``kinds`` (``"user"``, ``"item"``, ``"history"``) that this processor's
        prompts can hold (none for text prompts; history only with ``use_history_embeddings``)."""
        held = ("user", "item", "history") if self.use_history_embeddings else ("user", "item") if self.with_ids else ()
        return [self.tokenizer.convert_tokens_to_ids(PLACEHOLDERS[kind]) for kind in kinds if kind in held]

    def prefix_stop_ids(self, prefix_parts: Sequence[str]) -> list[int]:
        """Placeholder token ids a shared prompt prefix must stop before: those of the kinds not in ``prefix_parts``
        (``CL3MRecModel.shared_prefix_parts``)."""
        return self.placeholder_ids(kind for kind in PLACEHOLDERS if kind not in prefix_parts)

    def split_shared_prefix(
        self, features: Sequence[Mapping], prefix_parts: Sequence[str] = ("user", "history")
    ) -> tuple[list[list[int]], list[list[int]], list[int]]:
        """``(prefixes, suffixes, prefix_index)``: the token ids of each shared prompt prefix, of each row's suffix,
        and each row's prefix (numbered in order of first appearance); prefix + suffix = the row's prompt ids.

        Rows with the same :meth:`context_key` share a prefix: the longest common token prefix of their prompts,
        cut before the first placeholder of a kind outside ``prefix_parts`` (``CL3MRecModel.shared_prefix_parts``:
        never the candidate's; not the user's for a CF encoder whose user view depends on the candidate, such as DIN)
        and at least one token short of the shortest prompt. Cutting token ids (not text) keeps every token as in the
        whole prompt. Raises ``ValueError`` when a prompt cannot be split that way (a template starting with a
        candidate field, or placeholders of ``prefix_parts`` after the cut, e.g. ``{history}`` after ``{user}`` for
        DIN): :class:`~trainers.training.prompt_dataset.CL3MRecCollator` then keeps whole prompts.
        """
        if not features:
            raise ValueError("split_shared_prefix needs at least one row")
        stops = self.prefix_stop_ids(prefix_parts)
        context_only = set(self.placeholder_ids(prefix_parts))  # the model fills these in the prefix only
        groups: dict[tuple, list[int]] = {}
        for row, feature in enumerate(features):
            groups.setdefault(self.context_key(feature), []).append(row)
        prefixes, suffixes, prefix_index = [], [None] * len(features), [0] * len(features)
        for group, rows in enumerate(groups.values()):
            ids = [features[row]["input_ids"] for row in rows]
            length = common_prefix_length(ids, stops)
            if length == 0:
                raise ValueError(f"row {rows[0]}: the prompt has no shareable prefix (it starts with the candidate)")
            if any(token in context_only for row_ids in ids for token in row_ids[length:]):
                raise ValueError(f"row {rows[0]}: user-context placeholders after the shared prefix's cut")
            prefixes.append(ids[0][:length])
            for row, row_ids in zip(rows, ids):
                suffixes[row], prefix_index[row] = row_ids[length:], group
        return prefixes, suffixes, prefix_index

    def pad_shared_prefix(
        self, features: Sequence[Mapping], prefix_parts: Sequence[str] = ("user", "history"), split=None
    ) -> BatchFeature:
        """Pad encoded rows as shared prompt prefixes + per-row suffixes (:meth:`split_shared_prefix`, or its result
        ``split``), the form in which `CL3MRecModel.forward` runs each prefix once for all its rows.

        Returns a `BatchFeature` with ``prefix_input_ids [G, P]`` / ``prefix_attention_mask [G, P]`` (left-padded),
        ``input_ids [B, S]`` / ``attention_mask [B, S]`` (the suffixes, right-padded), ``prefix_index [B]`` and, for
        ID templates, the id tensors of :meth:`pad`.
        """
        prefixes, suffixes, prefix_index = split or self.split_shared_prefix(features, prefix_parts)
        prefix_input_ids, prefix_attention_mask = self._padded_ids(prefixes, "left")
        input_ids, attention_mask = self._padded_ids(suffixes, "right")
        return BatchFeature(
            data={
                "prefix_input_ids": prefix_input_ids,
                "prefix_attention_mask": prefix_attention_mask,
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "prefix_index": torch.tensor(prefix_index, dtype=torch.long),
                **self._id_tensors(features),
            }
        )

    def __call__(self, records: Mapping | Sequence[Mapping], padding_side: str | None = None) -> BatchFeature:
        """Render, tokenise and pad one record or a list of records (see the class docstring for the output)."""
        records = [records] if isinstance(records, Mapping) else list(records)
        if not records:
            raise ValueError("CL3MRecProcessor needs at least one record")
        return self.pad(self.encode_rows(records), padding_side=padding_side)


CL3MRecProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "CL3MRecProcessor",
    "HISTORY_TOKEN",
    "ITEM_TOKEN",
    "USER_TOKEN",
    "check_id",
    "common_prefix_length",
    "template_fields",
    "template_uses_ids",
]
