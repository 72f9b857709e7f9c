"""How ``cl3mrec`` reports a failure: one line naming the file / field / id and the fix, never a traceback.

Input problems (bad files, bad config values, unwritable paths, a full disk) exit with status 2; anything
else is a bug and exits with status 1. ``cl3mrec --debug ...`` shows the traceback instead.
"""

import errno
import pickle

import yaml
from safetensors import SafetensorError

INPUT_ERROR_STATUS = 2
UNEXPECTED_ERROR_STATUS = 1
INTERRUPTED_STATUS = 130

# Exceptions that mean "the input or the environment is wrong", not "the code is wrong".
INPUT_ERRORS = (ValueError, KeyError, OSError, EOFError, yaml.YAMLError, SafetensorError, pickle.UnpicklingError)

_OS_ERROR_FIXES = {
    errno.ENOSPC: (
        "no space left on the device; free some space and rerun the same command (nothing half-written is kept)"
    ),
    errno.EDQUOT: "disk quota exceeded; free some space and rerun the same command (nothing half-written is kept)",
    errno.EACCES: "permission denied; choose a path you can write (--out / output_dir) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a path you can write (--out / output_dir) or fix its permissions",
    errno.EROFS: "read-only file system; choose a writable path (--out / output_dir)",
    errno.ENOTDIR: "a file is in the way where a folder is needed; choose another path or remove that file",
    errno.EEXIST: "a file is in the way where a folder is needed; choose another path or remove that file",
    errno.EISDIR: "is a folder where a file is needed; name a file",
}


def one_line(text) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(text).split())


def describe(error: BaseException) -> str:
    """The one-line message for ``error``: our own messages as they are, OS errors with their path and a fix."""
    if isinstance(error, OSError) and error.errno is not None:
        where = error.filename if error.filename is not None else "cl3mrec"
        fix = _OS_ERROR_FIXES.get(error.errno, error.strerror or "")
        return one_line(f"{where}: {fix}")
    if isinstance(error, KeyError) and len(error.args) == 1:
        return one_line(error.args[0])
    if isinstance(error, INPUT_ERRORS):
        return one_line(error)
    return one_line(
        f"unexpected {type(error).__name__}: {error} (a bug: rerun with `cl3mrec --debug ...` for the traceback)"
    )


def exit_status(error: BaseException) -> int:
    """2 for input problems, 1 for anything else."""
    return INPUT_ERROR_STATUS if isinstance(error, INPUT_ERRORS) else UNEXPECTED_ERROR_STATUS
