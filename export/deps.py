"""Optional packages the export stage needs, imported with an error that names the extra."""

from __future__ import annotations

import contextlib
import importlib
import logging

from training.errors import UserError


def require(module: str, purpose: str):
    """Import `module`, or raise a UserError saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise UserError(
            f"{purpose} needs the package {module.split('.')[0]!r}, which is not installed ({e}): "
            "pip install 'edgecomplete[export]'"
        ) from None


@contextlib.contextmanager
def quiet_logs():
    """Hold onnxruntime's and TensorFlow's Python log chatter to errors while they work.

    Both log advice meant for their own developers (pre-processing hints,
    temporary SavedModel paths) through the standard logging tree, which
    would bury the export's own progress lines.
    """
    names = ("", "tensorflow", "absl")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
