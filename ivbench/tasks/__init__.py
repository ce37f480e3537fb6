"""Tasks: the task file format, its validation (`loader`), and the built-in task files (`builtin`).

Importing this package imports neither: `ivbench list` reads the built-in tasks' headers only.
"""
