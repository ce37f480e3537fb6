"""Reading the YAML files users write (run configs, task files), with errors that say where."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml_file(path: Path, error: type[Exception]) -> Any:
    """The document in `path` (None when empty); invalid YAML raises `error` naming the file,
    the line and the parser's complaint."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise error(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
