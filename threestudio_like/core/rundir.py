"""Run directories: ``outputs/<experiment>/<slug>@<YYYYMMDD-HHMMSS>/`` and safe prompt slugs."""

from __future__ import annotations

import datetime as _dt
import fcntl
import os
import re
import unicodedata
from pathlib import Path
from typing import IO

from .errors import UserError

SUBDIRS = ("ckpts", "save", "export", "video")
MAX_SLUG_LEN = 64


def slugify(text: str, max_len: int = MAX_SLUG_LEN) -> str:
    """A safe, readable file name from a prompt.

    Unicode letters are kept (NFC normalised), path separators, ``..``, control characters
    and shell-unfriendly punctuation become ``_``, runs collapse, length is capped at
    ``max_len`` characters and the result is never empty, ``.`` or ``..``.
    """
    text = unicodedata.normalize("NFC", text or "")
    out = [ch if (ch.isalnum() or ch in "-+,") else "_" for ch in text]
    slug = re.sub(r"_+", "_", "".join(out)).strip("_.-")
    slug = slug[:max_len].rstrip("_.-")
    return slug or "untitled"


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def new_run_dir(root: str | os.PathLike, experiment: str, name: str) -> Path:
    """Create ``root/<experiment>/<slug(name)>@<timestamp>`` (suffix -1, -2... on collision)."""
    base = Path(root) / slugify(experiment) / f"{slugify(name)}@{timestamp()}"
    path, i = base, 0
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    make_run_dir(path)
    return path


def make_run_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    for sub in SUBDIRS:
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def lock_run_dir(path: str | os.PathLike) -> IO[str]:
    """Hold ``path/.lock`` for this process (released when it exits or the file is closed): a
    second run writing into the same directory at the same time is refused."""
    handle = open(Path(path) / ".lock", "a+")  # noqa: SIM115 - held open for the run's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"run directory {path} is in use by another run; wait for it or choose another output_dir"
        ) from None
    return handle
