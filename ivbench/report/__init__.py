"""The report phase: run directories → one comparison report.

`write_report([run, …], out)` writes a self-contained HTML page (leaderboard with CIs and
paired tests, plots, every dialogue with its audio), or the leaderboard as Markdown or CSV.
Nothing heavy is imported until a report is written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union
from collections.abc import Sequence

from ..errors import ConfigError

FORMATS = ("html", "md", "csv")
DEFAULT_DIR = Path("reports")
# A 25 MB attachment limit (Gmail) counts the MIME base64 encoding: about 18 MB of file.
MAIL_MB = 18


def default_output(runs: Sequence[Union[str, Path]], fmt: str = "html") -> Path:
    """reports/<run name[__run name…]>.<format>"""
    from ..store.run_store import safe_name

    name = "__".join(Path(r).resolve().name for r in runs) or "report"
    return DEFAULT_DIR / f"{safe_name(name)[:100]}.{fmt}"


def write_report(runs: Sequence[Union[str, Path]], out: Optional[Union[str, Path]] = None, fmt: str = "html",
                 audio: str = "embed", title: Optional[str] = None, cache_dir: Optional[Path] = None,
                 use_cache: bool = True) -> Path:
    """Render the runs' report to `out` (default `default_output`) and return its path."""
    from .audio import AudioSources
    from .data import load_report_data
    from .leaderboard import build_leaderboard

    if fmt not in FORMATS:
        raise ConfigError(f"report format: use one of {', '.join(FORMATS)}, not {fmt!r}")
    out = Path(out) if out is not None else default_output(runs, fmt)
    sources = AudioSources(audio, out.parent, cache_dir=cache_dir, use_cache=use_cache)  # checks `audio`
    data = load_report_data([Path(r) for r in runs])
    board = build_leaderboard(data)
    title = title or "ivbench report: " + ", ".join(run.name for run in data.runs)
    if fmt == "html":
        from .plots import all_plots
        from .render_html import render_html

        plots, plot_notes = all_plots(data, board)
        text = render_html(data, board, plots, plot_notes, sources, title)
    elif fmt == "md":
        from .render_text import render_markdown

        text = render_markdown(data, board, title)
    else:
        from .render_text import render_csv

        text = render_csv(data, board)
    tmp = out.with_name(out.name + ".tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except OSError as exc:  # a folder that is a file, no permission, a full disk: the user's to fix
        where = f"{exc.filename}: " if exc.filename else ""
        raise ConfigError(f"report: cannot write {out} ({where}{exc.strerror or exc}); give another path with -o"
                          ) from None
    return out


def describe(path: Path) -> str:
    """The report's path and size, with a hint when it is too large to e-mail."""
    size = Path(path).stat().st_size / 2**20
    # A Markdown or CSV leaderboard is a few KB, which "0.0 MB" would hide.
    text = f"{path} ({size:.1f} MB)" if size >= 0.1 else f"{path} ({size * 1024:.1f} KB)"
    if size > MAIL_MB:
        text += (f"\n  over {MAIL_MB} MB, too large for most e-mail: zip it (it shrinks by about 40%) "
                 "or render it with --audio link")
    return text


__all__ = ["FORMATS", "default_output", "describe", "write_report"]
