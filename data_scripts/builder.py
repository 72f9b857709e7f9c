"""Shared steps of every importer: interactions → split frames → saved ``DatasetDict`` + ``stats.json``.

The raw importers (MovieLens-1M, Amazon-Book, synthetic) all follow CoLLM's protocol:
assign each interaction to a split by time, re-map ids to ``1..N`` in order of first appearance,
attach each row's history (the same user's *strictly earlier* positive items, across all splits),
sample ``valid_small`` from ``valid``, and compute warm flags from ``train``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict
from tqdm.auto import tqdm

from trainers.atomic_io import require_empty_or_own, staging_dir, write_json_atomic

from .schema import COLUMNS, FEATURES, SPLITS, add_warm_flags, id_space, split_stats, validate_frame

logger = logging.getLogger(__name__)

DATASET_FILES = ("stats.json", "dataset_dict.json", *SPLITS)  # what a saved dataset folder holds
VALID_SMALL_SEED = 2023
VALID_SMALL_FRACTION = 0.5


def remap_ids(values: pd.Series) -> pd.Series:
    """Map raw ids to ``1..N`` in order of first appearance in ``values`` (0 stays free for padding)."""
    mapping = {raw: new for new, raw in enumerate(pd.unique(values), start=1)}
    return values.map(mapping).astype(np.int64)


def attach_histories(interactions: pd.DataFrame) -> pd.DataFrame:
    """Add ``history_item_ids`` / ``history_titles``: the user's positive items with a strictly
    smaller timestamp, oldest first (ties broken by row order). Rows with equal timestamps do not
    see each other.

    ``interactions`` needs ``user_id``, ``item_id``, ``label``, ``timestamp``, ``title`` and must be
    sorted by ``timestamp`` (stable); its index is kept.
    """
    history_ids = [None] * len(interactions)
    history_titles = [None] * len(interactions)
    position = {index: i for i, index in enumerate(interactions.index)}  # index label → row position
    groups = interactions.groupby("user_id", sort=False)
    for _, user_rows in tqdm(groups, total=groups.ngroups, desc="histories", leave=False):
        ids: list[int] = []
        titles: list[str] = []
        pending: list[tuple[int, str]] = []  # positives of the current timestamp, visible from the next one
        last_time = None
        for index, item, label, time, title in zip(
            user_rows.index, user_rows["item_id"], user_rows["label"], user_rows["timestamp"], user_rows["title"]
        ):
            if time != last_time:
                for pending_item, pending_title in pending:
                    ids.append(pending_item)
                    titles.append(pending_title)
                pending = []
                last_time = time
            history_ids[position[index]] = list(ids)
            history_titles[position[index]] = list(titles)
            if label == 1:
                pending.append((int(item), str(title)))
    result = interactions.copy()
    result["history_item_ids"] = history_ids
    result["history_titles"] = history_titles
    return result


def frames_from_interactions(interactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Build the split frames from raw interactions that already carry a ``split`` column.

    Args:
        interactions: columns ``raw_user``, ``raw_item``, ``label`` (0/1), ``timestamp`` (unix s),
            ``title``, ``split`` (``train`` / ``valid`` / ``test``).

    Returns:
        ``{"train", "valid", "valid_small", "test"?: DataFrame}`` with the ``FEATURES`` columns.
        Ids are re-mapped in order of first appearance after a stable sort by
        (timestamp, raw user, raw item).
    """
    frame = interactions.sort_values(["timestamp", "raw_user", "raw_item"], kind="stable").reset_index(drop=True)
    frame["user_id"] = remap_ids(frame["raw_user"])
    frame["item_id"] = remap_ids(frame["raw_item"])
    frame["label"] = frame["label"].astype(np.int64)
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    frame = attach_histories(frame)
    frames = {}
    for name in ("train", "valid", "test"):
        part = frame[frame["split"] == name].reset_index(drop=True)
        if len(part):
            frames[name] = part
    for name in ("train", "valid"):
        if name not in frames:
            raise ValueError(f"the time split left no rows in '{name}'; check the input period")
    frames["valid_small"] = sample_valid_small(frames["valid"])
    return frames


def sample_valid_small(valid: pd.DataFrame, seed: int = VALID_SMALL_SEED) -> pd.DataFrame:
    """A ``VALID_SMALL_FRACTION`` row sample of ``valid`` drawn with a fixed seed, in valid's row order."""
    return valid.sample(frac=VALID_SMALL_FRACTION, random_state=seed).sort_index().reset_index(drop=True)


def save_dataset_dict(
    frames: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    source: str,
    compute_warm: bool = True,
    sources: Mapping[str, str] | None = None,
) -> dict:
    """Validate the split frames, write them with ``save_to_disk`` and write ``stats.json``, atomically.

    Args:
        frames: split name → frame with the ``FEATURES`` columns (warm flags are (re)computed
            from ``train`` when ``compute_warm``).
        out_dir: destination directory: new, empty, or a previous dataset (replaced whole once the new one is
            complete); a folder of unrelated files is refused.
        source: provenance string stored in ``stats.json``.
        sources: split name → the file it came from, for messages (default: ``"<source> [<split>]"``).

    Returns:
        The stats dictionary written to ``out_dir/stats.json``.
    """
    unknown = sorted(set(frames) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; expected a subset of {list(SPLITS)}")
    if compute_warm:
        frames = add_warm_flags(frames)
    sources = {name: f"{source} [{name}]" for name in frames} | dict(sources or {})
    num_users, num_items = id_space(frames, sources)
    for name, frame in frames.items():
        validate_frame(frame, sources[name], num_users, num_items)
    ordered = [name for name in SPLITS if name in frames]
    dataset_dict = DatasetDict(
        {
            name: Dataset.from_pandas(
                frames[name][list(COLUMNS)].reset_index(drop=True), features=FEATURES, preserve_index=False
            )
            for name in ordered
        }
    )
    out_dir = Path(out_dir)
    require_empty_or_own(out_dir, DATASET_FILES)
    stats = {
        "num_users": num_users,
        "num_items": num_items,
        "splits": {name: split_stats(frames[name]) for name in ordered},
        "source": source,
    }
    # The whole dataset is written aside and renamed into place: a kill or a full disk leaves the old one intact.
    with staging_dir(out_dir) as staging:
        dataset_dict.save_to_disk(str(staging))
        write_json_atomic(staging / "stats.json", stats)
    logger.info("wrote %s (%s)", out_dir, ", ".join(f"{n}: {stats['splits'][n]['rows']} rows" for n in ordered))
    return stats
