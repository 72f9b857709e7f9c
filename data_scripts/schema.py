"""The dataset schema every importer writes, its validation, and the split statistics.

One row is one (user, candidate item) interaction with a binary label and the user's earlier
positive items. Ids are 1-based; 0 is reserved for padding (see ``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Features, List, Value

SPLITS = ("train", "valid", "valid_small", "test")
REQUIRED_SPLITS = ("train", "valid", "valid_small")

FEATURES = Features(
    {
        "user_id": Value("int64"),
        "item_id": Value("int64"),
        "label": Value("int64"),
        "timestamp": Value("int64"),
        "history_item_ids": List(Value("int64")),
        "history_titles": List(Value("string")),
        "title": Value("string"),
        "user_warm": Value("bool"),
        "item_warm": Value("bool"),
        "warm": Value("bool"),
    }
)
COLUMNS = tuple(FEATURES)
# An id space may exceed the number of distinct ids this much (ids unseen in the imported splits) before it is
# refused as sparse: max id + 1 <= SPARSE_ID_FACTOR * distinct ids + SPARSE_ID_SLACK.
SPARSE_ID_FACTOR = 4
SPARSE_ID_SLACK = 1000


def require_input_file(path: Path, hint: str = "") -> None:
    """Raise ``FileNotFoundError`` / ``IsADirectoryError`` / ``ValueError`` naming ``path`` when it is missing, a
    folder or empty (``hint`` is appended to the missing-file message)."""
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory, not a file; name the file itself")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file{hint}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file; copy, download or export it again")


def validate_frame(
    frame: pd.DataFrame,
    source: str,
    num_users: int | None = None,
    num_items: int | None = None,
) -> None:
    """Check one split in our column format; raise ``ValueError`` naming ``source`` and the problem.

    Args:
        frame: one split with the columns of ``FEATURES``.
        source: file or split name used in error messages.
        num_users / num_items: id-space sizes (max id + 1); ``None`` checks only the lower bound.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(COLUMNS)}")
    if len(frame) == 0:
        raise ValueError(f"{source}: no rows")
    for column, size in (("user_id", num_users), ("item_id", num_items)):
        _check_ids(frame[column].to_numpy(), source, column, size, rows=frame.index)
    labels = frame["label"].to_numpy()
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        bad = ~np.isin(labels, (0, 1))
    else:  # object / float / string columns: look at each value
        bad = np.array([not is_binary_label(value) for value in labels], dtype=bool)
    if bad.any():
        row = frame.index[int(np.argmax(bad))]
        value = labels[bad][0]
        value = value.item() if isinstance(value, np.generic) else value
        raise ValueError(f"{source}: column 'label' must be 0/1, found {value!r} at row {row}; map labels to 0/1")
    if len(np.unique(labels.astype(np.int64))) < 2:
        raise ValueError(f"{source}: column 'label' has a single class ({labels[0]}); AUC needs both")
    null_titles = frame["title"].isna().to_numpy()
    if null_titles.any():
        position = int(np.argmax(null_titles))
        raise ValueError(
            f"{source}: row {frame.index[position]}: item {frame['item_id'].iloc[position]} has a null title; "
            "fill in its title or drop the row"
        )
    histories = []  # each row's history ids, int64: checked once, then range-checked all together below
    for row, ids, titles in zip(frame.index, frame["history_item_ids"], frame["history_titles"]):
        histories.append(history_ids(ids, source, "history_item_ids", row))
        titles = history_list(titles, source, "history_titles", row)
        if len(ids) != len(titles):
            raise ValueError(
                f"{source}: row {row}: history_item_ids has {len(ids)} entries but history_titles {len(titles)}"
            )
    flat_titles = [np.asarray(titles, dtype=object) for titles in frame["history_titles"]]
    if flat_titles and pd.isna(np.concatenate(flat_titles)).any():
        for row, ids, titles in zip(frame.index, frame["history_item_ids"], frame["history_titles"]):
            for item, title in zip(ids, titles):
                if is_null(title):
                    raise ValueError(
                        f"{source}: row {row}: history item {item} has a null title; fill in its title or drop the row"
                    )
    flat = np.concatenate([np.zeros(0, np.int64), *histories])
    if flat.size:
        _check_ids(flat, source, "history_item_ids", num_items, rows=None)
    for column in ("user_warm", "item_warm", "warm"):
        _check_flags(frame[column], source, column)
    flags = frame[["user_warm", "item_warm", "warm"]].astype(bool).to_numpy()
    inconsistent = flags[:, 2] != (flags[:, 0] & flags[:, 1])  # the warm / cold metrics read `warm`
    if inconsistent.any():
        position = int(np.argmax(inconsistent))
        raise ValueError(
            f"{source}: row {frame.index[position]}: warm is {bool(flags[position, 2])} but user_warm and item_warm "
            f"are {bool(flags[position, 0])} and {bool(flags[position, 1])}; warm must be user_warm and item_warm"
        )


def is_null(value) -> bool:
    """True for ``None`` and float NaN (pandas' missing values), which would render as "None" / "nan"."""
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def is_binary_label(value) -> bool:
    """True for 0 and 1 as integers, booleans or floats (0.0 / 1.0); strings such as "1" or "yes" are not labels."""
    return isinstance(value, (int, np.integer, bool, np.bool_, float, np.floating)) and value in (0, 1)


def history_list(value, source: str, column: str, row):
    """One row's history (``column``), checked to be a list (or array); raise naming the row and column when it is
    a null, a string or a scalar."""
    if value is None or isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(
            f"{source}: row {row}: column '{column}' must be a list, found {_short(value)}; "
            "an empty history is an empty list"
        )
    return value


def history_ids(value, source: str, column: str, row) -> np.ndarray:
    """One row's history item ids (``column``) as int64 `[n]`; raise naming the row, column and value when the
    history is not a list or an entry is not an integer (a float id such as 1652.7 is refused, never truncated; a
    boolean is refused too)."""
    value = history_list(value, source, column, row)
    try:
        ids = np.asarray(value)
    except ValueError:  # ragged: some entries are lists themselves
        ids = np.asarray(value, dtype=object)
    # numpy reads [True, 3] as integers: Python lists are looked at for booleans too (arrays carry their dtype)
    flags = {bool, np.bool_} & set(map(type, value)) if not isinstance(value, np.ndarray) else set()
    if len(ids) and (ids.dtype.kind not in "iu" or flags):
        bad = next(item for item in value if type(item) in (bool, np.bool_) or not isinstance(item, (int, np.integer)))
        raise ValueError(f"{source}: row {row}: column '{column}' holds {_short(bad)}, not an integer item id")
    return ids.astype(np.int64, copy=False)


def _check_flags(values: pd.Series, source: str, column: str) -> None:
    """Raise naming ``column``, the row and the value unless every value is a boolean (or the integer 0 / 1)."""
    if values.dtype == bool:
        return
    for row, value in values.items():
        if not isinstance(value, (bool, np.bool_, int, np.integer)) or value not in (0, 1):
            raise ValueError(f"{source}: row {row}: column '{column}' must be true/false, found {_short(value)}")


def _short(value) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_ids(ids: np.ndarray, source: str, column: str, size: int | None, rows: Iterable | None) -> None:
    """Raise if an id is < 1 (0 is padding) or >= ``size``; name the column, id and row."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{source}: column '{column}' must hold integers, found dtype {ids.dtype}")
    bad = (ids < 1) if size is None else (ids < 1) | (ids >= size)
    if bad.any():
        position = int(np.argmax(bad))
        where = f" at row {list(rows)[position]}" if rows is not None else ""
        limit = "1.." + (str(size - 1) if size is not None else "")
        raise ValueError(
            f"{source}: column '{column}' has id {int(ids[position])}{where} outside the valid range {limit} "
            f"(0 is padding{', id space ' + str(size) if size is not None else ''})"
        )


def add_warm_flags(frames: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Set ``user_warm`` / ``item_warm`` / ``warm`` on every split from the users/items of ``train``."""
    if "train" not in frames:
        raise ValueError("warm flags need a 'train' split")
    users = set(frames["train"]["user_id"].tolist())
    items = set(frames["train"]["item_id"].tolist())
    result = {}
    for name, frame in frames.items():
        frame = frame.copy()
        frame["user_warm"] = frame["user_id"].isin(users)
        frame["item_warm"] = frame["item_id"].isin(items)
        frame["warm"] = frame["user_warm"] & frame["item_warm"]
        result[name] = frame
    return result


def split_stats(frame: pd.DataFrame) -> dict:
    """Rows, distinct users/items, positive rate and warm/cold row counts of one split."""
    warm_rows = int(frame["warm"].sum())
    return {
        "rows": int(len(frame)),
        "users": int(frame["user_id"].nunique()),
        "items": int(frame["item_id"].nunique()),
        "positive_rate": round(float(frame["label"].mean()), 6),
        "warm_rows": warm_rows,
        "cold_rows": int(len(frame)) - warm_rows,
    }


def id_space(frames: Mapping[str, pd.DataFrame], sources: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``(num_users, num_items)``: max id + 1 over all splits, history items included.

    Args:
        frames: split name → frame with the ``FEATURES`` columns.
        sources: split name → the file / split named in messages (default: the split name).

    Raises:
        ValueError: the ids are sparse (e.g. one item id of 10^9): the embedding tables would hold mostly unused
            rows; ids must be dense ``1..N``. The message names the split and row holding the largest id.
    """
    users = set().union(*(f["user_id"].tolist() for f in frames.values()))
    items = set().union(*(f["item_id"].tolist() for f in frames.values()))
    for frame in frames.values():
        items.update(int(item) for history in frame["history_item_ids"] for item in history)
    for column, ids in (("user_id", users), ("item_id", items)):
        largest = max(ids)
        if largest + 1 > SPARSE_ID_FACTOR * len(ids) + SPARSE_ID_SLACK:
            raise ValueError(
                f"{_locate_id(frames, sources or {}, column, largest)}: id {largest} with only {len(ids)} distinct "
                f"{column[:-3]} ids would make a {largest + 1}-row id space; ids must be dense 1..N: re-map them "
                "(the raw importers do)"
            )
    return max(users) + 1, max(items) + 1


def _locate_id(frames: Mapping[str, pd.DataFrame], sources: Mapping[str, str], column: str, value: int) -> str:
    """``"<source>: row R: column 'C'"`` for the first row holding ``value`` (which some frame holds) in ``column``;
    splits in ``frames`` order, item ids in the candidate column before the histories."""
    found = (
        f"{sources.get(name, name)}: row {frame.index[int(np.argmax(hits))]}: column '{found_in}'"
        for name, frame in frames.items()
        for found_in, hits in _id_hits(frame, column, value)
        if hits.any()
    )
    return next(found)


def _id_hits(frame: pd.DataFrame, column: str, value: int) -> Iterator[tuple[str, np.ndarray]]:
    """``(column, row mask)`` of the rows holding ``value``: in ``column``, then (item ids) in the histories."""
    yield column, frame[column].to_numpy() == value
    if column == "item_id":
        yield "history_item_ids", np.array([value in history for history in frame["history_item_ids"]], dtype=bool)


def check_split_relations(frames: dict[str, pd.DataFrame], sources: dict[str, str]) -> None:
    """Refuse splits that cannot be one split of one data set: an evaluation split rated entirely before train began
    (files swapped), one most of whose rows repeat rows of train (same user, item and timestamp: the same file given
    twice), or a ``valid_small`` most of whose rows are not rows of ``valid`` (it is a sample of valid)."""
    columns = ["user_id", "item_id", "timestamp"]
    keys = {name: pd.MultiIndex.from_frame(frame[columns]) for name, frame in frames.items()}
    first_train = frames["train"]["timestamp"].min()
    for name in [name for name in ("valid", "valid_small", "test") if name in frames]:
        latest = frames[name]["timestamp"].max()
        if latest < first_train:
            raise ValueError(
                f"{sources[name]}: every row was rated before the first row of {sources['train']} (latest {latest}, "
                f"train from {first_train}); are the train and {name} files swapped?"
            )
        _refuse_most(frames[name], keys[name].isin(keys["train"]), sources[name], f"repeat rows of {sources['train']}",
                     "a rating is in one split only: is a file given twice?")
    if "valid_small" in frames and "valid" in frames:
        _refuse_most(frames["valid_small"], ~keys["valid_small"].isin(keys["valid"]), sources["valid_small"],
                     f"are not rows of {sources['valid']}", "valid_small is a sample of valid: another file?")


def _refuse_most(frame: pd.DataFrame, bad: np.ndarray, source: str, relation: str, hint: str) -> None:
    """Raise when more than half of ``frame``'s rows are ``bad`` (a few can be real data; most are another file)."""
    if bad.mean() > 0.5:
        raise ValueError(
            f"{source}: {int(bad.sum())} of {len(bad)} rows {relation} (same user, item and timestamp; e.g. row "
            f"{frame.index[int(np.argmax(bad))]}); {hint}"
        )


def check_one_title_per_item(frames: Mapping[str, pd.DataFrame], sources: Mapping[str, str] | None = None) -> None:
    """Raise ``ValueError`` when an item id carries two different titles (as a candidate or in a history).

    Prompts and the item text table take an item's title from its rows, so two titles would make them depend on
    which row came first. The message names the item id, both titles and the split and row of each.
    """
    first_seen: dict[int, tuple[str, str]] = {}  # item id → (title, "<source> row R")
    for name, frame in frames.items():
        source = (sources or {}).get(name, name)
        for item, title, row in _item_titles(frame).itertuples(index=False):
            seen_title, seen_at = first_seen.setdefault(item, (title, f"{source} row {row}"))
            if title != seen_title:
                raise ValueError(
                    f"{source}: row {row}: item {item} is titled {title!r}, but {seen_title!r} at {seen_at}; "
                    "an item id needs one title: fix the ids or the titles"
                )


def _item_titles(frame: pd.DataFrame) -> pd.DataFrame:
    """Distinct ``(item, title, row)`` of a split (candidates and histories), each with the first row holding it,
    in row order."""
    position = np.arange(len(frame))
    candidates = pd.DataFrame({"item": frame["item_id"], "title": frame["title"], "row": frame.index, "at": position})
    histories = pd.DataFrame(
        {"item": frame["history_item_ids"], "title": frame["history_titles"], "row": frame.index, "at": position}
    ).explode(["item", "title"]).dropna(subset=["item"])
    pairs = pd.concat([candidates, histories]).sort_values("at", kind="stable")
    return pairs.drop_duplicates(["item", "title"]).astype({"item": np.int64})[["item", "title", "row"]]
