"""Reading literal values out of a Python file without running it.

The suites' scorers need the text their authors' code holds (judge prompts, answer templates,
refusal phrases, answer-extraction rules). ivbench does not ship that text: it reads it from the
user's own checkout of the authors' repository at scoring time (authors.py). A checkout is
untrusted input, so it is never imported or executed: each file is parsed with `ast` and only
literal values are taken from the tree — string constants (with a `.strip()` applied to one, as
the authors' code does), lists of them, and `if`/`elif` chains whose tests are plain string
comparisons against one variable.

Every way a file can fail to hold what is expected (absent, unparsable, a name not defined, a
value of another shape) is a `ModelFileError` naming the file, the name and the line, so a
checkout of an incompatible version says what is wrong with it instead of scoring differently.
"""
from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from ..errors import ModelFileError

# String methods the authors apply to a literal before use ("""…""".strip()).
_STRIPS = ("strip", "lstrip", "rstrip")
FunctionNode = Union[ast.FunctionDef, ast.AsyncFunctionDef]


@dataclass(frozen=True)
class Rule:
    """One test of an if/elif chain: `kind` (contains, equals, startswith, endswith, regex)
    of `pattern` against the text, and the value the branch returns."""

    kind: str
    pattern: str
    answer: object


def string_value(node: Optional[ast.AST]) -> Optional[str]:
    """The string a literal expression evaluates to, or None when it is not one: a constant,
    a concatenation of constants, or one with .strip()/.lstrip()/.rstrip() applied."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = string_value(node.left), string_value(node.right)
        return None if left is None or right is None else left + right
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _STRIPS
            and not node.args and not node.keywords):
        inner = string_value(node.func.value)
        return None if inner is None else getattr(inner, node.func.attr)()
    return None


def string_list(node: Optional[ast.AST]) -> Optional[list[str]]:
    """The strings of a list or tuple literal whose every element is a string; else None."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return None
    values = [string_value(element) for element in node.elts]
    return None if any(v is None for v in values) else [str(v) for v in values]


class PySource:
    """One file of a checkout, parsed (never run); `what` names the checkout in messages."""

    def __init__(self, root: Path, relative: str, what: str) -> None:
        self.relative = relative
        self.path = root / relative
        self.what = what
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: not found; {what} has {relative} (is {root} a checkout of it?)")
        data = self.path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        try:
            self.tree = ast.parse(data, filename=str(self.path))
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            where = f"{self.path}:{line}" if line else str(self.path)
            raise ModelFileError(f"{where}: cannot be parsed as Python ({getattr(exc, 'msg', exc)}); "
                                 f"{what} expected here") from None

    def fail(self, name: str, problem: str, node: Optional[ast.AST] = None) -> ModelFileError:
        line = getattr(node, "lineno", None)
        where = f"{self.path}:{line}" if line else str(self.path)
        return ModelFileError(f"{where}: {name}: {problem} ({self.what} of another version? see the README, "
                              "'Suites', for the version ivbench reads)")

    # -- finding names ---------------------------------------------------------------------------

    def function(self, name: str, cls: Optional[str] = None) -> FunctionNode:
        """The function `name` at module level, or the method `cls.name`."""
        body = self.tree.body
        label = f"{cls}.{name}" if cls else name
        if cls is not None:
            found = next((n for n in body if isinstance(n, ast.ClassDef) and n.name == cls), None)
            if found is None:
                raise self.fail(label, f"no class {cls}")
            body = found.body
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                return node
        raise self.fail(label, "not defined")

    @staticmethod
    def _assigned(body: list[ast.stmt], name: str) -> Optional[ast.Assign]:
        """The last plain assignment `name = …` among `body`'s statements."""
        found = None
        for node in body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found = node
        return found

    def string(self, name: str, scope: Optional[FunctionNode] = None) -> str:
        """The string literal assigned to `name` at module level, or inside function `scope`."""
        label = f"{scope.name}: {name}" if scope is not None else name
        node = self._assigned(scope.body if scope is not None else self.tree.body, name)
        if node is None:
            raise self.fail(label, "not assigned")
        value = string_value(node.value)
        if value is None:
            raise self.fail(label, "not a string literal", node)
        return value

    def attribute_strings(self, method: FunctionNode, attribute: str) -> list[str]:
        """The list of string literals assigned to `self.<attribute>` in `method`."""
        label = f"{method.name}: self.{attribute}"
        for node in ast.walk(method):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Attribute) and t.attr == attribute and isinstance(t.value, ast.Name)
                    and t.value.id == "self" for t in node.targets):
                values = string_list(node.value)
                if values is None:
                    raise self.fail(label, "not a list of string literals", node)
                return values
        raise self.fail(label, "not assigned")

    def loop_strings(self, function: FunctionNode, marker: str) -> list[str]:
        """The strings of the first `for` loop in `function` over a list literal of strings that
        contain `marker`."""
        for node in ast.walk(function):
            if isinstance(node, ast.For):
                values = string_list(node.iter)
                if values and any(marker in v for v in values):
                    return values
        raise self.fail(function.name, f"no loop over a list of strings containing {marker!r}")

    def message_content(self, function: FunctionNode, role: str) -> str:
        """The string literal `content` of the message dict literal whose `role` is `role`."""
        for node in ast.walk(function):
            if isinstance(node, ast.Dict):
                pairs = {string_value(k): v for k, v in zip(node.keys, node.values) if k is not None}
                if string_value(pairs.get("role")) == role and "content" in pairs:
                    value = string_value(pairs["content"])
                    if value is None:
                        raise self.fail(f"{function.name}: {role} message", "content is not a string literal", node)
                    return value
        raise self.fail(function.name, f"no {role} message literal")

    # -- if/elif chains ----------------------------------------------------------------------------

    def rule_chains(self, function: FunctionNode, subject: str) -> Iterator[tuple[ast.If, list[Rule]]]:
        """Each top-level if/elif chain of `function` whose tests compare `subject` with string
        literals, as rules in order; the chain's final `else` is not a rule."""
        for node in function.body:
            if isinstance(node, ast.If) and _rule(node.test, subject) is not None:
                yield node, self._chain(node, subject, function.name)

    def _chain(self, node: ast.If, subject: str, where: str) -> list[Rule]:
        rules: list[Rule] = []
        current: Optional[ast.If] = node
        while current is not None:
            test = _rule(current.test, subject)
            if test is None:
                raise self.fail(where, f"a test other than a string comparison of {subject!r}: "
                                       f"{ast.unparse(current.test)[:80]}", current)
            answer = _returned(current.body)
            if answer is None:
                raise self.fail(where, "a branch that does not just return a literal", current)
            rules.append(Rule(test[0], test[1], answer[0]))
            orelse = current.orelse
            current = orelse[0] if len(orelse) == 1 and isinstance(orelse[0], ast.If) else None
        return rules


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _rule(test: ast.AST, subject: str) -> Optional[tuple[str, str]]:
    """(kind, pattern) of a test: 'x' in s, s == 'x', s.startswith('x'), s.endswith('x'),
    re.search('x', s); None for anything else."""
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        return _compare_rule(test, subject)
    if isinstance(test, ast.Call) and isinstance(test.func, ast.Attribute) and test.args and not test.keywords:
        return _call_rule(test.func, test.args, subject)
    return None


def _compare_rule(test: ast.Compare, subject: str) -> Optional[tuple[str, str]]:
    op, right = test.ops[0], test.comparators[0]
    left_text, right_text = string_value(test.left), string_value(right)
    if isinstance(op, ast.In) and _is_name(right, subject) and left_text is not None:
        return "contains", left_text
    if isinstance(op, ast.Eq) and _is_name(test.left, subject) and right_text is not None:
        return "equals", right_text
    return None


def _call_rule(func: ast.Attribute, args: list[ast.expr], subject: str) -> Optional[tuple[str, str]]:
    first = string_value(args[0])
    if first is None:
        return None
    if func.attr in ("startswith", "endswith") and _is_name(func.value, subject) and len(args) == 1:
        return func.attr, first
    if func.attr == "search" and _is_name(func.value, "re") and len(args) == 2 and _is_name(args[1], subject):
        return "regex", first
    return None


def _returned(body: list[ast.stmt]) -> Optional[tuple[object]]:
    """(value,) when `body` is just `return <literal>`."""
    if len(body) == 1 and isinstance(body[0], ast.Return) and isinstance(body[0].value, ast.Constant):
        return (body[0].value.value,)
    return None
