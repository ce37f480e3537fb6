"""The `ivbench` command line. Heavy modules are imported inside commands, so `--help` is instant."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional, Union
from collections.abc import Callable

import click

from . import __version__

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, as shells report a command whose reader went away


def _stdout_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has closed it: poll reports an error on it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or not a real file
        return False


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush at exit has nowhere to fail."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _blame(exc: BaseException) -> str:
    """Whose bug an unexpected exception is: the innermost plugin frame in its traceback names
    the plugin; otherwise ivbench."""
    from .registry import plugin_of, plugin_of_file

    tb = exc.__traceback__
    # A plugin file that does not compile has no frame of its own: the error names its file.
    blamed = plugin_of_file(exc.filename) if isinstance(exc, SyntaxError) and exc.filename else None
    while tb is not None:
        plugin = plugin_of(str(tb.tb_frame.f_globals.get("__name__", "")))
        blamed = plugin or blamed
        tb = tb.tb_next
    return f"plugin {blamed}" if blamed else "ivbench"


class _Main(click.Group):
    """The command group, with one rule for errors (docs/architecture.md, "Errors"): what the
    user can fix (`IvbenchError`) is one line and exit 2; anything else is a bug, shown with its
    traceback, exit 1; Ctrl-C is exit 130. The run directory is intact in every case: records
    are appended one by one and every other file is replaced atomically."""

    def invoke(self, ctx: click.Context) -> Any:
        import functools
        import warnings

        from .errors import IvbenchError

        try:
            with warnings.catch_warnings():
                warnings.showwarning = functools.partial(_show_warning, set())
                return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except IvbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: what was finished is saved; the same command resumes", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError as exc:
            if not _stdout_gone():
                _bug(ctx, exc)  # another pipe than stdout
            # `ivbench show RUN | head`: the reader has all it wanted; end as a command killed by SIGPIPE.
            _quiet_stdout()
            ctx.exit(EXIT_STDOUT_CLOSED)
        except Exception as exc:  # noqa: BLE001 - a bug: show all of it
            _bug(ctx, exc)


def _bug(ctx: click.Context, exc: BaseException) -> NoReturn:
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__)
    click.echo(f"\nthis is a bug in {_blame(exc)}, not something you did: please report it with the "
               "traceback above", err=True)
    ctx.exit(EXIT_BUG)


def _show_warning(shown: set[str], message: Union[Warning, str], category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: Optional[str] = None) -> None:
    """A warning as one line `warning: …`, once per command (not Python's file:line and source
    line, again each time a file is read)."""
    text = str(message)
    if text not in shown:
        shown.add(text)
        click.echo(f"warning: {text}", err=True)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ivbench")
def main() -> None:
    """Benchmark voice-interaction LLMs through multi-turn spoken dialogues.

    \b
    ivbench eval                  the demo task through parrot and the offline cascade
    ivbench list                  tasks, systems, metrics and voices, with their options
    ivbench show RUN              a run's manifest and progress
    ivbench score RUN             (re)score a run made anywhere
    ivbench report RUN…           one HTML report comparing runs
    """


def _click_type(spec: Any) -> Any:
    """The click type of an option's declared type (config.py stays free of click)."""
    if spec is None:
        return None
    kind, arg = spec
    if kind == "choice":
        return click.Choice(list(arg))
    if kind == "int":
        return click.IntRange(min=arg)
    if kind == "float":
        return click.FloatRange(min=arg)
    if kind == "path":
        return click.Path(file_okay=False, path_type=Path)
    raise AssertionError(f"unknown option type {spec!r}")


def _shown_default(value: Any) -> Optional[str]:
    if value is None or isinstance(value, bool) or value == [] or value == ():
        return None
    if isinstance(value, list):
        return " and ".join(str(v) for v in value)
    return str(value)


def _with_default(help: str, default: Optional[str]) -> str:
    # Defaults live in the declarations; the flags are made with default None so that a flag
    # the user did not give never overrides the run YAML.
    return help if default is None else f"{help}  [default: {default}]"


def config_options(score_only: bool = False) -> Callable[[Any], Any]:
    """The flags of `ivbench eval` (or, with `score_only`, of `ivbench score`), made from the
    run options' declarations (ivbench.config.EvalConfig, ivbench.judge.JudgeSettings)."""
    import dataclasses

    from .config import EvalConfig, options
    from .judge.settings import flag_fields

    defaults = EvalConfig.__new__(EvalConfig)  # the declared defaults, without checking labels
    for f in dataclasses.fields(EvalConfig):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        object.__setattr__(defaults, f.name, value)
    params = []
    for f, opt in options(score_only):
        if opt.flag is None:
            continue
        extra = dict(opt.click)
        extra["type"] = _click_type(extra.get("type"))
        shown = None if extra.get("is_flag") else _shown_default(opt.show(getattr(defaults, f.name)))
        text = opt.score_help if score_only and opt.score_help else opt.help
        params.append(click.option(opt.flag, f.name, default=None, help=_with_default(text, shown), **extra))
    for f in flag_fields():
        extra = dict(f.metadata["click"])
        extra["type"] = _click_type(extra.get("type"))
        default = None if f.default is dataclasses.MISSING else f.default
        params.append(click.option(f.metadata["flag"], f"judge_{f.name}", default=None,
                                   help=_with_default(f.metadata["help"], _shown_default(default)), **extra))

    def apply(command: Any) -> Any:
        for param in reversed(params):
            command = param(command)
        return command

    return apply


def _given(ctx: click.Context, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters the user gave (on the command line or through their environment variable)."""
    out = {}
    for name, value in params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"):
            out[name] = value
    return out


def print_leaderboard(run_dir: Path) -> None:
    """The run's leaderboard, as the report shows it (ivbench.report.leaderboard), in plain text."""
    from .report.data import load_report_data
    from .report.leaderboard import build_leaderboard
    from .report.render_text import render_console

    data = load_report_data([run_dir])
    click.echo(render_console(data, build_leaderboard(data)))


def _score_and_print(run_dir: Path, config: Any, progress: bool) -> None:
    """Score a run with `config`'s metrics and judge and print its leaderboard."""
    from .provenance import resolve_device
    from .scoring import ScoreConfig, score_run

    # On Ray workers "auto" is decided by the cluster: the driver of a GPU cluster may have no GPU.
    device = config.device if config.uses_ray else resolve_device(config.device)
    score = ScoreConfig(metrics=config.metrics, judge=config.judge, device=device, cache_dir=config.cache_dir,
                        use_cache=config.use_cache, workers=config.workers, ray_address=config.ray_address)
    outcome = score_run(run_dir, score, progress=progress)
    print_leaderboard(run_dir)
    if score.judge is None and any(m.name.startswith("judge") for m in outcome.metrics.values()):
        click.echo("judge scores are missing: no judge configured (--judge-model, --judge-base-url)")
    _judge_summary(run_dir, outcome, score.judge)


def _judge_summary(run_dir: Path, outcome: Any, judge: Any) -> None:
    """What the judge did, with its failures grouped by reason; a judge that failed every request
    (a wrong key, model or URL; a dead server) is an error (exit 2), after the other scores are
    written."""
    from .metrics.judge import summarize_judgements

    summary = summarize_judgements(outcome.rows, outcome.metrics)
    if judge is None or summary is None:
        return
    judge.api_key()  # a judge that could not start (its key is missing) is an error too, not a blank column
    if summary.judged == 0:
        return
    if summary.request_failures or summary.other_failures:
        click.echo("\n".join(summary.lines()), err=True)
    if summary.all_requests_failed:
        from .errors import EndpointError

        reason, _ = summary.request_failures.most_common(1)[0]
        raise EndpointError(f"every judge request failed ({summary.judged}): {reason}. The other scores are "
                            f"written ({run_dir / 'scores.jsonl'}, summary.csv); fix the judge options and run "
                            f"`ivbench score {run_dir}` with them")


@main.command("eval")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run configuration YAML; flags given on the command line override it.")
@config_options()
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-score", is_flag=True, help="Only generate; score later with `ivbench score RUN`.")
@click.pass_context
def eval_command(ctx: click.Context, config_file: Optional[Path], no_progress: bool, no_score: bool,
                 **params: Any) -> None:
    """Run a task's dialogues through systems, record every turn, then score the run."""
    from .config import EvalConfig, load_config_file, merge_flags
    from .runner import run_eval

    kwargs: dict[str, Any] = load_config_file(config_file) if config_file else {}
    config = EvalConfig(**merge_flags(kwargs, _given(ctx, params)))
    if config.judge is not None and not no_score:
        from .judge.client import preflight

        preflight(config.judge)  # a missing key or an unserved model fails now, not after generating
    from .store.lock import keep_locks

    # The run directory's lock, taken by run_eval, stays held until its scores and report are written.
    with keep_locks():
        with _ray_cluster(config):  # one Ray cluster for generating and scoring, when workers are asked for
            result = run_eval(config, progress=not no_progress, argv=sys.argv)
            if no_score:
                print_leaderboard(result.run_dir)
            else:
                _score_and_print(result.run_dir, config, not no_progress)
        click.echo(f"\nrun directory: {result.run_dir}")
        _eval_report(result.run_dir, config.cache_dir, config.use_cache)
    failed = sum(1 for r in result.records if not r.ok)
    if failed:
        click.echo(f"{failed} turns failed; `ivbench show {result.run_dir}` lists their errors, and the same "
                   "command with --retry-failed redoes their dialogues")


def _ray_cluster(config: Any) -> Any:
    """The Ray cluster of `--workers` / `--ray-address` (started or joined once for the command),
    or nothing."""
    import contextlib

    if not config.uses_ray:
        return contextlib.nullcontext()
    from .workers.ray_backend import Cluster, require_ray

    require_ray("--workers" if config.workers is not None else "--ray-address")
    return Cluster(config.workers, config.ray_address, lambda line: click.echo(line, err=True))


def _eval_report(run_dir: Path, cache_dir: Optional[Path], use_cache: bool) -> None:
    """The report at the end of `eval`; the run is complete without it, so a failure only warns."""
    from .report import describe, write_report

    from .errors import IvbenchError

    try:
        path = write_report([run_dir], run_dir / "report.html", cache_dir=cache_dir, use_cache=use_cache)
    except IvbenchError as exc:  # the run and its scores are saved either way
        click.echo(f"warning: the report could not be written ({exc}); try `ivbench report {run_dir}`",
                   err=True)
        return
    click.echo(f"report: {describe(path)}")


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the report. Default: reports/<run names>.<format>.")
@click.option("--format", "fmt", default="html", show_default=True, type=click.Choice(["html", "md", "csv"]),
              help="html: the full page; md and csv: the leaderboard, for papers and spreadsheets.")
@click.option("--audio", default="embed", show_default=True, type=click.Choice(["embed", "link", "none"]),
              help="embed: compressed (Ogg/Opus) inside the page; link: to the runs' WAV files.")
@click.option("--title", help="Page title. Default: the run names.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where encoded audio is cached (default $IVBENCH_CACHE_DIR or ~/.cache/ivbench).")
@click.option("--no-cache", is_flag=True, help="Encode the audio again instead of reading the cache.")
def report_command(runs: tuple[Path, ...], out: Optional[Path], fmt: str, audio: str, title: Optional[str],
                   cache_dir: Optional[Path], no_cache: bool) -> None:
    """One comparison report of one or more runs: leaderboard with CIs and paired tests, plots,
    and every dialogue with its audio, as one self-contained HTML file (or Markdown, CSV)."""
    from .report import describe, write_report

    path = write_report(list(runs), out, fmt=fmt, audio=audio, title=title, cache_dir=cache_dir,
                        use_cache=not no_cache)
    click.echo(f"report: {describe(path)}")


@main.command("score")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@config_options(score_only=True)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.pass_context
def score_command(ctx: click.Context, run_dir: Path, no_progress: bool, **params: Any) -> None:
    """(Re)score a run made anywhere: scores.jsonl, summary.csv, pairwise.csv, crossmodal.csv."""
    from .config import EvalConfig, merge_flags
    from .store import RunStore

    config = EvalConfig(**merge_flags({}, _given(ctx, params), score_only=True))
    RunStore(run_dir).read_manifest()  # not a run directory: say so before loading any metric
    if config.judge is not None:
        from .judge.client import preflight

        # As eval does: a missing key or an unserved model fails before any metric runs. A server that
        # cannot be reached is not warned about: the scoring says so at once.
        preflight(config.judge, warn_unreachable=False)
    _score_and_print(run_dir, config, not no_progress)
    click.echo(f"\nscores: {run_dir / 'scores.jsonl'}\nsummary: {run_dir / 'summary.csv'}")


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(["tasks", "systems", "metrics", "voices"]))
def list_command(kind: Optional[str]) -> None:
    """Tasks, systems, metrics and voices, one line each, with where each comes from; each
    system's, metric's and voice's options below it (give them as name:key=value)."""
    from .registry import KINDS, entries

    for k in [kind] if kind else KINDS:
        click.echo(f"{k}:")
        for entry in entries(k):
            description = f"  {entry.description}" if entry.description else ""
            click.echo(f"  {entry.name:<20} [{entry.origin}]{description}")
            if k != "tasks":  # a task's options are in its description (and a task file has none)
                for line in _option_lines(entry, k):
                    click.echo(f"  {'':<20} {line}")


LONGEST_DEFAULT = 40  # characters of a default shown in `ivbench list` (a system prompt is a paragraph)


def _option_lines(entry: Any, kind: str) -> list[str]:
    """`key=default  what it does` for each option of a plugin (imports its module, which holds
    no heavy imports by the plugin rules)."""
    import inspect

    from .errors import IvbenchError
    from .metrics.base import metric_options
    from .registry import factory_options, load_target

    try:
        factory = load_target(entry.target, kind[:-1])
        options = (metric_options(factory) if inspect.isclass(factory) else []) if kind == "metrics" else \
            factory_options(factory)
    except IvbenchError as exc:
        return [f"(options not shown: {exc})"]
    except Exception as exc:  # noqa: BLE001 - a plugin that cannot be imported: the list still shows the rest
        return [f"(options not shown: {entry.target} cannot be imported: {type(exc).__name__}: {exc})"]
    if not options:
        note = str(getattr(factory, "options_note", "")).replace("{name}", entry.name)
        return ["no options" + (f" ({note})" if note else "")]
    lines: list[str] = []
    plain: list[str] = []  # options without a description, run together on wrapped lines
    for name, default, text in options:
        if text:
            lines += _wrapped(plain) + [f"{name}={_shown_option(default)}  {text}"]
            plain = []
        else:
            plain.append(f"{name}={_shown_option(default)}")
    return lines + _wrapped(plain)


def _wrapped(options: list[str], width: int = 96) -> list[str]:
    """`options` joined by ", " on lines of about `width` characters, never breaking one."""
    lines: list[str] = []
    for option in options:
        if lines and len(lines[-1]) + 2 + len(option) <= width:
            lines[-1] += f", {option}"
        else:
            lines.append(option)
    return [line + ("," if n < len(lines) - 1 else "") for n, line in enumerate(lines)]


def _shown_option(default: Any) -> str:
    import inspect

    if default is inspect.Parameter.empty:
        return "required"
    if default is None or isinstance(default, bool):
        return "null" if default is None else str(default).lower()
    text = str(default)
    text = text if len(text) <= LONGEST_DEFAULT else text[:LONGEST_DEFAULT - 1].rstrip() + "…"
    return f'"{text}"' if any(c.isspace() or c == "," for c in text) else text


@main.command("show")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print the manifest as JSON (with judge.json's settings and usage under \"judge\").")
def show_command(run_dir: Path, as_json: bool) -> None:
    """A run's manifest, progress and judge usage."""
    from .store import RunStore
    from .store.judge_usage import read_judge_usage

    store = RunStore(run_dir)
    manifest = store.read_manifest()
    records = store.records()
    judge = read_judge_usage(run_dir)
    if as_json:
        # judge.json under "judge": where `ivbench score` kept it before it stopped rewriting the manifest.
        shown = manifest if judge is None else {**manifest, "judge": {"settings": judge.settings, "usage": judge.usage}}
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    config = manifest.get("config", {})
    task = manifest.get("task", {})
    git = manifest.get("git") or {}
    hw = manifest.get("hardware", {})
    click.echo(f"run:      {run_dir}")
    click.echo(f"created:  {manifest.get('created')}  (ivbench {manifest.get('ivbench_version')}, "
               f"git {str(git.get('commit', 'unknown'))[:12]}{' dirty' if git.get('dirty') else ''})")
    licence = task.get('licence') or 'no licence given'
    click.echo(f"task:     {config.get('task')}  ({task.get('n_dialogues')} dialogues; {licence})")
    click.echo(f"systems:  {', '.join(config.get('systems', []))}")
    click.echo(f"voice:    {config.get('voice')}   seed: {config.get('seed')}   device: {hw.get('device')}")
    click.echo(f"hardware: {hw.get('cpu')} × {hw.get('cpu_count')}, {hw.get('memory_gib')} GiB"
               + "".join(f"; GPU {g['name']} (driver {g['driver']})" for g in hw.get("gpus", [])))
    _show_workers(manifest)
    if judge is not None:
        click.echo(f"judge:    {judge.describe()}")
    total = task.get("n_dialogues")
    done = store.completed_dialogues()
    systems_done: dict[str, int] = {}
    for system, _ in done:
        systems_done[system] = systems_done.get(system, 0) + 1
    click.echo("\nprogress:")
    for system in _progress_labels(manifest, records):
        click.echo(f"  {system:<24} {systems_done.get(system, 0)}/{'?' if total is None else total} dialogues")
    if records:
        click.echo("")
        print_leaderboard(run_dir)
    _show_failures(records)


def _progress_labels(manifest: dict[str, Any], records: list[Any]) -> list[str]:
    """The labels the run records under: a system run in several modes records as `label@mode`
    (ivbench.runner), so its bare label, which records nothing, is not listed as 0 done."""
    from .config import ALL_MODES

    config = manifest.get("config") or {}
    modes = (manifest.get("identity") or {}).get("mode") or config.get("mode")
    labels = {str(s) for s in config.get("systems") or []}
    if isinstance(modes, list) and len(modes) > 1 and ALL_MODES not in modes:
        labels = {f"{label}@{mode}" for label in labels for mode in modes}
    recorded = {r.system for r in records}
    # With mode "all" the modes are each system's own: a label shows up through its records.
    labels = {label for label in labels if not any(r.startswith(f"{label}@") for r in recorded)}
    return sorted(labels | recorded)


def _show_failures(records: list[Any]) -> None:
    failures = [r for r in records if not r.ok]
    if failures:
        click.echo(f"\nfailed turns ({len(failures)}):")
        for r in failures[:20]:
            click.echo(f"  {r.system} {r.dialogue_id} turn {r.turn_index}: "
                       f"{r.error.get('type') if r.error else ''}: {(r.error or {}).get('message', '')[:160]}")
        if len(failures) > 20:
            click.echo(f"  … and {len(failures) - 20} more")


def _show_workers(manifest: dict[str, Any]) -> None:
    """Where the last session ran its systems, and whether its latency was measured under contention."""
    sessions = [s for s in manifest.get("sessions") or [] if isinstance(s, dict)]
    last = sessions[-1] if sessions else {}
    workers = last.get("workers") or {}
    if not workers:
        return
    hosts = sorted({str(w.get("host", "?")) for w in workers.values() if isinstance(w, dict)})
    click.echo(f"workers:  {len(workers)} ({', '.join(sorted(workers))}) on {', '.join(hosts)}")
    for label, notes in (last.get("contention") or {}).items():
        click.echo(f"          latency of {label} was measured under contention: {'; '.join(map(str, notes))}")


if __name__ == "__main__":  # pragma: no cover
    main()
