"""Known problems of the tools: each one's message is the one line the user sees (no traceback)."""

from __future__ import annotations

from pathlib import Path


class ToolError(Exception):
    """A known problem (a missing extra, an output that cannot be written, ...): `medstream`
    prints its message as one line and exits non-zero."""


class OutputError(ToolError):
    """An output file or folder that cannot be written."""


def writable_output(path: str | Path, what: str) -> Path:
    """Check before a long run that `path` can be written (its folder is made); leaves no new
    file behind. Raises OutputError naming the path and the reason."""
    p = Path(path)
    existed = p.exists()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a"):
            pass
    except (FileExistsError, NotADirectoryError) as e:  # a file where a folder should be
        raise OutputError(f"cannot write {what} {str(p)!r}: {_not_a_folder(p)}") from e
    except OSError as e:
        raise OutputError(f"cannot write {what} {str(p)!r}: {e.strerror or e}") from e
    if not existed:
        p.unlink(missing_ok=True)
    return p


def _not_a_folder(path: Path) -> str:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return f"{str(parent)!r} is a file, not a folder"
    return "a file is where a folder should be"


def writable_folder(path: str | Path, what: str) -> Path:
    """Make `path` (a folder) and check that a file can be written in it; raises OutputError."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        raise OutputError(f"cannot make {what} {str(p)!r}: {_not_a_folder(p / 'x')}") from e
    except OSError as e:
        raise OutputError(f"cannot make {what} {str(p)!r}: {e.strerror or e}") from e
    writable_output(p / ".medstream-write-check", what)
    return p
