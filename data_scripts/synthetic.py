"""A small synthetic dataset in the project schema, with a real, learnable signal.

Users and items get latent preference vectors and biases; a user rates ``interactions_per_user``
items (drawn by popularity among items already released) at uniform times inside a 20-month
window, and likes an item with probability ``sigmoid(global + b_u + b_i + scale * <p_u, q_i>)``.
About 10% of users join and 10% of items are released after the train months, so valid/test
contain cold rows. The same month split as MovieLens-1M is applied (10 / 5 / 5 months).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from .builder import frames_from_interactions, save_dataset_dict
from .movielens import assign_month_splits

ADJECTIVES = (
    "Red", "Silent", "Golden", "Broken", "Hidden", "Last", "Wild", "Frozen", "Lost", "Secret",
    "Dark", "Bright", "Crimson", "Quiet", "Burning", "Endless", "Midnight", "Iron", "Paper", "Velvet",
)
NOUNS = (
    "Garden", "River", "Kingdom", "Letter", "Island", "Promise", "Mirror", "Highway", "Harbor", "Forest",
    "Shadow", "Winter", "Empire", "Journey", "Station", "Orchard", "Circus", "Lantern", "Voyage", "Tower",
)
YEARS = tuple(range(1970, 2000))
COUNT_FIELDS = ("num_users", "num_items", "interactions_per_user")  # the fields a pipeline's ``data:`` may set
START = pd.Timestamp("2020-01-01", tz="UTC")
NUM_MONTHS = 20
TRAIN_MONTHS = 10


def make_titles(num_items: int, rng: np.random.Generator) -> list[str]:
    """Distinct titles like ``"The Red Garden (1994)"``."""
    combos = list(itertools.product(ADJECTIVES, NOUNS, YEARS))
    if num_items > len(combos):
        raise ValueError(f"num_items={num_items} exceeds the {len(combos)} distinct synthetic titles")
    chosen = rng.choice(len(combos), size=num_items, replace=False)
    return [f"The {combos[i][0]} {combos[i][1]} ({combos[i][2]})" for i in chosen]


def synthetic_interactions(
    num_users: int = 200,
    num_items: int = 300,
    interactions_per_user: int = 40,
    dim: int = 8,
    seed: int = 0,
) -> pd.DataFrame:
    """Raw interactions: ``raw_user, raw_item, label, timestamp, title, true_logit``.

    Raises:
        ValueError: a count that is not an integer >= 1, or more interactions per user than items.
    """
    for field, value in zip(COUNT_FIELDS + ("dim",), (num_users, num_items, interactions_per_user, dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"synthetic data: {field} must be an integer >= 1, got {value!r}")
    if interactions_per_user > num_items:
        raise ValueError(f"interactions_per_user={interactions_per_user} exceeds num_items={num_items}")
    rng = np.random.default_rng(seed)
    user_vectors = rng.normal(0.0, 1.0, (num_users, dim)) / np.sqrt(dim)
    item_vectors = rng.normal(0.0, 1.0, (num_items, dim)) / np.sqrt(dim)
    user_bias = rng.normal(0.0, 1.2, num_users)
    item_bias = rng.normal(0.0, 1.2, num_items)
    popularity = rng.pareto(1.5, num_items) + 1.0
    titles = make_titles(num_items, rng)

    month_seconds = 30 * 24 * 3600
    start = int(START.timestamp())
    end = start + NUM_MONTHS * month_seconds
    # ~10% of users/items only appear after the train months: they are cold in valid/test
    after_train = start + (TRAIN_MONTHS + 1) * month_seconds
    user_start = np.where(rng.random(num_users) < 0.1, after_train, start)
    item_release = np.where(rng.random(num_items) < 0.1, after_train, start)

    rows = []
    for user in range(num_users):
        times = np.sort(rng.integers(user_start[user], end, interactions_per_user))
        seen: set[int] = set()
        for time in times:
            available = np.flatnonzero(item_release <= time)
            available = available[~np.isin(available, list(seen))]
            weights = popularity[available] / popularity[available].sum()
            item = int(rng.choice(available, p=weights))
            seen.add(item)
            logit = 0.3 + user_bias[user] + item_bias[item] + 2.5 * user_vectors[user] @ item_vectors[item]
            label = int(rng.random() < 1.0 / (1.0 + np.exp(-logit)))
            rows.append((user + 1, item + 1, label, int(time), titles[item], float(logit)))
    return pd.DataFrame(rows, columns=["raw_user", "raw_item", "label", "timestamp", "title", "true_logit"])


def generate_synthetic(
    out_dir: str | Path,
    num_users: int = 200,
    num_items: int = 300,
    interactions_per_user: int = 40,
    seed: int = 0,
) -> dict:
    """Write a synthetic ``DatasetDict`` (train / valid / valid_small / test) to ``out_dir``; return the stats.

    Raises:
        ValueError: a count that is not an integer >= 1 (see :func:`synthetic_interactions`).
    """
    interactions = synthetic_interactions(num_users, num_items, interactions_per_user, seed=seed)
    split = assign_month_splits(interactions, TRAIN_MONTHS, 5, 5)
    frames = frames_from_interactions(split)
    return save_dataset_dict(frames, out_dir, source=f"synthetic:users={num_users},items={num_items},seed={seed}")
