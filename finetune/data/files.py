"""The one way a task reads an input file the user placed (a document, an image): confined to its folder, a regular
file, not too large. Every file-per-example reader goes through `read_input_file` (the images of the image and image +
text tasks, the causal LM's documents); tables go through finetune/data/tables.py after the schema confined their path.

Why each check: a link in data/raw to /etc/hostname or a secret file would put its content into data/ingested.parquet,
which `make push` uploads (paths.outside follows links); opening a FIFO blocks forever and a link to /dev/zero never
ends (only regular files are read); a file larger than the limit is refused before it is read whole into memory.
"""
from __future__ import annotations

import stat
from pathlib import Path

from finetune.paths import RAW_DATA, outside

MAX_INPUT_BYTES = 256 * 2**20  # one document or image; a corpus is many files, a bigger one is split into documents


def read_input_file(path: str | Path, folder: Path = RAW_DATA, limit: int | None = None) -> bytes:
    """The bytes of one input file inside `folder` (links followed, and confined too); ValueError with the reason when
    it is outside, missing, not a regular file (FIFO, device, socket, folder) or larger than `limit` bytes (default
    MAX_INPUT_BYTES)."""
    limit = MAX_INPUT_BYTES if limit is None else limit
    if problem := outside(path, folder):
        raise ValueError(problem)
    path = Path(path)
    try:
        status = path.stat()  # follows links: what would be read
    except OSError:
        raise ValueError(f"file not found: {path}") from None
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"{path} is not a regular file (a folder, FIFO, device or socket): only files are read")
    if status.st_size > limit:
        raise ValueError(f"{path} is {status.st_size:,} bytes; one input file may hold at most {limit:,}")
    with path.open("rb") as handle:
        content = handle.read(limit + 1)  # a file that grew since stat() stops at the limit too
    if len(content) > limit:
        raise ValueError(f"{path} is larger than {limit:,} bytes; one input file may hold at most {limit:,}")
    return content
