"""Reading prepared datasets: a whole ``DatasetDict`` directory, its stats, or one split file."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
from datasets import Dataset, DatasetDict, load_from_disk

from .collm_import import frame_from_collm, read_collm_pickle
from .schema import COLUMNS, FEATURES, REQUIRED_SPLITS, check_one_title_per_item, require_input_file, validate_frame

SPLIT_SEPARATOR = "::"
PICKLE_SUFFIXES = (".pkl", ".pickle")
REIMPORT_HINT = "the dataset folder is damaged: import or prepare it again (cl3mrec data ...)"


def read_stats(data_dir: str | Path) -> dict:
    """The ``stats.json`` written next to a saved ``DatasetDict``."""
    path = Path(data_dir) / "stats.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no stats.json; was {data_dir} written by a cl3mrec importer?")
    try:
        stats = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); {REIMPORT_HINT}") from error
    if not isinstance(stats, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(stats).__name__}; {REIMPORT_HINT}")
    for key in ("num_users", "num_items", "splits"):
        if key not in stats:
            raise ValueError(f"{path}: missing field '{key}'; {REIMPORT_HINT}")
    return stats


def load_dataset_dict(data_dir: str | Path) -> DatasetDict:
    """Load a saved ``DatasetDict`` and check its splits and columns."""
    data_dir = Path(data_dir)
    if data_dir.is_file():
        raise ValueError(f"{data_dir}: is a file, not a dataset directory (a saved DatasetDict folder)")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: no such dataset directory")
    dataset_dict = _load_from_disk(data_dir)
    if not isinstance(dataset_dict, DatasetDict):
        raise ValueError(f"{data_dir}: holds a single Dataset, expected a DatasetDict with splits {list(REQUIRED_SPLITS)}")
    missing = [s for s in REQUIRED_SPLITS if s not in dataset_dict]
    if missing:
        raise ValueError(f"{data_dir}: missing split(s) {missing}; found {list(dataset_dict)}")
    for name, split in dataset_dict.items():
        absent = [c for c in COLUMNS if c not in split.column_names]
        if absent:
            raise ValueError(f"{data_dir} [{name}]: missing column(s) {absent}")
    return dataset_dict


def _load_from_disk(data_dir: Path) -> Dataset | DatasetDict:
    """``datasets.load_from_disk``, with a damaged or missing file of the folder named in a ``ValueError``."""
    try:
        return load_from_disk(str(data_dir))
    except (OSError, ValueError, pa.ArrowException) as error:
        if isinstance(error, OSError) and error.errno not in (None, errno.ENOENT):
            raise  # permission denied, I/O error, ...: reported with their own fix
        where = getattr(error, "filename", None) or data_dir
        path, reason = _first_unreadable_file(data_dir) or (where, getattr(error, "strerror", None) or error)
        raise ValueError(f"{path}: cannot be read ({reason}); {REIMPORT_HINT}") from error


def _first_unreadable_file(data_dir: Path) -> tuple[Path, str] | None:
    """The first JSON or Arrow file under ``data_dir`` that does not parse, with the reason; ``None`` if all do."""
    for path in sorted(data_dir.rglob("*")):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".arrow":
                with pa.memory_map(str(path)) as source:
                    pa.ipc.open_stream(source).read_all()
        except (OSError, ValueError, pa.ArrowException) as error:
            return path, str(error) or type(error).__name__
    return None


def load_split_file(
    path: str | Path,
    allow_pickle: bool = False,
    *,
    num_users: int | None = None,
    num_items: int | None = None,
) -> Dataset:
    """Read and validate one split: a CoLLM pickle, a Parquet file, or ``DIR::split`` of a saved dataset.

    Args:
        path: ``file.pkl`` (CoLLM format, needs ``allow_pickle``), ``file.parquet`` (our columns), or
            ``data_dir::split``.
        allow_pickle: permit unpickling (runs code from the file: trusted files only).
        num_users / num_items: id-space sizes (a model's tables) to check ids against; for ``DIR::split`` they
            default to the directory's ``stats.json``, and sizes given must be its own: ids of a smaller data set
            fit a larger model's tables but name other users and items there.

    Returns:
        A ``datasets.Dataset`` with the ``FEATURES`` columns.
    """
    text = str(path)
    if SPLIT_SEPARATOR in text:
        data_dir, split = text.rsplit(SPLIT_SEPARATOR, 1)
        if not data_dir or not split:
            raise ValueError(f"{text}: expected DATASET_DIR{SPLIT_SEPARATOR}SPLIT, e.g. runs/ml1m/data::valid")
        stats = read_stats(data_dir)
        dataset_dict = load_dataset_dict(data_dir)
        if split not in dataset_dict:
            raise ValueError(f"{data_dir}: no split '{split}'; found {list(dataset_dict)}")
        dataset = dataset_dict[split]
        for key, size in (("num_users", num_users), ("num_items", num_items)):
            if size is not None and size != stats[key]:
                raise ValueError(
                    f"{text}: its data set has {key} = {stats[key]} (stats.json), but the model's tables have {size}: "
                    "a split of other data; evaluate the model on its own data set"
                )
        validate_frame(dataset.to_pandas(), text, stats["num_users"], stats["num_items"])
        return dataset.select_columns(list(COLUMNS))
    path = Path(text)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; name a split as '{path}{SPLIT_SEPARATOR}valid'")
    require_input_file(path)
    if path.suffix in PICKLE_SUFFIXES:
        frame = frame_from_collm(read_collm_pickle(path, allow_pickle), text)
    elif path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as error:  # truncated, or another format under a .parquet name
            raise ValueError(f"{path}: not a readable Parquet file ({error}); re-export it with our columns") from None
    else:
        raise ValueError(f"{path}: unknown split file type '{path.suffix}'; expected .pkl, .parquet or DIR::split")
    validate_frame(frame, text, num_users, num_items)
    check_one_title_per_item({text: frame})  # an imported dataset was checked as a whole at import
    return Dataset.from_pandas(frame[list(COLUMNS)].reset_index(drop=True), features=FEATURES, preserve_index=False)
