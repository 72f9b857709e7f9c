"""Import CoLLM's pickled split DataFrames (ML-1M ``*_ood2.pkl``, Amazon-Book) into our format.

CoLLM columns: ``uid, iid, label, timestamp, his, his_title, title, flag, not_cold``. ``his`` starts
with a padding 0 whose ``his_title`` entry is ``""``; in some files the first train row has
``his=[0]`` but ``his_title=[]``. The leading padding is dropped from both lists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .builder import sample_valid_small, save_dataset_dict
from .schema import (
    check_one_title_per_item, check_split_relations, history_ids, history_list,
    is_null, require_input_file, validate_frame,
)

logger = logging.getLogger(__name__)

COLLM_COLUMNS = ("uid", "iid", "label", "timestamp", "his", "his_title", "title")

PICKLE_WARNING = (
    "{path}: CoLLM splits are Python pickles, and unpickling runs arbitrary code from the file. "
    "Pass allow_pickle=True (CLI: --allow-pickle) only for files you trust."
)


def collm_source(pickle_dir: str | Path) -> str:
    """The ``source`` recorded for data imported from CoLLM pickles in ``pickle_dir`` (``stats.json``, a CF
    model's ``metrics.json``): ``"collm:<pickle_dir>"``."""
    return f"collm:{pickle_dir}"


def read_collm_pickle(path: str | Path, allow_pickle: bool = False) -> pd.DataFrame:
    """Unpickle one CoLLM split file (a pandas DataFrame); refuses unless ``allow_pickle``."""
    path = Path(path)
    if not allow_pickle:
        raise ValueError(PICKLE_WARNING.format(path=path))
    require_input_file(path)
    try:
        frame = pd.read_pickle(path)
    except Exception as error:  # truncated, not a pickle (a CSV?), or pickled by an unknown library version
        raise ValueError(
            f"{path}: cannot be unpickled ({type(error).__name__}: {error}); expected CoLLM's pickled pandas "
            "DataFrame (a CSV or Parquet file? convert it to .parquet with our columns)"
        ) from None
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{path}: expected a pickled pandas DataFrame, found {type(frame).__name__}")
    return frame


def _strip_padding(ids, titles, source: str, row) -> tuple[list[int], list[str]]:
    """Drop CoLLM's leading padding entry (id 0) from a history; raise on a real length mismatch."""
    raw_ids = history_ids(ids, source, "his", row).tolist()
    titles = history_list(titles, source, "his_title", row)
    raw_titles = [t if is_null(t) else str(t) for t in titles]  # nulls stay null: validate_frame names them
    ids, titles = raw_ids, raw_titles
    if ids and ids[0] == 0:
        ids = ids[1:]
        if len(titles) == len(ids) + 1:  # the padding entry has its own (empty) title
            titles = titles[1:]
    if len(ids) != len(titles):
        raise ValueError(
            f"{source}: row {row}: 'his' has {len(raw_ids)} entries but 'his_title' has {len(raw_titles)} "
            "(only a leading padding 0 without a title is allowed)"
        )
    return ids, titles


def frame_from_collm(collm: pd.DataFrame, source: str) -> pd.DataFrame:
    """Convert one CoLLM split DataFrame to our columns (warm flags from ``not_cold``, see below).

    ``user_warm``/``item_warm``/``warm`` are all set to CoLLM's ``not_cold`` (both user and item in
    train): a lone file does not say which of the two is cold. Importers with a train split
    recompute them exactly.
    """
    missing = [c for c in COLLM_COLUMNS if c not in collm.columns]
    if missing:
        raise ValueError(f"{source}: missing CoLLM column(s) {missing}; found {list(collm.columns)}")
    if len(collm) == 0:
        raise ValueError(f"{source}: no rows")
    histories = [
        _strip_padding(ids, titles, source, row) for row, ids, titles in zip(collm.index, collm["his"], collm["his_title"])
    ]
    frame = pd.DataFrame(
        {
            "user_id": collm["uid"].to_numpy(),
            "item_id": collm["iid"].to_numpy(),
            "label": collm["label"].to_numpy(),
            "timestamp": collm["timestamp"].to_numpy().astype(np.int64),
            "history_item_ids": [h[0] for h in histories],
            "history_titles": [h[1] for h in histories],
            "title": collm["title"].map(lambda title: title if is_null(title) else str(title)).to_numpy(),
        },
        index=collm.index,
    )
    if "not_cold" in collm.columns:
        warm = collm["not_cold"].to_numpy().astype(bool)
    elif "flag" in collm.columns and (collm["flag"] == -1).all():
        warm = np.ones(len(collm), dtype=bool)  # a train file is warm by definition
    else:
        raise ValueError(f"{source}: missing column 'not_cold' needed for warm flags")
    frame["user_warm"] = warm
    frame["item_warm"] = warm
    frame["warm"] = warm
    validate_frame(frame, source)
    return frame.reset_index(drop=True)


def import_collm(
    out_dir: str | Path,
    train: str | Path,
    valid: str | Path,
    valid_small: str | Path | None = None,
    test: str | Path | None = None,
    allow_pickle: bool = False,
) -> dict:
    """Import CoLLM split pickles into ``out_dir`` (``save_to_disk`` + ``stats.json``); return the stats.

    Warm flags are recomputed from the imported train split. Without ``valid_small`` it is
    sampled from ``valid`` (50%, seed 2023) as CoLLM did. Errors name the file and split (``FILE [split]``),
    and the row where there is one: sparse ids, and an item id with two different titles.
    """
    paths = {"train": train, "valid": valid, "valid_small": valid_small, "test": test}
    sources = {name: f"{path} [{name}]" for name, path in paths.items() if path is not None}
    frames = {name: _read_split(paths[name], allow_pickle) for name in sources}
    if "valid_small" not in frames:
        frames["valid_small"] = sample_valid_small(frames["valid"].reset_index(drop=True))
        sources["valid_small"] = f"{valid} [valid_small, sampled]"
    check_one_title_per_item(frames, sources)
    check_split_relations(frames, sources)
    stats = save_dataset_dict(frames, out_dir, source=collm_source(Path(train).parent), sources=sources)
    _log_not_cold_agreement(frames)  # after the checks: a refused import logs only its error
    return stats


def _read_split(path: str | Path, allow_pickle: bool) -> pd.DataFrame:
    """One CoLLM split in our columns, indexed like the pickle so that messages name the same rows everywhere."""
    collm = read_collm_pickle(path, allow_pickle)
    return frame_from_collm(collm, str(path)).set_axis(collm.index)


def _log_not_cold_agreement(frames: dict[str, pd.DataFrame]) -> None:
    """Warn when CoLLM's ``not_cold`` disagrees with warm flags recomputed from train."""
    users = set(frames["train"]["user_id"].tolist())
    items = set(frames["train"]["item_id"].tolist())
    for name, frame in frames.items():
        recomputed = frame["user_id"].isin(users) & frame["item_id"].isin(items)
        disagree = int((recomputed != frame["warm"]).sum())
        if disagree:
            logger.warning("%s: %d rows where CoLLM's not_cold differs from warm recomputed from train", name, disagree)
