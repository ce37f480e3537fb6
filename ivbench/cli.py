"""The `ivbench` command line. Heavy modules are imported inside commands, so `--help` is instant."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import click

from . import __version__

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a command stopped by Ctrl-C


def _blame(exc: BaseException) -> str:
    """Whose bug an unexpected exception is: the innermost plugin frame in its traceback names
    the plugin; otherwise ivbench."""
    from .registry import plugin_of

    tb = exc.__traceback__
    blamed = None
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
        from .errors import IvbenchError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except IvbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: what was finished is saved; the same command resumes", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:  # noqa: BLE001 - a bug: show all of it
            import traceback

            traceback.print_exc()
            click.echo(f"\nthis is a bug in {_blame(exc)}, not something you did: please report it with the "
                       "traceback above", err=True)
            ctx.exit(EXIT_BUG)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ivbench")
def main() -> None:
    """Benchmark voice-interaction LLMs through multi-turn spoken dialogues.

    \b
    ivbench eval                  the demo task through the parrot baseline
    ivbench list                  tasks, systems, metrics and voices
    ivbench show RUN              a run's manifest and progress
    ivbench report RUN…           one HTML report comparing runs
    """


def scoring_options(command: Any) -> Any:
    """Options shared by `eval` (which scores after generating) and `score`."""
    options = [
        click.option("--metrics", "metrics", default=None, envvar="IVBENCH_METRICS", show_envvar=True,
                     help="Comma-separated metrics (name or name:key=value; separate those with ';'). "
                          "Default: latency, first_speech, asr_wer, ref_wer, dnsmos, judge, judge_dialogue, "
                          "and distillmos on a GPU."),
        click.option("--judge-model", help="LLM judge model name (OpenAI-compatible endpoint); key from "
                                           "$OPENAI_API_KEY or --judge-api-key-env."),
        click.option("--judge-base-url", help="Judge endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp, Ollama)."),
        click.option("--judge-api-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Environment variable holding the judge's API key."),
        click.option("--judge-samples", default=1, show_default=True, type=click.IntRange(min=1)),
        click.option("--judge-temperature", default=0.0, show_default=True, type=float),
        click.option("--judge-concurrency", default=4, show_default=True, type=click.IntRange(min=1)),
        click.option("--judge-retries", default=5, show_default=True, type=click.IntRange(min=0)),
        click.option("--judge-price-in", type=float, help="Judge price per 1M input tokens (for the cost line)."),
        click.option("--judge-price-out", type=float, help="Judge price per 1M output tokens."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _metric_specs(metrics: Optional[str]) -> Optional[list[Any]]:
    from .registry import parse_spec

    if metrics is None:
        return None
    separator = ";" if ";" in metrics else ","
    return [parse_spec(m) for m in metrics.split(separator) if m.strip()]


def _judge_settings(kwargs: dict[str, Any]) -> Any:
    if not kwargs.get("judge_model"):
        return None
    from .judge import JudgeSettings

    prices = None
    if kwargs.get("judge_price_in") is not None or kwargs.get("judge_price_out") is not None:
        prices = (kwargs.get("judge_price_in") or 0.0, kwargs.get("judge_price_out") or 0.0)
    return JudgeSettings(model=kwargs["judge_model"], base_url=kwargs.get("judge_base_url"),
                         api_key_env=kwargs["judge_api_key_env"], n=kwargs["judge_samples"],
                         temperature=kwargs["judge_temperature"], concurrency=kwargs["judge_concurrency"],
                         retries=kwargs["judge_retries"], prices=prices)


def _score_and_print(run_dir: Path, records: Any, kwargs: dict[str, Any], device: str, cache_dir: Optional[Path],
                     use_cache: bool, progress: bool, file_metrics: Optional[list[Any]] = None,
                     file_judge: Optional[dict[str, Any]] = None) -> None:
    """Score a run and print its leaderboard. Flags win over a config file's metrics/judge."""
    from .scoring import ScoreConfig, score_run
    from .table import format_table, leaderboard

    judge = _judge_settings(kwargs)
    if judge is None and file_judge:
        from .judge import JudgeSettings

        from .errors import ConfigError

        try:
            judge = JudgeSettings(**file_judge)
        except TypeError as exc:
            raise ConfigError(f"config 'judge': {exc}") from None
    metrics = _metric_specs(kwargs.get("metrics"))
    config = ScoreConfig(metrics=metrics if metrics is not None else file_metrics, judge=judge,
                         device=device, cache_dir=cache_dir, use_cache=use_cache)
    outcome = score_run(run_dir, config, progress=progress)
    import pandas as pd

    summary = pd.read_csv(run_dir / "summary.csv")
    click.echo(format_table(leaderboard(records, summary, outcome.metrics)))
    if config.judge is None and any(m.name.startswith("judge") for m in outcome.metrics.values()):
        click.echo("judge scores are missing: no judge configured (--judge-model, --judge-base-url)")


def _given(ctx: click.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


@main.command("eval")
@click.option("-c", "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Run configuration YAML; flags given on the command line override it.")
@click.option("--task", default="demo", show_default=True,
              help="Task name, task file (.yaml/.jsonl) or name:option=value (e.g. mt-bench:categories=all).")
@click.option("--system", "systems", multiple=True,
              help="System to test (repeatable): a name, name:key=value,…, module:Object or ./file.py:Object. "
                   "Default: parrot.")
@click.option("--voice", default="piper:joe", show_default=True, help="Voice that speaks the user turns.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["s2s", "s2t", "t2s", "t2t", "all"]),
              help="Modality (repeatable); 'all': every mode each system declares. "
                   "Default: each system's first declared mode.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Run directory. Default: runs/<task>__<systems>; the same command again resumes it.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N dialogues.")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(min=0),
              help="Turns run before measuring and not recorded.")
@click.option("--turn-timeout", default=300.0, show_default=True, type=float,
              help="Seconds a turn may take before it is recorded as timed out (0: no limit).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where caches live (default $IVBENCH_CACHE_DIR or ~/.cache/ivbench).")
@click.option("--no-cache", is_flag=True, help="Recompute everything instead of reading caches.")
@click.option("--fresh", is_flag=True, help="Discard an existing run in --out instead of resuming it.")
@click.option("--retry-failed", is_flag=True, help="On resume, redo dialogues that have failed turns.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--no-score", is_flag=True, help="Only generate; score later with `ivbench score RUN`.")
@scoring_options
@click.pass_context
def eval_command(ctx: click.Context, config_file: Optional[Path], task: str, systems: tuple[str, ...],
                 voice: str, modes: tuple[str, ...], out: Optional[Path], limit: Optional[int], warmup: int,
                 turn_timeout: float, device: str, seed: int, cache_dir: Optional[Path], no_cache: bool,
                 fresh: bool, retry_failed: bool, no_progress: bool, no_score: bool, **scoring: Any) -> None:
    """Run a task's dialogues through systems, record every turn, then score the run."""
    from .config import EvalConfig, load_config_file, system_config
    from .registry import parse_spec
    from .runner import run_eval
    from .table import format_table, leaderboard

    kwargs: dict[str, Any] = load_config_file(config_file) if config_file else {}
    if _given(ctx, "task") or "task" not in kwargs:
        kwargs["task"] = parse_spec(task)
    if systems:
        kwargs["systems"] = [system_config(s) for s in systems]
    if _given(ctx, "voice") or "voice" not in kwargs:
        kwargs["voice"] = parse_spec(voice)
    if modes:
        kwargs["modes"] = list(modes)
    for name, value in (("out", out), ("limit", limit), ("warmup", warmup), ("device", device),
                        ("seed", seed), ("cache_dir", cache_dir)):
        if _given(ctx, name) or name not in kwargs:
            if value is not None:
                kwargs[name] = value
    if _given(ctx, "turn_timeout") or "turn_timeout" not in kwargs:
        kwargs["turn_timeout"] = turn_timeout
    if kwargs.get("turn_timeout") is not None and kwargs["turn_timeout"] <= 0:
        kwargs["turn_timeout"] = None
    if no_cache:
        kwargs["use_cache"] = False
    config = EvalConfig(**kwargs, fresh=fresh, retry_failed=retry_failed)
    result = run_eval(config, progress=not no_progress, argv=sys.argv)
    if no_score:
        click.echo(format_table(leaderboard(result.records)))
    else:
        from .provenance import resolve_device

        _score_and_print(result.run_dir, result.records, scoring, resolve_device(config.device),
                         config.cache_dir, config.use_cache, not no_progress, config.metrics, config.judge)
    failed = sum(1 for r in result.records if not r.ok)
    click.echo(f"\nrun directory: {result.run_dir}")
    _eval_report(result.run_dir, config.cache_dir, config.use_cache)
    if failed:
        click.echo(f"{failed} turns failed; `ivbench show {result.run_dir}` lists their errors, and the same "
                   "command with --retry-failed redoes their dialogues")


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
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--no-cache", is_flag=True, help="Recompute every score instead of reading the cache.")
@click.option("--no-progress", is_flag=True)
@scoring_options
def score_command(run_dir: Path, device: str, cache_dir: Optional[Path], no_cache: bool, no_progress: bool,
                  **scoring: Any) -> None:
    """(Re)score a run made anywhere: scores.jsonl, summary.csv, pairwise.csv, crossmodal.csv."""
    from .provenance import resolve_device
    from .store import RunStore

    records = RunStore(run_dir).records()
    _score_and_print(run_dir, records, scoring, resolve_device(device), cache_dir, not no_cache,
                     not no_progress)
    click.echo(f"\nscores: {run_dir / 'scores.jsonl'}\nsummary: {run_dir / 'summary.csv'}")


def _show_leaderboard(records: Any, summary: Any) -> list[dict[str, Any]]:
    from .table import leaderboard

    if summary is None:
        return leaderboard(records)
    from .scoring import plan_metrics
    from .registry import parse_spec

    labels = sorted(set(summary["metric"]))
    metrics = {}
    for label in labels:
        try:
            metrics.update(dict(plan_metrics([parse_spec(label)])))
        except Exception:  # a metric plugin not installed here: show the others
            continue
    return leaderboard(records, summary, metrics)


@main.command("list")
@click.argument("kind", required=False, type=click.Choice(["tasks", "systems", "metrics", "voices"]))
def list_command(kind: Optional[str]) -> None:
    """Tasks, systems, metrics and voices, one line each, with where each comes from; each
    metric's options below it (give them as name:key=value)."""
    from .registry import KINDS, entries

    for k in [kind] if kind else KINDS:
        click.echo(f"{k}:")
        for entry in entries(k):
            description = f"  {entry.description}" if entry.description else ""
            click.echo(f"  {entry.name:<20} [{entry.origin}]{description}")
            if k == "metrics":
                for line in _metric_option_lines(entry):
                    click.echo(f"  {'':<20} {line}")


def _metric_option_lines(entry: Any) -> list[str]:
    """`key=default  what it does` for each option of a metric (imports its module, which
    holds no heavy imports by the metric rules)."""
    import inspect

    from .errors import IvbenchError
    from .metrics.base import metric_options
    from .registry import load_target

    try:
        cls = load_target(entry.target, "metric")
        options = metric_options(cls) if inspect.isclass(cls) else []
    except (IvbenchError, ImportError) as exc:
        return [f"(options not shown: {exc})"]
    if not options:
        note = str(getattr(cls, "options_note", "")).replace("{name}", entry.name)
        return ["no options" + (f" ({note})" if note else "")]
    lines = []
    for name, default, text in options:
        shown = "required" if default is inspect.Parameter.empty else (
            "null" if default is None else str(default).lower() if isinstance(default, bool) else default)
        lines.append(f"{name}={shown}" + (f"  {text}" if text else ""))
    return lines


@main.command("show")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def show_command(run_dir: Path, as_json: bool) -> None:
    """A run's manifest and progress."""
    from .store import RunStore
    from .table import format_table

    store = RunStore(run_dir)
    manifest = store.read_manifest()
    records = store.records()
    if as_json:
        click.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    config = manifest.get("config", {})
    task = manifest.get("task", {})
    git = manifest.get("git") or {}
    hw = manifest.get("hardware", {})
    click.echo(f"run:      {run_dir}")
    click.echo(f"created:  {manifest.get('created')}  (ivbench {manifest.get('ivbench_version')}, "
               f"git {str(git.get('commit', 'unknown'))[:12]}{' dirty' if git.get('dirty') else ''})")
    click.echo(f"task:     {config.get('task')}  ({task.get('n_dialogues')} dialogues; {task.get('licence') or 'no licence given'})")
    click.echo(f"systems:  {', '.join(config.get('systems', []))}")
    click.echo(f"voice:    {config.get('voice')}   seed: {config.get('seed')}   device: {hw.get('device')}")
    click.echo(f"hardware: {hw.get('cpu')} × {hw.get('cpu_count')}, {hw.get('memory_gib')} GiB"
               + "".join(f"; GPU {g['name']} (driver {g['driver']})" for g in hw.get("gpus", [])))
    total = task.get("n_dialogues") or 0
    done = store.completed_dialogues()
    systems_done: dict[str, int] = {}
    for system, _ in done:
        systems_done[system] = systems_done.get(system, 0) + 1
    click.echo("\nprogress:")
    for system in sorted({r.system for r in records} | set(config.get("systems", []))):
        click.echo(f"  {system:<24} {systems_done.get(system, 0)}/{total} dialogues")
    if records:
        summary = None
        if (run_dir / "summary.csv").exists():
            import pandas as pd

            summary = pd.read_csv(run_dir / "summary.csv")
        click.echo("\n" + format_table(_show_leaderboard(records, summary)))
    failures = [r for r in records if not r.ok]
    if failures:
        click.echo(f"\nfailed turns ({len(failures)}):")
        for r in failures[:20]:
            click.echo(f"  {r.system} {r.dialogue_id} turn {r.turn_index}: "
                       f"{r.error.get('type') if r.error else ''}: {(r.error or {}).get('message', '')[:160]}")
        if len(failures) > 20:
            click.echo(f"  … and {len(failures) - 20} more")


if __name__ == "__main__":  # pragma: no cover
    main()
