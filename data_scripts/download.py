"""Download raw public datasets (MovieLens-1M from GroupLens)."""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

logger = logging.getLogger(__name__)

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
DATASETS = {"ml-1m": ML1M_URL}


class DownloadError(RuntimeError):
    """A dataset could not be fetched; the message says how to get it by hand."""


def download_dataset(name: str, out_dir: str | Path, url: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch and unzip dataset ``name`` into ``out_dir``; return the folder holding its files.

    For ``ml-1m`` that is ``out_dir/ml-1m`` with ``ratings.dat`` and ``movies.dat`` (ready for
    ``cl3mrec data prepare-ml1m --raw-dir``).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; known: {sorted(DATASETS)}")
    url = url or DATASETS[name]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f"{name}.zip"
    logger.info("downloading %s to %s", url, archive)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as handle:
            shutil.copyfileobj(response, handle)
    except (urllib.error.URLError, OSError, ValueError) as error:
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {name} from {url} ({error}). Fetch the archive by hand on a machine with "
            f"network access, unzip it into {out_dir}, and run 'cl3mrec data prepare-ml1m --raw-dir {out_dir / name}'."
        ) from error
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(out_dir)
    except zipfile.BadZipFile as error:
        raise DownloadError(f"{archive}: the download from {url} is not a zip archive") from error
    logger.info("extracted %s into %s", archive, out_dir)
    return out_dir / name
