"""The errors a user can fix, apart from bugs (docs/architecture.md, "Errors").

Every problem that the person running ivbench can fix — a run configuration, a task file, a
plugin name or option, a model file, an endpoint, an audio file, a run directory — is raised
as an `IvbenchError` whose message names the file (line, field) and says what to do. The
command line prints such an error as one line and exits 2. Anything else that escapes a
command is a bug (in ivbench or in a plugin): the command line prints its traceback and
exits 1. So a user's mistake never shows a traceback, and a bug never hides behind one line.

Each class also derives from the built-in exception it refines (ValueError, LookupError,
FileNotFoundError…), so code that catches those keeps working.
"""
from __future__ import annotations


class IvbenchError(Exception):
    """Something the user can fix; the message says where and what to do."""


class ConfigError(IvbenchError, ValueError):
    """A run configuration (YAML or flags) or an option value that cannot be run."""


class TaskFileError(IvbenchError, ValueError):
    """A task file or dataset that cannot be used."""


class PluginError(IvbenchError, LookupError):
    """An unknown or unloadable plugin (task, system, metric, voice), or options it does not take."""


class ModelFileError(IvbenchError, ValueError):
    """A model, checkpoint or config file that is missing, truncated or of the wrong format."""


class EndpointError(IvbenchError, ConnectionError):
    """An HTTP endpoint (judge, LLM server) that is unreachable, refuses the key or lacks the model."""


class AudioError(IvbenchError, ValueError):
    """Audio that cannot be used, with the place it came from in the message."""


class RunDirError(IvbenchError, ValueError):
    """A run directory that cannot be read, resumed or scored as asked."""


class MissingDependency(IvbenchError, ImportError):
    """An optional package that a chosen plugin or option needs, with the extra that installs it."""


__all__ = ["AudioError", "ConfigError", "EndpointError", "IvbenchError", "MissingDependency",
           "ModelFileError", "PluginError", "RunDirError", "TaskFileError"]
