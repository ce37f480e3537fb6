"""The leaderboard as Markdown (for papers and READMEs) and CSV (for spreadsheets).

Markdown escapes what came from a run so that no label can break a table or smuggle in
HTML; CSV defuses cells that a spreadsheet would take for a formula.
"""
from __future__ import annotations

import csv
import html
import io
import re

from .data import NO_TURNS, ReportData
from .leaderboard import ARROWS, Cell, Column, Leaderboard, fmt

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def md_escape(text: object) -> str:
    flat = " ".join(str(text).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=False)


def _md_cell(col: Column, cell: Cell, notes: dict[str, int]) -> str:
    if cell.value is None:
        why = cell.note or "no value"
        return f"n/a[^{notes.setdefault(why, len(notes) + 1)}]"
    if cell.text is not None:
        text = md_escape(cell.text)
    elif col.stat == "gap":
        text = f"{cell.value:+.2f}"
    else:
        text = fmt(cell.value, col.field, col.unit).replace("%", "\\%")
    if cell.best:
        text = f"**{text}**"
    if cell.significant:
        text += "\\*"
    low, high = cell.ci
    if low is not None and high is not None:
        text += f" [{fmt(low, col.field, col.unit)}, {fmt(high, col.field, col.unit)}]".replace("%", "\\%")
    if cell.note and col.key != "failed":
        text += f" ({cell.missing} missing[^{notes.setdefault(cell.note, len(notes) + 1)}])"
    return text


def render_markdown(data: ReportData, board: Leaderboard, title: str) -> str:
    notes: dict[str, int] = {}
    lines = [f"# {md_escape(title)}", ""]
    for run in data.runs:
        task = (run.manifest.get("task") or {}).get("name") or (run.manifest.get("config") or {}).get("task")
        systems = ", ".join(md_escape(s) for s in run.labels.values()) or NO_TURNS
        lines.append(f"- run {md_escape(run.name)}: task {md_escape(task)}, systems {systems}, created "
                     f"{md_escape(run.manifest.get('created'))}")
    header = ["system"] + [md_escape(c.title) + ARROWS[c.higher_is_better] for c in board.columns]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system in data.systems:
        cells = [_md_cell(c, board.rows[system][c.key], notes) for c in board.columns]
        lines.append("| " + " | ".join([md_escape(system)] + cells) + " |")
    lines += ["", "Bold: best in its column. \\*: better than every other system by a paired permutation "
                  "test on shared turns (p < 0.05). Brackets: 95% bootstrap CI over dialogues. "
                  "WER is corpus WER."]
    for note in board.notes:
        lines.append(f"\n{md_escape(note)}")
    if notes:
        lines.append("")
        lines += [f"[^{n}]: {md_escape(text)}" for text, n in notes.items()]
    if not data.pairwise.empty:
        lines += ["", "## Paired tests", "",
                  "| metric | field | A | B | n | mean A − B | p |", "|---|---|---|---|---|---|---|"]
        for t in data.pairwise.to_dict("records"):
            lines.append(f"| {md_escape(t['metric'])} | {md_escape(t['field'])} | {md_escape(t['system_a'])} | "
                         f"{md_escape(t['system_b'])} | {int(t['n'])} | {t['mean_difference']:+.4g} | "
                         f"{t['p_value']:.3g} |")
    return "\n".join(lines) + "\n"


def _defuse(value: object) -> object:
    """A text cell a spreadsheet would run as a formula gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_csv(data: ReportData, board: Leaderboard) -> str:
    header = ["system"]
    for col in board.columns:
        header.append(col.title)
        if col.stat == "mean":
            header += [f"{col.title} ci_low", f"{col.title} ci_high"]
        if col.metric is not None and col.stat != "gap":
            # a number of items and a text apart, so a spreadsheet reads each column as one type
            header += [f"{col.title} missing", f"{col.title} why"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_defuse(h) for h in header])
    for system in data.systems:
        row: list[object] = [system]
        for col in board.columns:
            cell = board.rows[system][col.key]
            row.append("" if cell.value is None else f"{cell.value:.6g}")
            if col.stat == "mean":
                row += ["" if v is None else f"{v:.6g}" for v in cell.ci]
            if col.metric is not None and col.stat != "gap":
                why = cell.note or ("" if cell.value is not None else "no value")
                row += [cell.missing, why]
        writer.writerow([_defuse(v) for v in row])
    return buf.getvalue()


def _console_cell(col: Column, cell: Cell) -> str:
    if cell.text is not None:
        return cell.text
    if cell.value is None:
        return "–"  # missing, never 0; the report and summary.csv say why
    if col.stat == "gap":
        return f"{cell.value:+.2f}"
    return fmt(cell.value, col.field, col.unit)


def render_console(data: ReportData, board: Leaderboard) -> str:
    """The leaderboard as a plain-text table for the terminal, with its notes below: the same
    columns and numbers as the report's (↑/↓: which way is better)."""
    header = ["system"] + [c.title + ARROWS[c.higher_is_better] for c in board.columns]
    body = [[system] + [_console_cell(c, board.rows[system][c.key]) for c in board.columns]
            for system in data.systems]
    if not body:
        return "(no records)"
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in body]
    return "\n".join(lines + [f"note: {note}" for note in board.notes])
