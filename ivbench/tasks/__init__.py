"""Tasks: the task file format, its validation, and the built-in task files."""
from .loader import TaskFileError, load_task_file

__all__ = ["TaskFileError", "load_task_file"]
