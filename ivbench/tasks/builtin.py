"""Where the built-in task files live (the top-level tasks/ folder, installed as package data)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path


def builtin_task_dir() -> Path:
    import ivbench_tasks

    return Path(ivbench_tasks.__file__).parent


@lru_cache(maxsize=1)
def builtin_task_files() -> dict[str, tuple[Path, str]]:
    """name -> (task file, description), read from each file's header."""
    import yaml

    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(builtin_task_dir().glob("*.yaml")):
        with open(path, encoding="utf-8") as f:
            header = yaml.safe_load(f) or {}
        found[str(header.get("name", path.stem))] = (path, str(header.get("description", "")).strip())
    return found
