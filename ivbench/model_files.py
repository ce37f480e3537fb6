"""Reading the model files a user gives — torch checkpoints, JSON configs, state dicts — so that
every problem with one (missing, empty, truncated, of another format, lacking a key, of
mismatched shapes) is a `ModelFileError` that names the file and says what is wrong
(docs/architecture.md, "Model files").

Torch checkpoints are unpickled with a restricted unpickler: tensors, their storages and a
few plain containers are rebuilt; every other class a checkpoint names (a training run's
config object, a callback's state) becomes an inert stand-in that keeps its pickled state.
So a PyTorch Lightning checkpoint loads without Lightning, Hydra or OmegaConf installed,
and no pickled code runs. Importing this module imports neither torch nor safetensors.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional, Union
from collections.abc import Iterable, Mapping

from .errors import ModelFileError

PathLike = Union[str, Path]


class MissingModelFile(ModelFileError, FileNotFoundError):
    """A model file or folder that is not there."""


def check_file(path: PathLike, what: str) -> Path:
    """`path` as a Path, if it is a non-empty file; else a ModelFileError saying which."""
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingModelFile(f"{what} {path} not found")
    if not path.is_file():
        raise ModelFileError(f"{what} {path} is a folder; give the file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{what} {path} is empty (0 bytes): the download or copy did not finish")
    return path


# -- torch checkpoints ----------------------------------------------------------------------
_SAFE_BUILTINS = {"slice": slice, "set": set, "frozenset": frozenset, "complex": complex, "bytearray": bytearray,
                  "range": range, "tuple": tuple, "list": list, "dict": dict, "int": int, "float": float,
                  "bool": bool, "str": str, "bytes": bytes}
# What a state dict needs besides torch's rebuild functions, dtypes and storages.
_SAFE_GLOBALS = {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("torch", "Tensor"),
                 ("torch.nn.parameter", "Parameter"), ("torch.serialization", "_get_layout"),
                 ("torch._tensor", "_rebuild_from_type_v2"), ("_codecs", "encode")}


class StandIn:
    """Any class a checkpoint names outside torch's tensors: built without running its code,
    keeping what the pickle gives it (constructor arguments, state, items)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__.setdefault("_args", args)

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # a pickled dict subclass
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value: Any) -> None:  # a pickled list subclass
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)


def _allowed(module: str, name: str) -> Any:
    """The real object for a global that rebuilding tensors needs, or None."""
    import importlib

    import torch

    if module in ("builtins", "__builtin__"):  # protocol 2 (torch.save's) writes Python 2's name
        return _SAFE_BUILTINS.get(name)
    if (module, name) in _SAFE_GLOBALS:
        return getattr(importlib.import_module(module), name)
    if module == "torch._utils" and name.startswith("_rebuild_"):
        return getattr(torch._utils, name, None)
    if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
        return getattr(torch, name)
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _allowed(module, name)
        if found is not None:
            return found
        return type(name, (StandIn,), {"__module__": module, "__qualname__": name})


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load takes a module-like object with `Unpickler` (zip checkpoints) and `load` (the legacy
# format's header records).
RESTRICTED_PICKLE = SimpleNamespace(__name__="ivbench_restricted_pickle", Unpickler=_RestrictedUnpickler,
                                    load=_restricted_load)


def load_torch_file(path: PathLike, what: str) -> Any:
    """The object in a torch checkpoint (`torch.save` zip or legacy format), tensors on the CPU."""
    import torch

    path = check_file(path, what)
    try:
        return torch.load(str(path), map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False)
    except Exception as exc:  # torch reports bad files as RuntimeError, UnpicklingError, EOFError…
        raise ModelFileError(f"{what} {path} cannot be read as a torch checkpoint: {_reason(exc)} "
                             "(truncated, or not a file written by torch.save?)") from None


def load_safetensors_file(path: PathLike, what: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = check_file(path, what)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError for a bad header or size
        raise ModelFileError(f"{what} {path} cannot be read as safetensors: {_reason(exc)} "
                             "(truncated, or not a safetensors file?)") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- JSON configs ---------------------------------------------------------------------------
def read_json_object(path: PathLike, what: str) -> dict[str, Any]:
    """A JSON file holding one object."""
    path = check_file(path, what)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(f"{what} {path} is not text (a binary file given as a JSON config?)") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{what} {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                             f"column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{what} {path} holds a JSON {type(data).__name__}, not an object of settings")
    return data


def require_keys(data: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise ModelFileError(f"{where} lacks {', '.join(repr(k) for k in missing)}")


# -- state dicts ----------------------------------------------------------------------------
def state_dict_mismatch(expected: Mapping[str, Any], state: Mapping[str, Any],
                        optional: tuple[str, ...] = ()) -> Optional[str]:
    """What keeps `state` from loading into a model whose state dict is `expected`: missing,
    unexpected and wrongly shaped keys (a few of each named), or None when it fits. Keys
    starting with an `optional` prefix may be absent or extra."""

    def counted(key: str) -> bool:
        return not key.startswith(optional) if optional else True

    missing = [k for k in expected if k not in state and counted(k)]
    unexpected = [k for k in state if k not in expected and counted(k)]
    wrong = [f"{k} {tuple(_shape(state[k]))} (expected {tuple(_shape(v))})"
             for k, v in expected.items() if k in state and tuple(_shape(state[k])) != tuple(_shape(v))]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong)):
        if keys:
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', …' if len(keys) > 3 else ''})")
    return "; ".join(parts) + " keys" if parts else None


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


__all__ = ["MissingModelFile", "RESTRICTED_PICKLE", "StandIn", "check_file", "load_safetensors_file",
           "load_torch_file", "read_json_object", "require_keys", "state_dict_mismatch"]
