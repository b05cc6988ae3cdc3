"""Checkpoints: written atomically, read with clear errors.

A checkpoint is one torch.save file holding the resolved train config, the
vocabulary and the weights, so it is everything `eval` and `export` need.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

from edge_runtime.vocab import Vocab
from training.config import TrainConfig
from training.errors import UserError

FORMAT = "edgecomplete-checkpoint"
VERSION = 1
MODEL_FILE = "model.pt"  # best weights only: the artifact
RESUME_FILE = "checkpoint.pt"  # latest weights plus optimizer and data position


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, then rename over it.

    A crash mid-write leaves the previous file whole: rename is atomic on
    one filesystem, and the temporary file lives in the same folder.
    """
    import torch

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve(path: str | Path) -> Path:
    """A checkpoint file, or the folder that holds model.pt."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def load(path: str | Path) -> dict:
    """Read and check a checkpoint; any defect is one UserError."""
    import torch

    path = resolve(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint ({first_line}); retrain or re-download it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an edgecomplete checkpoint")
    if ckpt.get("version") != VERSION:
        raise UserError(
            f"{path} is checkpoint version {ckpt.get('version')}; this edgecomplete reads version {VERSION}"
        )
    return ckpt


def config_of(ckpt: dict) -> TrainConfig:
    return TrainConfig.from_dict(ckpt["config"])


def vocab_of(ckpt: dict) -> Vocab:
    return Vocab(ckpt["vocab"])


def model_of(ckpt: dict):
    """The model in eval mode, weights loaded."""
    from training.models import build_model

    model = build_model(config_of(ckpt).model)
    model.load_state_dict(ckpt["model"])
    return model.eval()
