"""Parses the small JSON files of a folder (manifest.json, config.json, verify.json) strictly:
any way a hostile file can fail is one typed line that never quotes the file's contents."""

from __future__ import annotations

import json
from typing import Any

from .errors import ToolkitError


def parse_json(raw: bytes, source: str, error: type[ToolkitError], *, finite_only: bool = True) -> Any:
    """The JSON value of ``raw`` (``source`` names it in messages); ``error`` for bytes that are not
    UTF-8, not JSON, nested too deeply, hold an integer of thousands of digits, or (with
    ``finite_only``) NaN or Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as failure:
        raise error(f"{source} is not UTF-8 text ({failure.reason} at byte {failure.start})") from None

    def refuse_constant(name: str) -> Any:
        raise error(f"{source} holds {name}, which is not a JSON number (values must be finite)")

    try:
        return json.loads(text, parse_constant=refuse_constant if finite_only else None)
    except json.JSONDecodeError as failure:
        raise error(f"{source} is not valid JSON: {failure.msg} at line {failure.lineno}") from None
    except RecursionError:
        raise error(f"{source} is not valid JSON here (nested too deeply)") from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise error(f"{source} is not valid JSON here (a number of too many digits)") from None
