"""Format versions of the run directory's files (docs/architecture.md, "The run directory").

manifest.json and judge.json carry `format_version`; every line of records.jsonl, records.partial.jsonl and
scores.jsonl carries its own, so a file that grew over several sessions (or was concatenated)
is still read line by line. A file without one was written before versions existed: format 1.
A reader refuses a newer version than it knows, with a message that says to upgrade, rather
than misreading it; bump a version whenever a field changes meaning or a reader would need
to know something new.
"""
from __future__ import annotations

from typing import Any

from ..errors import RunDirError

KEY = "format_version"
MANIFEST_FORMAT = 1
RECORDS_FORMAT = 1
SCORES_FORMAT = 1
JUDGE_FORMAT = 1


def check(data: dict[str, Any], known: int, where: str) -> dict[str, Any]:
    """`data` without its version key, after checking that this ivbench can read that version."""
    version = data.get(KEY, 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise RunDirError(f"{where}: {KEY} {version!r} is not a format version; the file was edited or damaged")
    if version > known:
        raise RunDirError(f"{where}: written by a newer ivbench (format {version}; this one reads up to "
                          f"{known}): upgrade ivbench (pip install -U ivbench) to read it")
    return {k: v for k, v in data.items() if k != KEY}


def stamp(data: dict[str, Any], version: int) -> dict[str, Any]:
    """`data` with its format version first."""
    return {KEY: version, **data}
