"""Raw Amazon 2018 Books (``Books_5.json.gz`` + ``meta_Books.json.gz``) → CoLLM's Amazon-Book split.

Protocol (CoLLM; choices in ``docs/data.md``): reviews of 2017 (UTC) of items that have a title;
one review per (user, item), the earliest; users and items with more than 20 ratings, filtered
repeatedly until stable; label = 5 stars; train = January–November; December ordered by time
and halved at a day boundary into valid (first half) and test; valid_small = 50% of valid.
"""

from __future__ import annotations

import ast
import gzip
import json
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .builder import frames_from_interactions, save_dataset_dict
from .schema import require_input_file

logger = logging.getLogger(__name__)

YEAR = 2017
MIN_RATINGS = 20  # keep users/items with strictly more ratings than this
POSITIVE_STARS = 5.0


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, stripped line)`` of a text file, gunzipped when its name ends in ``.gz``; a file that
    is not gzip, is cut short or is not UTF-8 raises ``ValueError`` naming it."""
    require_input_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                yield line_number, line.strip()
    except (gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(
            f"{path}: not a gzip file, or a damaged one ({error}); expected the .json.gz download"
        ) from error
    except EOFError as error:
        raise ValueError(f"{path}: the gzip file is cut short ({error}); download it again") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error}); expected JSON lines") from error


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` from a (gzipped) JSON-lines file; Python-literal lines accepted."""
    for line_number, line in _lines(path):
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            try:  # the 2014 dumps and some 2018 meta files are Python dict literals
                record = ast.literal_eval(line)
            except (ValueError, SyntaxError) as error:
                raise ValueError(f"{path}: line {line_number} is neither JSON nor a Python dict") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {line_number} holds a {type(record).__name__}, expected an object")
        yield line_number, record


def read_reviews(path: str | Path, year: int = YEAR) -> pd.DataFrame:
    """Reviews of ``year`` (UTC): columns ``raw_user, raw_item, rating, timestamp``."""
    path = Path(path)
    start = int(pd.Timestamp(f"{year}-01-01", tz="UTC").timestamp())
    end = int(pd.Timestamp(f"{year + 1}-01-01", tz="UTC").timestamp())
    rows = []
    for line_number, record in tqdm(_json_lines(path), desc="reviews", unit=" lines", leave=False):
        try:
            timestamp = int(record["unixReviewTime"])
            if start <= timestamp < end:
                rows.append((str(record["reviewerID"]), str(record["asin"]), float(record["overall"]), timestamp))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path}: line {line_number}: needs reviewerID, asin, overall, unixReviewTime ({error!r})"
            ) from error
    if not rows:
        raise ValueError(f"{path}: no reviews dated {year}")
    return pd.DataFrame(rows, columns=["raw_user", "raw_item", "rating", "timestamp"])


def read_titles(path: str | Path, asins: set[str]) -> dict[str, str]:
    """``asin → title`` for the wanted ``asins`` (non-empty titles only)."""
    titles = {}
    for _, record in tqdm(_json_lines(Path(path)), desc="meta", unit=" lines", leave=False):
        asin = record.get("asin")
        title = str(record.get("title") or "").strip()
        if asin in asins and title:
            titles[asin] = title
    return titles


def filter_min_ratings(reviews: pd.DataFrame, min_ratings: int = MIN_RATINGS) -> pd.DataFrame:
    """Drop users and items with ``<= min_ratings`` ratings, repeatedly, until no row is dropped."""
    for round_number in range(1, 1000):
        user_counts = reviews["raw_user"].map(reviews["raw_user"].value_counts())
        item_counts = reviews["raw_item"].map(reviews["raw_item"].value_counts())
        keep = (user_counts > min_ratings) & (item_counts > min_ratings)
        logger.info("filter round %d: %d → %d rows", round_number, len(reviews), int(keep.sum()))
        if keep.all():
            return reviews
        reviews = reviews[keep]
    raise ValueError("the min-ratings filter did not converge")


def assign_december_split(reviews: pd.DataFrame, year: int = YEAR) -> pd.DataFrame:
    """``split``: January–November → train; December halved at the day of its median row."""
    december_start = int(pd.Timestamp(f"{year}-12-01", tz="UTC").timestamp())
    reviews = reviews.copy()
    december = np.sort(reviews["timestamp"].to_numpy()[reviews["timestamp"].to_numpy() >= december_start])
    cutoff = december[len(december) // 2] if len(december) else december_start
    reviews["split"] = np.select(
        [reviews["timestamp"] < december_start, reviews["timestamp"] < cutoff], ["train", "valid"], default="test"
    )
    return reviews


def prepare_amazon_book(
    reviews_path: str | Path,
    meta_path: str | Path,
    out_dir: str | Path,
    year: int = YEAR,
    min_ratings: int = MIN_RATINGS,
) -> dict:
    """Build the Amazon-Book ``DatasetDict`` in ``out_dir``; return the stats."""
    reviews = read_reviews(reviews_path, year)
    titles = read_titles(meta_path, set(reviews["raw_item"]))
    reviews = reviews[reviews["raw_item"].isin(titles.keys())]
    reviews = reviews.sort_values(["timestamp", "raw_user", "raw_item"], kind="stable")
    reviews = reviews.drop_duplicates(["raw_user", "raw_item"], keep="first")
    reviews = filter_min_ratings(reviews, min_ratings)
    if reviews.empty:
        raise ValueError(f"{reviews_path}: no users/items with more than {min_ratings} ratings in {year}")
    reviews["title"] = reviews["raw_item"].map(titles)
    reviews["label"] = (reviews["rating"] == POSITIVE_STARS).astype(np.int64)
    frames = frames_from_interactions(assign_december_split(reviews, year))
    return save_dataset_dict(frames, out_dir, source=f"amazon-book-2018:{Path(reviews_path)}")
