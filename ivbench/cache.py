"""Content-addressed SQLite caches (user-turn TTS now; ASR, MOS and judge calls later).

A key is the SHA-256 of the canonical JSON of everything that determines the value: the
model's identity, its parameters and the exact input. Values are bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Optional, Union


def default_cache_dir() -> Path:
    base = os.environ.get("IVBENCH_CACHE_DIR")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ivbench"


def converted_models_dir() -> Path:
    """Where models converted from another format are kept (a GGUF LLM as a transformers folder):
    `IVBENCH_MODELS_DIR`, else `models/` in the cache folder. Apart from the result caches
    because a converted model is a function of its file alone, and large."""
    base = os.environ.get("IVBENCH_MODELS_DIR")
    return Path(base) if base else default_cache_dir() / "models"


def sha256_file(path: Union[str, Path]) -> str:
    """Hex SHA-256 of a file's bytes (model files, audio), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_key(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SqliteCache:
    """A bytes store in one SQLite file; `enabled=False` makes every lookup a miss."""

    def __init__(self, path: Union[str, Path], enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = None
        self.hits = 0
        self.misses = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
                conn.commit()
            except (OSError, sqlite3.Error) as exc:  # a cache folder that cannot be written: the user's to fix
                from .errors import ConfigError

                raise ConfigError(f"cache {self.path}: cannot be opened ({exc}); give --cache-dir (or "
                                  "IVBENCH_CACHE_DIR) a folder that can be written, or --no-cache") from None
            self._conn = conn
        return self._conn

    def get(self, key: str) -> Optional[bytes]:
        if not self.enabled:
            self.misses += 1
            return None
        with self._lock:
            row = self._connection().execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return bytes(row[0])

    def put(self, key: str, value: bytes) -> None:
        if not self.enabled:
            return
        with self._lock:
            conn = self._connection()
            conn.execute("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)", (key, value))
            conn.commit()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
