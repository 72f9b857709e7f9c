"""Atomic writes: a file or a whole directory appears complete or not at all (never half-written).

Everything is written beside its target (same file system) and moved into place with ``os.replace``;
a failure removes the temporary copy and leaves any previous target untouched. A temporary copy left behind by a
killed process (``kill -9``: no cleanup runs) is named with that process's id and removed by the next write of
the same target once that process is gone.
"""

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def staging_file(path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=_staging_prefix(path), suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp creates 0600
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return ``path``."""
    with staging_file(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_npy_atomic(path, array) -> Path:
    """Write ``array`` in NumPy's ``.npy`` format to ``path`` atomically; return ``path``."""
    import numpy as np

    with staging_file(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.asarray(array))
    return Path(path)


def write_json_atomic(path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON (+ newline) to ``path`` atomically; return ``path``."""
    return write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


@contextmanager
def staging_dir(out_dir) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``out_dir``; on success it replaces ``out_dir``.

    An existing ``out_dir`` is moved aside first and deleted only once the new one is in place.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=_staging_prefix(out_dir)))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp creates 0700
        if out_dir.exists():
            retired = staging.with_name(staging.name + ".old")
            os.replace(out_dir, retired)
            os.replace(staging, out_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _staging_prefix(target: Path) -> str:
    """``.<name>.<pid>.``: hidden, and naming the process that writes it."""
    return f".{target.name}.{os.getpid()}."


def _process_is_alive(pid: int) -> bool:
    """True while process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_staging(target) -> None:
    """Delete temporary copies of ``target`` whose writing process no longer runs (killed mid-write)."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    prefix = f".{target.name}."
    for sibling in target.parent.iterdir():
        pid_text = sibling.name[len(prefix) :].split(".", 1)[0]
        if sibling.name.startswith(prefix) and pid_text.isdigit() and not _process_is_alive(int(pid_text)):
            if sibling.is_dir() and not sibling.is_symlink():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)


def require_empty_or_own(out_dir, own_patterns, field: str = "--out", *, replaced: bool = True) -> None:
    """Refuse to write into an existing, non-empty folder whose entries are not what this output holds.

    ``own_patterns`` are ``fnmatch`` patterns of the names the output holds (``stats.json``, ``checkpoint-*``, ...).
    ``replaced``: the output replaces the folder whole, so every entry must be one of its own (anything else —
    a user's files, another kind of cl3mrec output — would be deleted). Otherwise (a stage folder that training
    writes into and resumes from) one entry of its own is enough, so that outputs never mix with unrelated
    files. A file in place of the folder is refused too.

    Raises:
        ValueError: naming the folder, a few of the entries that are not its own and the fix.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ValueError(f"{field}={out_dir}: is a file, not a folder; choose a folder path")
    names = sorted(entry.name for entry in out_dir.iterdir())
    foreign = [name for name in names if not any(fnmatch.fnmatch(name, pattern) for pattern in own_patterns)]
    if names and len(foreign) == len(names):
        raise ValueError(
            f"{field}={out_dir}: folder holds {len(names)} unrelated entries (e.g. {names[:3]}) and no cl3mrec "
            "output; choose a new or empty folder so outputs do not mix"
        )
    if replaced and foreign:
        raise ValueError(
            f"{field}={out_dir}: folder holds {len(foreign)} entries this output does not write (e.g. "
            f"{foreign[:3]}), and the output replaces the folder whole; choose a new or empty folder"
        )


def require_writable_file(path, field: str) -> None:
    """Check, before any long work, that ``path`` can be written atomically (its folder exists or can be made,
    and accepts a new file); raise naming ``field`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{field}={path}: is a folder; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path.parent, prefix=_staging_prefix(path), suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(f"{field}={path}: cannot be written ({error.strerror}); choose a writable path") from None
