"""Atomic writes: a file or a whole directory appears complete or not at all (never half-written).

Everything is written beside its target (same file system) and moved into place with ``os.replace``;
a failure removes the temporary copy and leaves any previous target untouched.
"""

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
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
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
