"""Built-in ivbench task files (installed as the package `ivbench_tasks`)."""
