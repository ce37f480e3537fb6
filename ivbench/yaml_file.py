"""Reading the files users write (run configs, task files): located values, limits, one-line errors.

`read_yaml_file(path, error)` returns a `Document`: plain values (dict, list, str, int, float,
bool, None) and the line each field was written on, so that a wrong value is reported as
``file:line: field 'dialogues[2].turns[0].text': expected a string, got a list``. PyYAML
composes the node tree (which keeps the marks); the values are built here, so that they can be
bounded: mapping keys are names (the key's text), a key given twice is refused, and merge keys
(``<<: *base``) work as in PyYAML.

Limits, so that a small malformed or hostile file cannot exhaust memory or the stack (each is
overridden by the environment variable named; a value that is not a whole number >= 1 is refused):

- ``IVBENCH_MAX_FILE_BYTES`` (64 MiB): size of a task file, a dialogues file or a run config;
- ``IVBENCH_MAX_DEPTH`` (32, at most 100): lists and mappings nested inside each other;
- ``IVBENCH_MAX_ALIAS_EXPANSION`` (100,000): values plus characters that YAML aliases (``*name``)
  may repeat in one file, each use of an alias counting all it repeats; a "billion laughs" file of
  nested aliases stops here instead of expanding to gigabytes.

Bytes that are not UTF-8 and NUL bytes are refused with the file, line and column. The limits
on dialogues (count, turns, text length) are in `ivbench.tasks.loader`.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union
from collections.abc import Mapping

from .errors import ConfigError

Key = Union[str, int]


# --- limits ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limit:
    """A size limit with its default, overridable by an environment variable."""

    env: str
    default: int
    ceiling: Optional[int] = None  # a value above it would defeat the limit's purpose

    def get(self) -> int:
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(raw.replace("_", ""))
        except ValueError:
            value = 0
        if value < 1 or (self.ceiling is not None and value > self.ceiling):
            top = f" and at most {self.ceiling}" if self.ceiling is not None else ""
            raise ConfigError(f"environment variable {self.env}={raw!r}: give a whole number >= 1{top} "
                              f"(default {self.default})")
        return value

    def hint(self, value: int) -> str:
        return f"the limit is {value:,}; set {self.env} to change it"


MAX_FILE_BYTES = Limit("IVBENCH_MAX_FILE_BYTES", 64 * 1024 * 1024)
# Each level of YAML composing costs three Python frames: 100 levels stay far from the
# interpreter's recursion limit.
MAX_DEPTH = Limit("IVBENCH_MAX_DEPTH", 32, ceiling=100)
MAX_ALIAS_EXPANSION = Limit("IVBENCH_MAX_ALIAS_EXPANSION", 100_000)


# --- where a value is -------------------------------------------------------------------------

def field_name(keys: tuple[Key, ...]) -> str:
    """('dialogues', 2, 'turns', 0, 'text') -> "dialogues[2].turns[0].text"."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


class Where:
    """A field of a file, printed as ``file:line: field 'a.b[0]'``.

    `lines` maps field paths to the line they were written on (a YAML document); `line` is the
    line of everything below (a JSONL line). A field without its own line (one that is missing)
    takes the line of the nearest enclosing field that has one.
    """

    # A plain class with slots: loading a task makes one per field checked.
    __slots__ = ("file", "keys", "lines", "line")

    def __init__(self, file: Union[str, Path], keys: tuple[Key, ...] = (),
                 lines: Optional[Mapping[tuple[Key, ...], int]] = None, line: Optional[int] = None) -> None:
        self.file = file
        self.keys = keys
        self.lines = lines
        self.line = line

    def at(self, *keys: Key) -> Where:
        return Where(self.file, self.keys + keys, self.lines, self.line)

    @property
    def line_no(self) -> Optional[int]:
        if self.line is not None:
            return self.line
        if self.lines is None:
            return None
        for end in range(len(self.keys), -1, -1):
            found = self.lines.get(self.keys[:end])
            if found is not None:
                return found
        return None

    @property
    def field(self) -> str:
        name = field_name(self.keys)
        return name if len(name) <= 200 else name[:200] + "…"

    def __str__(self) -> str:
        line = self.line_no
        return f"{self.file}" + (f":{line}" if line else "") + (f": field '{self.field}'" if self.keys else "")

    def error(self, cls: type[Exception], message: str) -> Exception:
        return cls(f"{self}: {message}")


def shown(text: str, limit: int = 200) -> str:
    """repr() of a value for a one-line message, cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def kind(value: Any) -> str:
    """What a value is, in the words of a YAML or JSON file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    return type(value).__name__


def got(value: Any) -> str:
    """"got a string ('two')": the kind, and a short scalar itself."""
    text = f"got {kind(value)}"
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        shown = repr(value)
        text += f" ({shown[:40]}…)" if len(shown) > 40 else f" ({shown})"
    return text


# --- bytes -> text ----------------------------------------------------------------------------

def _position(raw: bytes, offset: int, first_line: int) -> tuple[int, int]:
    line = raw.count(b"\n", 0, offset) + first_line
    column = offset - (raw.rfind(b"\n", 0, offset) + 1) + 1
    return line, column


def decode_text(raw: bytes, file: Union[str, Path], error: type[Exception], first_line: int = 1) -> str:
    """UTF-8 text without NUL bytes, or `error` naming the file, line and column."""
    nul = raw.find(b"\x00")
    if nul >= 0:
        line, column = _position(raw, nul, first_line)
        raise error(f"{file}:{line}: NUL byte at column {column}; the file must be UTF-8 text "
                    "(is it binary, or saved as UTF-16?)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _position(raw, exc.start, first_line)
        raise error(f"{file}:{line}: byte 0x{raw[exc.start]:02x} at column {column} is not UTF-8; "
                    "save the file as UTF-8") from None


def read_limited(path: Path, error: type[Exception]) -> bytes:
    """The bytes of a file no larger than IVBENCH_MAX_FILE_BYTES."""
    limit = MAX_FILE_BYTES.get()
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"{path}: {size:,} bytes, larger than a task file or run config may be "
                        f"({MAX_FILE_BYTES.hint(limit)})")
        chunks: list[bytes] = []
        total = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):  # not read(limit): that would allocate the limit
                total += len(chunk)
                if total > limit:  # it grew since stat()
                    raise error(f"{path}: larger than a task file or run config may be "
                                f"({MAX_FILE_BYTES.hint(limit)})")
                chunks.append(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return b"".join(chunks)


def nested_too_deep(value: Any, limit: int) -> Optional[tuple[Key, ...]]:
    """The path of the first list or mapping nested deeper than `limit`, or None."""
    stack: list[tuple[Any, tuple[Key, ...], int]] = [(value, (), 1)]
    while stack:
        item, keys, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return keys
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, keys + (key,), depth + 1) for key, child in children)
    return None


# --- YAML --------------------------------------------------------------------------------------

@dataclass
class Document:
    """A YAML file's values and the line of each field."""

    file: Union[str, Path]
    data: Any
    lines: dict[tuple[Key, ...], int]

    def where(self, *keys: Key) -> Where:
        return Where(self.file, tuple(keys), self.lines)


class _TooDeep(Exception):
    def __init__(self, mark: Any) -> None:
        super().__init__()
        self.mark = mark


def _loader_class() -> type:
    import yaml

    class AliasNode(yaml.Node):
        """An alias kept as such (PyYAML returns the anchored node itself), with where it is used."""

        id = "alias"

        def __init__(self, target: Any, mark: Any) -> None:
            super().__init__("alias", target, mark, mark)

    class Loader(yaml.SafeLoader):
        max_depth = 32

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.get_event()
                if event.anchor not in self.anchors:
                    raise yaml.composer.ComposerError(None, None, f"found undefined alias {event.anchor!r}",
                                                      event.start_mark)
                return AliasNode(self.anchors[event.anchor], event.start_mark)
            # PyYAML composes recursively: stop before deep nesting exhausts the stack. One level
            # of slack, so that the builder, which knows the field, reports the usual case.
            if self._depth > self.max_depth + 1:
                raise _TooDeep(self.peek_event().start_mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    return Loader


_LOADER: Optional[type] = None


def _loader() -> type:
    global _LOADER
    if _LOADER is None:
        _LOADER = _loader_class()
    return _LOADER


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


class _Builder:
    """Plain values from composed nodes, with each field's line; bounded in depth and in what
    aliases repeat."""

    MAP = "tag:yaml.org,2002:map"
    SEQ = "tag:yaml.org,2002:seq"
    MERGE = "tag:yaml.org,2002:merge"

    def __init__(self, file: Union[str, Path], loader: Any, error: type[Exception]) -> None:
        self.file = file
        self.loader = loader
        self.error = error
        self.lines: dict[tuple[Key, ...], int] = {}
        self.max_depth = MAX_DEPTH.get()
        self.max_alias = MAX_ALIAS_EXPANSION.get()
        self.alias_cost = 0

    def fail(self, keys: tuple[Key, ...], message: str, line: Optional[int] = None) -> Exception:
        where = Where(self.file, keys, self.lines, line)
        return self.error(f"{where}: {message}")

    def build(self, node: Any, keys: tuple[Key, ...], depth: int, alias_line: Optional[int]) -> Any:
        # What an alias repeats is placed at the alias: that is where its field paths are.
        line = alias_line or node.start_mark.line + 1
        if node.id == "alias":
            self.lines.setdefault(keys, line)
            return self.build(node.value, keys, depth, line)
        self.lines.setdefault(keys, line)
        if alias_line is not None:
            self.alias_cost += 1 + (len(node.value) if node.id == "scalar" else 0)
            if self.alias_cost > self.max_alias:
                raise self.fail(keys, "the aliases (*name) in this file repeat too much "
                                f"({MAX_ALIAS_EXPANSION.hint(self.max_alias)}, counting values and "
                                "characters); write the values out, or use fewer nested aliases", alias_line)
        if node.id == "scalar":
            return self.scalar(node, keys)
        if depth > self.max_depth:
            raise self.fail(keys, f"nested more than {self.max_depth} lists and mappings deep "
                            f"({MAX_DEPTH.hint(self.max_depth)})")
        if node.id == "sequence":
            if node.tag != self.SEQ:
                raise self.fail(keys, f"the tag {node.tag!r} is not supported; write a plain list")
            return [self.build(item, keys + (i,), depth + 1, alias_line) for i, item in enumerate(node.value)]
        if node.tag != self.MAP:
            raise self.fail(keys, f"the tag {node.tag!r} is not supported; write a plain mapping")
        return self.mapping(node, keys, depth, alias_line)

    def scalar(self, node: Any, keys: tuple[Key, ...]) -> Any:
        import yaml

        try:
            return self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            raise self.fail(keys, f"cannot read {node.value[:40]!r}: {_one_line(getattr(exc, 'problem', exc))}"
                            ) from None
        except (ValueError, OverflowError) as exc:  # an out-of-range date, an integer of 5,000 digits
            raise self.fail(keys, f"cannot read {node.value[:40]!r}: {_one_line(exc)}") from None

    def mapping(self, node: Any, keys: tuple[Key, ...], depth: int, alias_line: Optional[int]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges = []
        for key_node, value_node in node.value:
            while key_node.id == "alias":
                key_node = key_node.value
            if key_node.id != "scalar":
                raise self.fail(keys, "a mapping key is a name, not a list or mapping",
                                key_node.start_mark.line + 1)
            if key_node.tag == self.MERGE:
                merges.append(value_node)
                continue
            key = str(key_node.value)
            line = alias_line or key_node.start_mark.line + 1
            if key in first_line:
                raise self.fail(keys + (key,), f"given twice (first on line {first_line[key]})", line)
            first_line[key] = line
            self.lines.setdefault(keys + (key,), line)
            out[key] = self.build(value_node, keys + (key,), depth + 1, alias_line)
        for value_node in merges:  # `<<: *base` or `<<: [*a, *b]`: keys given here win
            merged = self.build(value_node, keys, depth, alias_line)
            for item in merged if isinstance(merged, list) else [merged]:
                if not isinstance(item, dict):
                    raise self.fail(keys, f"'<<' merges mappings, got {kind(item)}", value_node.start_mark.line + 1)
                for key, value in item.items():
                    out.setdefault(key, value)
        return out


def read_yaml_text(text: str, file: Union[str, Path], error: type[Exception]) -> Document:
    """The YAML document in `text` (data None when empty); invalid or oversized YAML raises
    `error` naming `file`, the line and what is wrong."""
    import yaml

    loader = _loader()(text)
    loader.max_depth = MAX_DEPTH.get()
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(file, None, {})
        builder = _Builder(file, loader, error)
        return Document(file, builder.build(node, (), 1, None), builder.lines)
    except _TooDeep as exc:
        raise error(f"{file}:{exc.mark.line + 1}: nested more than {loader.max_depth} lists and mappings deep "
                    f"({MAX_DEPTH.hint(loader.max_depth)})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or exc
        raise error(f"{file}{line}: not valid YAML ({_one_line(problem)})") from None
    finally:
        loader.dispose()


def read_yaml_file(path: Union[str, Path], error: type[Exception]) -> Document:
    """The YAML document in `path`, with the lines of its fields (see `read_yaml_text`)."""
    path = Path(path)
    text = decode_text(read_limited(path, error), path, error)
    return read_yaml_text(text.removeprefix("\ufeff"), path, error)
