"""Run ``cl3mrec ARGS...`` and ``kill -9`` the process itself at a chosen point (no cleanup code runs).

    python tests/kill_points.py MODULE ATTRIBUTE before|after:N -- ARGS...

``MODULE.ATTRIBUTE`` (e.g. ``transformers.Trainer._save_rng_state``) is wrapped so that its N-th call sends
SIGKILL to this process just before (``before``) or just after (``after``) the original runs.
"""

import importlib
import os
import signal
import sys


def install_kill_point(module_name: str, attribute: str, when: str) -> None:
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    mode, count = when.split(":")
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if mode == "before" and calls[0] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if mode == "after" and calls[0] == int(count):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    module_name, attribute, when, separator, *argv = sys.argv[1:]
    assert separator == "--", "usage: kill_points.py MODULE ATTRIBUTE before|after:N -- ARGS..."
    install_kill_point(module_name, attribute, when)
    from trainers.cli import main

    sys.exit(main(argv))
