"""Download raw public datasets (MovieLens-1M from GroupLens)."""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from trainers.atomic_io import require_empty_or_own, staging_dir, staging_file

logger = logging.getLogger(__name__)
RAW_FILE_PATTERNS = ("*.dat", "README*")  # what an unzipped MovieLens folder holds

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
DATASETS = {"ml-1m": ML1M_URL}


class DownloadError(OSError):
    """A dataset could not be fetched (an input / network problem: exit status 2); the message names the URL and
    says how to get the archive by hand."""


def download_dataset(name: str, out_dir: str | Path, url: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch and unzip dataset ``name`` into ``out_dir``; return the folder holding its files.

    For ``ml-1m`` that is ``out_dir/ml-1m`` with ``ratings.dat`` and ``movies.dat`` (ready for
    ``cl3mrec data prepare-ml1m --raw-dir``). The archive is written under a temporary name and becomes
    ``out_dir/<name>.zip`` only once complete and a valid zip; on failure nothing is left behind (nor the folders
    this call created).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; known: {sorted(DATASETS)}")
    url = url or DATASETS[name]
    out_dir = Path(out_dir)
    require_empty_or_own(out_dir / name, RAW_FILE_PATTERNS)  # the unzip replaces that folder whole: check first
    created = _topmost_missing(out_dir)
    archive = out_dir / f"{name}.zip"
    logger.info("downloading %s to %s", url, archive)
    try:
        with staging_file(archive) as partial:
            _fetch(url, partial, name, out_dir, timeout)
            _check_zip(partial, url, name)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    with staging_dir(out_dir / name) as staging:  # a failed or killed unzip leaves no half-filled folder
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)
        top = staging / name  # the archive's own top folder (ml-1m/...): its files go straight into out_dir/name
        if top.is_dir():
            for entry in list(top.iterdir()):
                os.replace(entry, staging / entry.name)
            top.rmdir()
    logger.info("extracted %s into %s", archive, out_dir / name)
    return out_dir / name


def _topmost_missing(folder: Path) -> Path | None:
    """The outermost not-yet-existing folder among ``folder`` and its parents (what creating it would add)."""
    missing = None
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


def _fetch(url: str, target: Path, name: str, out_dir: Path, timeout: float) -> None:
    """Copy ``url`` into ``target``; raise ``DownloadError`` naming the URL and the manual route."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, target.open("wb") as handle:
            shutil.copyfileobj(response, handle)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DownloadError(
            f"could not download {name} from {url} ({error}). Fetch the archive by hand on a machine with "
            f"network access, unzip it into {out_dir}, and run 'cl3mrec data prepare-ml1m --raw-dir {out_dir / name}'."
        ) from error


def _check_zip(path: Path, url: str, name: str) -> None:
    """Raise ``DownloadError`` unless ``path`` is a complete zip archive whose members pass their CRC check."""
    try:
        with zipfile.ZipFile(path) as zipped:
            broken = zipped.testzip()
    except (zipfile.BadZipFile, EOFError) as error:
        raise DownloadError(
            f"the download from {url} is not a zip archive ({error}); check --url, or fetch {name} by hand"
        ) from error
    if broken is not None:
        raise DownloadError(f"the download from {url} is a damaged zip archive ({broken} fails its CRC check)")
