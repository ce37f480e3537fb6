"""The run directory: the only hand-over between generation, scoring and reporting."""
from .run_store import ConfigMismatch, RunStore, read_jsonl_records

__all__ = ["ConfigMismatch", "RunStore", "read_jsonl_records"]
