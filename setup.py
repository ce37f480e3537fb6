# The built-in task files live in the top-level tasks/ folder (docs/architecture.md, "Package layout") and install
# as the package `ivbench_tasks`; pyproject.toml alone cannot map a folder under another name
# while also finding ivbench's subpackages.
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["ivbench", "ivbench.*"]) + ["ivbench_tasks"],
    package_dir={"ivbench_tasks": "tasks"},
)
