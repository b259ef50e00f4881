"""Files written whole or not at all: a reader never sees half a file, and a crash, a SIGKILL or
Ctrl-C mid-write leaves the previous file as it was, with at most a hidden temporary file beside it,
which the next run removes (remove_partial_writes).

Every file the package writes (checkpoints, metrics, tables, plots) goes through replace().
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


@contextmanager
def replace(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yields a hidden temporary path beside `path` to write; once the block ends, the temporary file
    replaces `path` in one rename (atomic on POSIX and Windows). If the block fails, `path` is left as
    it was. durable: flush the file and the rename to disk, so that after a power cut the new file,
    not the old one, is there (for checkpoints). The file's mode follows the umask, as any other."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one process writes a directory at a time
    try:
        yield tmp
        if durable:
            _sync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable and os.name == "posix":  # the rename itself (a directory cannot be opened on Windows)
        _sync(path.parent)


def _sync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with replace(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(data, path: str | Path) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def check_writable(directory: str | Path, what: str) -> None:
    """Raise one line that says why `directory` cannot be written (`what` names it: "--out"), or
    return having written and removed a file there: before hours of work, not after. It leaves no
    trace: the directories it made to try are removed again."""
    directory = Path(directory)
    made = [d for d in [directory, *directory.parents] if not d.exists()]  # the deepest first
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-check.{os.getpid()}.tmp"  # one per process: torchrun's ranks check at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{what} {directory}: cannot be written ({e.strerror or e})") from None
    finally:
        for made_here in made:
            with suppress(OSError):  # (another rank's, removed already, or written into since)
                made_here.rmdir()


def remove_partial_writes(directory: str | Path) -> None:
    """Delete what writes killed before they finished left in `directory`: the hidden temporary files
    ('.last.pt.1234.tmp', '.metrics.json.1234.tmp', ...) that replace() renames only once complete. A
    SIGKILL cannot be caught, so the next run tidies up. Call it only where no other process writes."""
    for partial in Path(directory).glob(".*.tmp*"):
        if partial.is_file():
            partial.unlink(missing_ok=True)
