"""The suites' own judge prompts and scoring rules, read at scoring time from the user's local copy
of the authors' code or text; ivbench ships none of that text (docs/architecture.md, "Suites").

- VoiceBench: a checkout of github.com/MatthewCYM/VoiceBench (`--metrics voicebench:code=DIR`,
  the task option ``code=DIR`` or ``IVBENCH_VOICEBENCH_CODE``): the two judge prompts and the
  judge's system message (api_judge.py), the multiple-choice answer templates and fallbacks
  (src/evaluator/mcq.py), the refusal phrases (src/evaluator/harm.py) and the BBH answer rules
  (src/evaluator/bbh.py);
- URO-Bench: a checkout of github.com/Ruiqi-Yan/URO-Bench (`urobench:code=DIR`,
  ``IVBENCH_UROBENCH_CODE``): each mode's judge prompt and the system message (metrics/mark_gpt.py);
- Big Bench Audio: a text file holding the authors' "LLM Evaluator Prompt"
  (`big_bench_audio:prompt_file=FILE`, ``IVBENCH_BIG_BENCH_AUDIO_PROMPT``), or the markdown
  page that shows it in a fenced block.

The Python files are parsed, never run (pysource.py). What is read is checked — every expected
name present with the expected shape, every placeholder the scorer fills present — and a copy
that fails a check is a `ModelFileError` naming the file and the name. Each loaded text has an
`Origin`: a digest of the files read and the git commit when the copy is a git checkout; it is
part of the metric's identity (the score cache) and of each result's details (scores.jsonl).
Without a copy configured, the results that need the text are missing with `missing_reason`.
"""
from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, cast
from collections.abc import Callable

from ..errors import ConfigError, ModelFileError
from .pysource import PySource, Rule

Messages = list[dict[str, str]]

VOICEBENCH_ENV = "IVBENCH_VOICEBENCH_CODE"
UROBENCH_ENV = "IVBENCH_UROBENCH_CODE"
BBA_ENV = "IVBENCH_BIG_BENCH_AUDIO_PROMPT"
VOICEBENCH_REPO = "github.com/MatthewCYM/VoiceBench"
UROBENCH_REPO = "github.com/Ruiqi-Yan/URO-Bench"
BBA_PAGE = "huggingface.co/blog/big-bench-audio-release"

VOICEBENCH_FILES = {"judge": "api_judge.py", "mcq": "src/evaluator/mcq.py", "harm": "src/evaluator/harm.py",
                    "bbh": "src/evaluator/bbh.py"}
UROBENCH_FILE = "metrics/mark_gpt.py"
# bbh.py's per-subtask methods, extract_answer_<name>; "yn" is the yes/no rule the others try first.
BBH_METHODS = ("hyperbaton", "yn", "lies", "navigate", "sports")
CHOICE_MARK = "[CHOICE]"  # what mcq.py's templates hold in the place of the option letter


def _multi(rounds: int) -> tuple[str, ...]:
    return tuple(f"{kind}{k}" for k in range(1, rounds + 1) for kind in ("question", "answer", "reference"))


# Each judge prompt: the variable holding it and the placeholders the scorer fills in.
VOICEBENCH_PROMPTS = {"open": ("meta_prompt_open", ("prompt", "response")),
                      "qa": ("meta_prompt_qa", ("prompt", "reference", "response"))}
UROBENCH_PROMPTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "open": ("prompt_open", ("question", "answer")),
    "semi-open": ("prompt_semi_open", ("question", "answer", "reference")),
    "qa": ("prompt_qa", ("question", "answer", "reference")),
    **{f"multi-{n}": (f"prompt_multi{n}", _multi(n)) for n in range(2, 6)},
    "sf": ("prompt_sf", ("question", "answer", "reference")),
    "ue": ("prompt_ue", ("question", "emotion", "answer", "reference")),
    "gs": ("prompt_gs", ("question", "style", "answer", "reference")),
    "ml": ("prompt_ml", ("question", "language", "answer")),
    "sa": ("prompt_sa", _multi(3)),
}
BBA_PLACEHOLDERS = ("question", "official_answer", "candidate_answer")


@dataclass(frozen=True)
class Origin:
    """Which copy of the authors' text was read: where, a digest of the files, the git commit."""

    path: str
    digest: str
    commit: Optional[str]

    def identity(self) -> dict[str, Any]:
        # The path is left out: two copies of the same files score alike.
        return {"digest": self.digest, "commit": self.commit}


@dataclass(frozen=True)
class Prompt:
    """A judge prompt: the system message ("" for none) and the user message with ``{name}``
    placeholders, filled by plain replacement in the order given, as the authors' code does."""

    system: str
    user: str

    def render(self, values: dict[str, str]) -> Messages:
        user = self.user
        for key, value in values.items():
            user = user.replace("{" + key + "}", value)
        messages = [{"role": "system", "content": self.system}] if self.system else []
        return messages + [{"role": "user", "content": user}]


@dataclass(frozen=True)
class BbhRules:
    yes_no_first: bool  # the method tries the yes/no rules first
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class VoiceBenchText:
    origin: Origin
    prompts: dict[str, Prompt]  # "open", "qa"
    mcq_templates: tuple[str, ...]
    mcq_fallbacks: tuple[Rule, ...]
    refusals: tuple[str, ...]
    bbh: dict[str, BbhRules]  # BBH_METHODS


@dataclass(frozen=True)
class UroBenchText:
    origin: Origin
    prompts: dict[str, Prompt]  # UROBENCH_PROMPTS' keys


@dataclass(frozen=True)
class BigBenchAudioText:
    origin: Origin
    prompt: Prompt


# -- where the copy is -----------------------------------------------------------------------------


def locate(option: Optional[str], env: str, metric: str, option_name: str, want_dir: bool,
           what: str = "") -> Optional[Path]:
    """The metric option's path, else the environment variable's; None when neither is set.
    `what` says what the path should be, for the error when it is not there."""
    value, source = (option, f"{metric}: {option_name}={option}") if option else (os.environ.get(env), env)
    if not value:
        return None
    path = Path(str(value)).expanduser()
    kind = "folder" if want_dir else "file"
    if not (path.is_dir() if want_dir else path.is_file()):
        raise ConfigError(f"{source}: {path} is not a {kind}" + (" (it is a file)" if want_dir and path.is_file()
                                                                  else " (it is a folder)" if path.is_dir() else "")
                          + (f"; give {what} (README, 'Suites')" if what else ""))
    return path


def git_commit(root: Path) -> Optional[str]:
    """The commit checked out in `root` when `root` is a git work tree (it has .git), read from
    the .git files without running git; None otherwise or when it cannot be read."""
    dot_git = root / ".git"
    return _head_commit(dot_git) if dot_git.exists() else None


def _head_commit(dot_git: Path) -> Optional[str]:
    git_dir = dot_git
    if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if not text.startswith("gitdir:"):
            return None
        git_dir = (dot_git.parent / text[len("gitdir:"):].strip()).resolve()
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if head.startswith("ref:"):
        head = _ref(head[4:].strip(), git_dir, common) or ""
    return head if re.fullmatch(r"[0-9a-f]{40}", head) else None


def _ref(name: str, git_dir: Path, common: Path) -> Optional[str]:
    for base in (git_dir, common):
        if (base / name).is_file():
            return (base / name).read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] == name:
                return parts[0]
    return None


def _origin(root: Path, hashes: dict[str, str]) -> Origin:
    text = "\n".join(f"{name}\0{digest}" for name, digest in sorted(hashes.items()))
    return Origin(str(root), hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], git_commit(root))


def _check_placeholders(source: Any, name: str, text: str, needed: tuple[str, ...]) -> None:
    absent = [p for p in needed if "{" + p + "}" not in text]
    if absent:
        raise source.fail(name, "lacks the placeholder(s) " + ", ".join("{" + p + "}" for p in absent))


# -- VoiceBench ------------------------------------------------------------------------------------


def load_voicebench(root: Path) -> VoiceBenchText:
    what = f"VoiceBench ({VOICEBENCH_REPO})"
    files = {key: PySource(root, rel, what) for key, rel in VOICEBENCH_FILES.items()}
    judge = files["judge"]
    system = judge.message_content(judge.function("generate"), "system")
    prompts = {}
    for key, (variable, needed) in VOICEBENCH_PROMPTS.items():
        text = judge.string(variable)
        _check_placeholders(judge, variable, text, needed)
        prompts[key] = Prompt(system, text)
    templates, fallbacks = _mcq(files["mcq"])
    refusals = files["harm"].attribute_strings(files["harm"].function("__init__", "HarmEvaluator"), "refusal_string")
    if not refusals:
        raise files["harm"].fail("HarmEvaluator.__init__: self.refusal_string", "empty")
    bbh = {name: _bbh_method(files["bbh"], name) for name in BBH_METHODS}
    return VoiceBenchText(_origin(root, {f.relative: f.sha256 for f in files.values()}), prompts, tuple(templates),
                          tuple(fallbacks), tuple(refusals), bbh)


def _mcq(source: PySource) -> tuple[list[str], list[Rule]]:
    method = source.function("extract_answer", "MCQEvaluator")
    templates = source.loop_strings(method, CHOICE_MARK)
    lacking = [t for t in templates if CHOICE_MARK not in t]
    if lacking:
        raise source.fail("MCQEvaluator.extract_answer", f"template {lacking[0]!r} lacks {CHOICE_MARK}")
    chains = [rules for _, rules in source.rule_chains(method, "response")]
    if len(chains) != 1:
        raise source.fail("MCQEvaluator.extract_answer", f"{len(chains)} fallback if/elif chains, expected one")
    fallbacks = chains[0]
    for rule in fallbacks:
        if rule.kind != "contains" or rule.answer not in ("A", "B", "C", "D"):
            raise source.fail("MCQEvaluator.extract_answer", f"fallback {rule.pattern!r} is not a phrase giving "
                                                             "an option letter")
    return templates, fallbacks


def _bbh_method(source: PySource, name: str) -> BbhRules:
    method = source.function(f"extract_answer_{name}", "BBHEvaluator")
    label = f"BBHEvaluator.extract_answer_{name}"
    chains = list(source.rule_chains(method, "response"))
    if len(chains) != 1 or not chains[0][1]:
        raise source.fail(label, f"{len(chains)} answer if/elif chains, expected one")
    node, rules = chains[0]
    for rule in rules:
        if type(rule.answer) is not int or rule.answer not in (0, 1):
            raise source.fail(label, f"rule {rule.pattern!r} returns {rule.answer!r}, not 0 or 1")
    # The subtasks other than hyperbaton call extract_answer_yn before their own chain.
    before = method.body[:method.body.index(node)]
    yes_no_first = any(isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                       and call.func.attr == "extract_answer_yn" for stmt in before for call in ast.walk(stmt))
    return BbhRules(yes_no_first, tuple(rules))


# -- URO-Bench -------------------------------------------------------------------------------------


def load_urobench(root: Path) -> UroBenchText:
    source = PySource(root, UROBENCH_FILE, f"URO-Bench ({UROBENCH_REPO})")
    system = source.message_content(source.function("mark"), "system")
    scope = source.function("get_prompt")
    prompts = {}
    for mode, (variable, needed) in UROBENCH_PROMPTS.items():
        text = source.string(variable, scope)
        _check_placeholders(source, f"get_prompt: {variable}", text, needed)
        prompts[mode] = Prompt(system, text)
    return UroBenchText(_origin(root, {source.relative: source.sha256}), prompts)


# -- Big Bench Audio -------------------------------------------------------------------------------


class _TextFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, name: str, problem: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: {name} {problem}: save the \"LLM Evaluator Prompt\" block of "
                              f"{BBA_PAGE} as this file (README, 'Suites')")


def load_big_bench_audio(path: Path) -> BigBenchAudioText:
    data = path.read_bytes()
    source = _TextFile(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise source.fail("the prompt", "is not UTF-8 text") from None
    if "```" in text:  # the blog's markdown: the fenced block holding the placeholders
        blocks = [b for b in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
                  if all("{" + p + "}" in b for p in BBA_PLACEHOLDERS)]
        if not blocks:
            raise source.fail("the prompt", "is in no fenced block with {question}, {official_answer} and "
                                            "{candidate_answer}")
        text = blocks[0]
    text = text.replace("\r\n", "\n")
    # The page prints two of its line breaks as the escape "\n"; a judge reads line breaks there.
    text = text.replace("\\n", "\n")
    text = text[:-1] if text.endswith("\n") else text  # the file's (or the block's) final newline
    _check_placeholders(source, "the prompt", text, BBA_PLACEHOLDERS)
    hashes = {path.name: hashlib.sha256(data).hexdigest()}
    origin = _origin(path.parent, hashes)
    return BigBenchAudioText(Origin(str(path), origin.digest, origin.commit), Prompt("", text))


# -- the metrics' and tasks' entry points ---------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    option: str  # the metric's (and task's) option naming the copy
    env: str
    folder: bool  # a checkout folder (else one file)
    load: Callable[[Path], Any]
    what: str  # what the path should be, said when it is not there


_SOURCES = {"voicebench": _Source("code", VOICEBENCH_ENV, True, load_voicebench,
                                  f"the folder of a clone of {VOICEBENCH_REPO}"),
            "urobench": _Source("code", UROBENCH_ENV, True, load_urobench, f"the folder of a clone of {UROBENCH_REPO}"),
            "big_bench_audio": _Source("prompt_file", BBA_ENV, False, load_big_bench_audio,
                                       f"the \"LLM Evaluator Prompt\" of {BBA_PAGE} saved as a text file")}


def text_for(metric: str, value: Optional[str]) -> Any:
    """The authors' text for `metric` from the copy its option names (else its environment
    variable names); None when neither names one."""
    source = _SOURCES[metric]
    path = locate(value, source.env, metric, source.option, source.folder, source.what)
    return None if path is None else source.load(path)


def task_scorer(metric: str, value: Optional[str]) -> str:
    """A suite task's default scorer: `metric`, given the task's copy of the authors' text when it
    names one (loaded now, so a wrong copy stops the run before any system runs)."""
    if not value:
        return metric
    text_for(metric, value)
    return f"{metric}:{_SOURCES[metric].option}={value}"


def voicebench_text(code: Optional[str]) -> Optional[VoiceBenchText]:
    return cast(Optional[VoiceBenchText], text_for("voicebench", code))


def urobench_text(code: Optional[str]) -> Optional[UroBenchText]:
    return cast(Optional[UroBenchText], text_for("urobench", code))


def big_bench_audio_text(prompt_file: Optional[str]) -> Optional[BigBenchAudioText]:
    return cast(Optional[BigBenchAudioText], text_for("big_bench_audio", prompt_file))


def missing_reason(suite: str, what: str) -> str:
    """Why a result that needs the authors' `what` is missing, and how to point ivbench at it."""
    if suite == "voicebench":
        how = (f"a checkout of {VOICEBENCH_REPO}: --metrics voicebench:code=DIR, the task option code=DIR or "
               f"{VOICEBENCH_ENV}=DIR")
    elif suite == "urobench":
        how = (f"a checkout of {UROBENCH_REPO}: --metrics urobench:code=DIR, the task option code=DIR or "
               f"{UROBENCH_ENV}=DIR")
    else:
        how = (f"the \"LLM Evaluator Prompt\" of {BBA_PAGE} saved as a file: --metrics "
               f"big_bench_audio:prompt_file=FILE, the task option prompt_file=FILE or {BBA_ENV}=FILE")
    return f"needs {what}, which ivbench does not ship; point it at {how} (README, 'Suites')"
