"""The one exception type for bad input (floor 1), and cheap readers that raise it.

Every verb checks its whole input (config, files, options) before it loads data or writes a
file, and refuses bad input with an :class:`InputError`: a one-line message that names what was
expected and what arrived. The CLI catches it in one place, prints the line and exits with
status 2. Library code raises it; it never prints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["InputError", "read_json_object", "one_line"]


class InputError(ValueError):
    """A config, file or option given by the user is not usable; the message says why in one
    line (what was expected, what arrived, and the fix when there is one)."""

    def __str__(self) -> str:
        return one_line(super().__str__())


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of blanks folded into single spaces."""
    return " ".join(str(text).split())


def read_json_object(path: str | Path, what: str = "") -> dict[str, Any]:
    """Parse ``path`` as a JSON object; :class:`InputError` naming the file if it is not one.

    Args:
        path: the file.
        what: what the file should be, for the message (e.g. "a run config written by
            `exitwise train`").
    """
    p = Path(path)
    expect = f" ({what})" if what else ""
    if not p.is_file():
        state = "is a directory" if p.is_dir() else "does not exist"
        raise InputError(f"{p} {state}; expected a JSON file{expect}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{p} is not text; expected a JSON file{expect}") from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"{p} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); expected "
            f"a JSON object{expect}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(f"{p} holds a JSON {type(data).__name__}; expected a JSON object{expect}")
    return data
