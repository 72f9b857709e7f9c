"""Raw MovieLens-1M (``ratings.dat`` + ``movies.dat``) → CoLLM's time split, as a ``DatasetDict``.

Protocol (CoLLM, arXiv 2310.19488; details and choices in ``docs/data.md``): label = rating >= 4;
global calendar-month buckets (UTC); keep the last ``train + valid + test`` months (10 + 5 + 5);
history = the user's strictly earlier positive items within the kept window.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .builder import frames_from_interactions, save_dataset_dict
from .schema import require_input_file

logger = logging.getLogger(__name__)

POSITIVE_RATING = 4


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    """Read a ``::``-separated latin-1 MovieLens file; raise ``ValueError`` naming the file on bad lines."""
    require_input_file(path, hint=f" (expected the MovieLens-1M '{path.name}')")
    rows = []
    with path.open(encoding="latin-1") as handle:
        for line_number, line in enumerate(tqdm(handle, desc=path.name, unit=" lines", leave=False), start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("::")
            if len(fields) != len(names):
                raise ValueError(
                    f"{path}: line {line_number} has {len(fields)} '::'-separated fields, expected {len(names)} ({names})"
                )
            rows.append(fields)
    return pd.DataFrame(rows, columns=names)


def read_movielens(raw_dir: str | Path) -> pd.DataFrame:
    """Ratings joined with titles: columns ``raw_user, raw_item, rating, timestamp, title``."""
    raw_dir = Path(raw_dir)
    ratings = _read_dat(raw_dir / "ratings.dat", ["raw_user", "raw_item", "rating", "timestamp"])
    movies = _read_dat(raw_dir / "movies.dat", ["raw_item", "title", "genres"])
    try:
        ratings = ratings.astype({"raw_user": np.int64, "raw_item": np.int64, "rating": np.int64, "timestamp": np.int64})
        movies = movies.astype({"raw_item": np.int64})
    except ValueError as error:
        raise ValueError(f"{raw_dir}: non-integer UserID/MovieID/Rating/Timestamp ({error})") from error
    titles = dict(zip(movies["raw_item"], movies["title"]))
    unknown = ~ratings["raw_item"].isin(titles.keys())
    if unknown.any():
        raise ValueError(
            f"{raw_dir / 'ratings.dat'}: MovieID {int(ratings['raw_item'][unknown].iloc[0])} is not in movies.dat"
        )
    ratings["title"] = ratings["raw_item"].map(titles)
    return ratings


def assign_month_splits(
    interactions: pd.DataFrame,
    train_months: int = 10,
    valid_months: int = 5,
    test_months: int = 5,
    skip_last_months: int = 0,
) -> pd.DataFrame:
    """Keep the last ``train + valid + test`` calendar months (UTC) and label each row's ``split``.

    The window ends at the month of the latest timestamp minus ``skip_last_months``. Returns the
    kept rows with a ``split`` column (``train`` / ``valid`` / ``test``) and a ``month`` column
    (``"YYYY-MM"``).

    Raises:
        ValueError: a negative ``skip_last_months`` (the window would end after the data).
    """
    if skip_last_months < 0:
        raise ValueError(f"skip_last_months must be >= 0, got {skip_last_months}")
    times = pd.to_datetime(interactions["timestamp"], unit="s", utc=True)
    month_index = (times.dt.year * 12 + times.dt.month - 1).to_numpy()
    last = int(month_index.max()) - skip_last_months
    first = last - (train_months + valid_months + test_months) + 1
    keep = (month_index >= first) & (month_index <= last)
    kept = interactions[keep].copy()
    offset = month_index[keep] - first
    kept["split"] = np.select(
        [offset < train_months, offset < train_months + valid_months], ["train", "valid"], default="test"
    )
    kept["month"] = times[keep].dt.strftime("%Y-%m").to_numpy()
    for name in ("train", "valid", "test"):
        part = kept["month"][kept["split"] == name]
        if len(part):
            logger.info("%s: %s → %s, %d rows", name, part.min(), part.max(), len(part))
    return kept


def prepare_movielens(
    raw_dir: str | Path,
    out_dir: str | Path,
    train_months: int = 10,
    valid_months: int = 5,
    test_months: int = 5,
    skip_last_months: int = 0,
) -> dict:
    """Build the ML-1M ``DatasetDict`` in ``out_dir`` from ``raw_dir/{ratings,movies}.dat``; return the stats."""
    ratings = read_movielens(raw_dir)
    ratings["label"] = (ratings["rating"] >= POSITIVE_RATING).astype(np.int64)
    kept = assign_month_splits(ratings, train_months, valid_months, test_months, skip_last_months)
    frames = frames_from_interactions(kept)
    return save_dataset_dict(frames, out_dir, source=f"movielens-1m:{Path(raw_dir)}")
