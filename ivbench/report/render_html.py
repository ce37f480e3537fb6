"""The HTML report: one self-contained page (inline CSS, a little plain JS, inline SVG plots,
audio as data URLs or links).

Every string that came from a run (system labels, task names, dialogue texts, replies,
transcripts, judge replies, error messages, manifests) passes `esc`, attributes included.
The page's Content-Security-Policy allows only its own script (by hash), so even markup that
slipped through could run nothing.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from collections.abc import Iterable

from .. import __version__
from ..types import REFERENCES_EXPECTED_WORDS
from .assets import CSS, JS
from .audio import AudioSources
from .data import NO_TURNS, TRANSCRIPT_METRICS, ReportData, Run, details_text, judge_models
from .leaderboard import ARROWS, Cell, Column, Leaderboard, fmt, metric_rank

if TYPE_CHECKING:
    from ..store.scores import ScoreRow
    from ..types import TurnRecord

RAW_REPLY_KEYS = ("raw_replies", "raw", "raw_reply", "replies")
SHOWN_DETAIL_KEYS = {"alignment", "text", "words", "ref", "hyp", *RAW_REPLY_KEYS}
ALIGNMENT_TITLES = {"asr_wer": "ASR transcript against the reply's text",
                    "ref_wer": "reply against the reference answer"}
# ref_wer where the task's references are free-form answers: kept, named for what it measures.
WORDING_ONLY_TITLE = "reply against the reference answer: wording only, a good reply words it differently"
WORDING_ONLY_LABEL = "wording vs the reference answer"
WORDING_ONLY_ALIGNMENT = "reply against the reference answer (wording, not quality)"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _attr_num(value: Optional[float]) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(float(value))


class Footnotes:
    """Numbered explanations of marked cells, each reason once."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}

    def mark(self, text: str) -> str:
        number = self.items.setdefault(text, len(self.items) + 1)
        return f'<sup class="fn">[{number}]</sup>'

    def html(self) -> str:
        if not self.items:
            return ""
        lines = "".join(f"<li value=\"{n}\">{esc(t)}</li>" for t, n in self.items.items())
        return f'<ol class="footnotes">{lines}</ol>'


# -- header ---------------------------------------------------------------------------------

def _hardware(manifest: dict[str, Any]) -> str:
    hw = manifest.get("hardware") or {}
    if not isinstance(hw, dict):
        return esc(hw)
    gpus = "".join(f"; GPU {esc(g.get('name'))}" for g in hw.get("gpus") or [] if isinstance(g, dict))
    memory = f", {esc(hw.get('memory_gib'))} GiB" if hw.get("memory_gib") is not None else ""
    return (f"{esc(hw.get('cpu', '?'))} × {esc(hw.get('cpu_count', '?'))}{memory}{gpus}"
            f"<span class=\"sub\"> · device {esc(hw.get('device', '?'))} · {esc(hw.get('platform', ''))}"
            f" · Python {esc(hw.get('python', '?'))}</span>")


def _loaded_html(sessions: list[dict], labels: dict[str, str]) -> str:
    """What each system said of itself once loaded (model, dtype, device, engine), from the
    latest session that loaded it."""
    found: dict[str, Any] = {}
    for session in sessions:
        found.update(session.get("loaded") or {})
    return "".join(f"<details><summary>{esc(labels.get(label, label))}</summary>"
                   f"<pre>{esc(json.dumps(info, indent=1, sort_keys=True, default=str))}</pre></details>"
                   for label, info in found.items())


def _workers_html(sessions: list[dict], labels: dict[str, str]) -> str:
    """Where the systems ran (docs/architecture.md, "Workers"), and whether workers shared a
    machine's CPUs or a GPU while they measured latency (then its figures are not those of a
    system alone on that hardware)."""
    workers: dict[str, Any] = {}
    contended: dict[str, list[str]] = {}
    for session in sessions:
        workers.update(session.get("workers") or {})
        for label, notes in (session.get("contention") or {}).items():
            contended.setdefault(label, []).extend(str(n) for n in notes)
    if not workers:
        return ""
    hosts = sorted({str(w.get("host", "?")) for w in workers.values() if isinstance(w, dict)})
    out = f"{len(workers)} worker{'s' if len(workers) != 1 else ''} on {esc(', '.join(hosts))}"
    for label, notes in contended.items():
        out += (f"<div><b>latency of {esc(labels.get(label, label))} was measured under contention</b>"
                f"<span class=\"sub\"> · {esc('; '.join(notes))}</span></div>")
    return out


def _task_html(task: dict[str, Any], config: dict[str, Any], references: str) -> str:
    about = (f"{task.get('n_dialogues')} dialogues", task.get("source"), task.get("licence") or "no licence given",
             f"references: {references}")
    return (f"{esc(task.get('name') or config.get('task'))} <span class=\"sub\">"
            + " · ".join(esc(x) for x in about if x) + "</span>")


def _git_html(git: Any) -> str:
    if not isinstance(git, dict):
        return esc(git)
    return f"{esc(str(git.get('commit', 'unknown'))[:12])}{' (dirty)' if git.get('dirty') else ''}"


def _judges_html(run: Run) -> str:
    judges = sorted({str(r.result.details.get("judge_model")) for r in run.rows
                     if isinstance(r.result.details, dict) and r.result.details.get("judge_model")})
    return ", ".join(esc(j) for j in judges) or '<span class="na">none configured</span>'


def _run_html(run: Run, references: str) -> str:
    m = run.manifest
    config = m.get("config") or {}
    sessions = [s for s in m.get("sessions") or [] if isinstance(s, dict)]
    last = sessions[-1].get("started") if sessions else None
    rows = [("path", esc(run.path)),
            ("task", _task_html(m.get("task") or {}, config, references)),
            ("systems", ", ".join(esc(label) for label in run.labels.values()) or NO_TURNS),
            ("modes", esc(", ".join(sorted({r.mode for r in run.records})))),
            ("user voice", esc(config.get("voice"))),
            ("turns", f"{len(run.records)} ({sum(1 for r in run.records if not r.ok)} failed)"),
            ("hardware", _hardware(m)),
            ("judge model", _judges_html(run)),
            ("ivbench", f"{esc(m.get('ivbench_version'))} · git {_git_html(m.get('git') or {})} · "
                        f"seed {esc(config.get('seed'))}"),
            ("dates", f"created {esc(m.get('created'))}"
                      + (f" · last session {esc(last)} ({len(sessions)} sessions)" if last else ""))]
    if run.judge is not None:  # judge.json: what scoring asked of the judge
        rows.insert(rows.index(("judge model", _judges_html(run))) + 1, ("judge usage", esc(run.judge.describe())))
    loaded = _loaded_html(sessions, run.labels)
    if loaded:
        rows.insert(3, ("systems as loaded", loaded))
    ran_on = _workers_html(sessions, run.labels)
    if ran_on:
        rows.insert(rows.index(("hardware", _hardware(m))) + 1, ("workers", ran_on))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h3>Run {esc(run.name)}</h3><table class=\"kv\">{body}</table>"


def _packages_html(data: ReportData) -> str:
    packages: dict[str, dict[str, str]] = defaultdict(dict)
    for run in data.runs:
        for name, version in (run.manifest.get("packages") or {}).items():
            packages[name][run.name] = str(version)
    if not packages:
        return ""
    head = "".join(f"<th>{esc(r.name)}</th>" for r in data.runs)
    body = "".join(f"<tr><td>{esc(p)}</td>" + "".join(f"<td>{esc(v.get(r.name, '–'))}</td>" for r in data.runs)
                   + "</tr>" for p, v in sorted(packages.items()))
    return (f"<details><summary>Package versions</summary><table><tr><th>package</th>{head}</tr>"
            f"{body}</table></details>")


def _runs_html(data: ReportData) -> str:
    from ..scoring.summary import references_of

    out = [_run_html(run, references_of(run.manifest)) for run in data.runs]
    out.append(_packages_html(data))
    if not judge_models(data):
        out.append('<p class="muted">No judge model: content scores are absent (see the notes below the '
                   "leaderboard).</p>")
    return "".join(out)


# -- leaderboard ----------------------------------------------------------------------------

def _cell_html(col: Column, cell: Cell, notes: Footnotes) -> str:
    title = "\n".join(cell.tests)
    if cell.value is None:
        why = cell.note or "no value"
        return (f'<td class="num" data-v="" title="{esc(why)}"><span class="na">n/a</span>'
                f"{notes.mark(why)}</td>")
    if cell.text is not None:
        text = esc(cell.text)
    elif col.stat == "gap":
        text = f"{cell.value:+.2f}"
    else:
        text = fmt(cell.value, col.field, col.unit)
    classes = (["num"] + (["best"] if cell.best else [])
               + (["failed-some"] if col.key == "failed" and cell.value else []))
    parts = [text]
    if cell.significant:
        parts.append('<sup class="sig" title="better than every other system by the paired test (p &lt; 0.05)">*</sup>')
    low, high = cell.ci
    if low is not None and high is not None:
        parts.append(f'<span class="ci">[{fmt(low, col.field, col.unit)}, {fmt(high, col.field, col.unit)}]</span>')
    if cell.note and col.key != "failed":
        parts.append(f'<span class="partial" title="{esc(cell.note)}">{cell.missing} missing</span>'
                     f"{notes.mark(cell.note)}")
    if col.key == "failed" and cell.note:
        title = f"failed turns: {cell.note}"
    if cell.best:
        title = ("best in this column\n" + title).strip()
    return (f'<td class="{" ".join(classes)}" data-v="{_attr_num(cell.value)}" title="{esc(title)}">'
            f'{"".join(parts)}</td>')


def _leaderboard_html(data: ReportData, board: Leaderboard, colors: dict[str, str]) -> str:
    notes = Footnotes()
    heads = ['<th data-col="0">system</th>']
    for i, col in enumerate(board.columns, start=1):
        tip = f"{col.description}; {col.stat}" + ("; higher is better" if col.higher_is_better else
                                                  "; lower is better" if col.higher_is_better is False else "")
        heads.append(f'<th data-col="{i}" title="{esc(tip)}">{esc(col.title)}{ARROWS[col.higher_is_better]}</th>')
    body = []
    for system in data.systems:
        cells = board.rows[system]
        tds = "".join(_cell_html(col, cells[col.key], notes) for col in board.columns)
        body.append(f'<tr data-system="{esc(system)}"><td class="system" data-v="{esc(system)}">'
                    f'<span class="swatch" style="background:{colors[system]}"></span>{esc(system)}</td>{tds}</tr>')
    notes_html = "".join(f"<li>{esc(n)}</li>" for n in board.notes)
    return (f'<table class="sortable leaderboard" id="leaderboard"><thead><tr>{"".join(heads)}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>'
            '<p class="sub">Click a column to sort. Bold green: best in its column. '
            '<b>*</b>: better than every other system by a two-sided paired permutation test on the turns both '
            "scored (p &lt; 0.05); hover a cell for the tests. Brackets: 95% bootstrap CI over dialogues. "
            "WER: corpus WER (Σ errors ÷ Σ reference words). n/a and “missing” are explained below, "
            "never counted as 0.</p>"
            + notes.html() + (f'<ul class="notes">{notes_html}</ul>' if notes_html else ""))


def _pairwise_html(data: ReportData) -> str:
    rows = []
    for t in data.pairwise.to_dict("records"):
        if data.wording_only(t["metric"], t["system_a"]) or data.wording_only(t["metric"], t["system_b"]):
            continue  # no quality number, so no contest (pairwise.csv keeps the test)
        ci = "" if t["ci_low"] != t["ci_low"] else f"[{t['ci_low']:.4g}, {t['ci_high']:.4g}]"
        effect = "" if t["effect_size"] != t["effect_size"] or t["effect_size"] is None else f"{t['effect_size']:.2f}"
        rows.append(f"<tr><td>{esc(t['metric'])}</td><td>{esc(t['field'])}</td><td>{esc(t['system_a'])}</td>"
                    f"<td>{esc(t['system_b'])}</td><td class=\"num\">{int(t['n'])}</td>"
                    f"<td class=\"num\">{t['mean_difference']:+.4g}</td><td class=\"num\">{ci}</td>"
                    f"<td class=\"num\">{t['p_value']:.3g}</td><td class=\"num\">{effect}</td></tr>")
    if not rows:
        return ""
    return ("<details><summary>Paired tests between systems "
            f"({len(rows)})</summary><table><tr><th>metric</th><th>field</th><th>A</th><th>B</th>"
            "<th>shared turns</th><th>mean A − B</th><th>95% CI</th><th>p (permutation)</th>"
            "<th>Cohen's d<sub>z</sub></th></tr>" + "".join(rows) + "</table></details>")


def _crossmodal_html(data: ReportData) -> str:
    rows = []
    for t in data.crossmodal.to_dict("records"):
        if data.wording_only_base(t["metric"], t["system"]):
            continue
        cells = "".join(f'<td class="num">{fmt(t[m], t["field"])}</td>' for m in ("s2s", "s2t", "t2s", "t2t"))
        gap = t["gap_s2t_minus_s2s"]
        gap_text = "–" if gap is None or gap != gap else f"{gap:+.3g}"
        rows.append(f"<tr><td>{esc(t['system'])}</td><td>{esc(t['metric'])}</td><td>{esc(t['field'])}</td>"
                    f"{cells}<td class=\"num\">{gap_text}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Cross-modal</h3><table><tr><th>system</th><th>metric</th><th>field</th><th>S2S</th>"
            "<th>S2T</th><th>T2S</th><th>T2T</th><th>gap S2T − S2S</th></tr>" + "".join(rows) + "</table>")


def _tests_html(data: ReportData) -> str:
    return _pairwise_html(data) + _crossmodal_html(data)


# -- dialogues ------------------------------------------------------------------------------

def _words(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


def alignment_html(alignment: Iterable[Any]) -> str:
    """Word alignment ops as text with substitutions, deletions and insertions marked."""
    out = []
    for op in alignment:
        if not isinstance(op, dict):
            continue
        kind = str(op.get("op") or op.get("type") or "")
        ref = esc(_words(op.get("ref", op.get("reference"))))
        hyp = esc(_words(op.get("hyp", op.get("hypothesis"))))
        if kind.startswith("sub"):
            out.append(f'<span class="subst" title="substitution: said “{hyp}” for “{ref}”"><del>{ref}</del> '
                       f"<ins>{hyp}</ins></span>")
        elif kind.startswith("del"):
            out.append(f'<del title="deletion: “{ref}” not said">{ref}</del>')
        elif kind.startswith("ins"):
            out.append(f'<ins title="insertion: “{hyp}” said, not written">{hyp}</ins>')
        else:
            out.append(hyp or ref)
    return " ".join(out)


def _raw_replies(details: dict[str, Any]) -> list[str]:
    for key in RAW_REPLY_KEYS:
        value = details.get(key)
        if value:
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return []


def _value_html(name: str, value: Optional[float], unit: str) -> str:
    return f"{esc(name)} <b>{fmt(value, name, unit)}</b>"


def _score_html(data: ReportData, row: ScoreRow) -> str:
    """One metric's result in a reply card: values, or why there are none; then its details."""
    result = row.result
    fields = getattr(data.metrics.get(row.metric), "fields", {}) or {}
    if all(v is None for v in result.values.values()):
        why = result.reason or result.status
        value = (f'<span class="na" title="{esc(why)}">n/a ({esc(result.status)})</span> '
                 f'<span class="sub">{esc(why[:200])}</span>')
    else:
        parts = []
        order = {name: i for i, name in enumerate(fields)}
        for name, v in sorted(result.values.items(), key=lambda kv: order.get(kv[0], len(order))):
            unit = getattr(fields.get(name), "unit", "")
            parts.append(_value_html(name, v, unit) if v is not None
                         else f'{esc(name)} <span class="na" title="{esc(result.reason or "")}">n/a</span>')
        value = " · ".join(parts)
        if result.reason:
            value += f'<div class="sub">{esc(result.reason[:200])}</div>'
    if data.wording_only(row.metric, row.system):
        return (f'<tr><th title="{esc(WORDING_ONLY_TITLE)}">{esc(row.metric)} · {WORDING_ONLY_LABEL}</th>'
                f"<td>{value}</td></tr>")
    return f"<tr><th>{esc(row.metric)}</th><td>{value}</td></tr>"


def _extras_html(data: ReportData, rows: list[ScoreRow]) -> str:
    out = []
    for row in rows:
        details = row.result.details if isinstance(row.result.details, dict) else {}
        replies = _raw_replies(details)
        if replies:
            body = "".join(f"<pre>{esc(r)}</pre>" for r in replies)
            out.append(f"<details class=\"raw\"><summary>{esc(row.metric)}: the judge's reply</summary>"
                       f"{body}</details>")
        rest = {k: v for k, v in details.items() if k not in SHOWN_DETAIL_KEYS}
        if rest:
            out.append(f"<details><summary>{esc(row.metric)} details</summary><pre>{esc(details_text(rest))}</pre>"
                       "</details>")
    return "".join(out)


def _transcript_html(data: ReportData, rows: list[ScoreRow]) -> str:
    out = []
    aligned = False
    for row in rows:
        alignment = row.result.details.get("alignment") if isinstance(row.result.details, dict) else None
        if not isinstance(alignment, list):
            continue
        name = data.metric_name(row.metric)
        aligned = aligned or name == "asr_wer"
        wer = row.result.values.get("wer")
        label = (WORDING_ONLY_ALIGNMENT if data.wording_only(row.metric, row.system)
                 else ALIGNMENT_TITLES.get(name, f"{row.metric}: alignment"))
        wer_text = f" · {esc(row.metric)} {fmt(wer, 'wer')}" if wer is not None else ""
        out.append(f'<div class="lbl">{esc(label)}{wer_text}</div>'
                   f'<div class="txt diff">{alignment_html(alignment)}</div>')
    for row in rows:
        if data.metric_name(row.metric) != "transcript":
            continue
        text = row.result.details.get("text") if isinstance(row.result.details, dict) else None
        if text is not None and not aligned:
            out.insert(0, f'<div class="lbl">ASR transcript</div><div class="txt">{esc(text)}</div>')
        elif text is None and row.result.status != "ok":
            out.insert(0, '<div class="lbl">ASR transcript</div>'
                          f'<div class="na">{esc(row.result.reason or row.result.status)}</div>')
    return "".join(out)


def _audio_html(audio: AudioSources, path: Optional[Path], what: str) -> str:
    if path is None:
        return ""
    src = audio.src(path)
    if src is None:
        if audio.mode == "none":
            return ""
        why = audio.problems.get(Path(path), "audio not available")
        return f'<div class="na">{esc(what)}: {esc(why)}</div>'
    return f'<audio controls preload="none" src="{esc(src)}" title="{esc(what)}"></audio>'


def _reply_card(data: ReportData, record: TurnRecord, rows: list[ScoreRow], audio: AudioSources,
                run_dir: Path, color: str) -> str:
    failed = not record.ok
    status = esc(record.status)
    wer = _turn_wer(data, rows)
    parts = [f'<div class="card reply{" failed" if failed else ""}" data-system="{esc(record.system)}" '
             f'data-failed="{int(failed)}" data-wer="{_attr_num(wer)}">'
             f'<div class="card-h"><span class="swatch" style="background:{color}"></span>{esc(record.system)} '
             f'<span class="badge {status}">{status}</span> <span class="sub">{esc(record.mode)}</span></div>']
    if record.reply_audio:
        parts.append(_audio_html(audio, run_dir / record.reply_audio, "reply audio"))
    heard = (record.stage_data.get("asr_done") or {}).get("transcript")
    if isinstance(heard, str):  # a cascade's own ASR of the user turn: what it answered
        parts.append('<div class="lbl">user turn as this system heard it</div>'
                     f'<div class="txt heard">{esc(heard)}</div>')
    parts.append('<div class="lbl">reply text</div>')
    parts.append(f'<div class="txt">{esc(record.reply_text)}</div>' if record.reply_text
                 else '<div class="na">no text</div>')
    parts.append(_transcript_html(data, rows))
    if failed and record.error:
        parts.append(f'<div class="lbl">error</div><div class="txt">{esc(record.error.get("type"))}: '
                     f'{esc(record.error.get("message"))}</div>')
        if record.error.get("traceback"):
            parts.append(f"<details><summary>traceback</summary><pre>{esc(record.error['traceback'])}</pre></details>")
    shown = [r for r in rows if data.metric_name(r.metric) not in TRANSCRIPT_METRICS]
    shown.sort(key=lambda r: metric_rank(data.metric_name(r.metric)))
    if shown:
        parts.append('<table class="m">' + "".join(_score_html(data, r) for r in shown) + "</table>")
    if record.stages:
        stages = sorted(record.stages.items(), key=lambda kv: kv[1])
        marks = " · ".join(f"{esc(k)} {fmt(v, unit='ms')} ms" for k, v in stages)
        parts.append(f'<div class="sub">stages: {marks}</div>')
    parts.append(_extras_html(data, shown))
    parts.append("</div>")
    return "".join(parts)


def _turn_wer(data: ReportData, rows: list[ScoreRow]) -> Optional[float]:
    for row in rows:
        if data.metric_name(row.metric) == "asr_wer":
            return row.result.values.get("wer")
    return None


Turns = dict[int, dict[str, "TurnRecord"]]  # turn index -> system -> its (latest) record


class _DialogueView:
    """Renders the dialogues: each turn's user card and every system's reply card."""

    def __init__(self, data: ReportData, audio: AudioSources, colors: dict[str, str]) -> None:
        self.data, self.audio, self.colors = data, audio, colors
        self.run_dir = {label: run.path for run in data.runs for label in run.labels.values()}
        self.scores: dict[tuple[str, str, Optional[int]], list[ScoreRow]] = defaultdict(list)
        for row in data.rows:
            self.scores[(row.system, row.dialogue_id, row.turn_index)].append(row)

    def user_card(self, dialogue_id: str, turn_index: int, by_system: dict[str, TurnRecord]) -> str:
        first = next(iter(by_system.values()))
        user = ['<div class="card user"><div class="card-h">User</div>']
        seen_audio: set[str] = set()
        for s, r in by_system.items():
            if r.user_audio:
                path = self.run_dir[s] / r.user_audio
                digest = self.audio.digest(path)
                if digest not in seen_audio:
                    seen_audio.add(digest)
                    user.append(_audio_html(self.audio, path, "user turn audio"))
        user.append(f'<div class="lbl">user text</div><div class="txt">{esc(first.user_text)}</div>')
        if first.reference:
            what = ("expected words" if self.data.references.get(first.system) == REFERENCES_EXPECTED_WORDS
                    else "reference answer")
            user.append(f'<div class="lbl">{what}</div><div class="txt">{esc(first.reference)}</div>')
        for s in by_system:
            heard = [row for row in self.scores.get((s, dialogue_id, turn_index), [])
                     if self.data.metric_name(row.metric) == "user_transcript"]
            text = heard[0].result.details.get("text") if heard else None
            if text is not None:
                user.append(f'<div class="lbl">user turn as ASR heard it</div><div class="txt">{esc(text)}</div>')
                break
        user.append("</div>")
        return "".join(user)

    def dialogue_scores(self, dialogue_id: str, systems: list[str]) -> str:
        level = [(s, r) for s in systems for r in self.scores.get((s, dialogue_id, None), [])]
        if not level:
            return ""
        lines = "".join(f"<tr><th>{esc(s)}</th><td><table class=\"m\">{_score_html(self.data, r)}</table>"
                        f"{_extras_html(self.data, [r])}</td></tr>" for s, r in level)
        return f'<div class="lbl">whole-dialogue scores</div><table class="m">{lines}</table>'

    def dialogue(self, i: int, task: str, dialogue_id: str, turns: Turns, category: Optional[str]) -> str:
        data = self.data
        systems = [s for s in data.systems if any(s in t for t in turns.values())]
        failed_by = {s: sum(1 for t in turns.values() if s in t and not t[s].ok) for s in systems}
        wers = [w for s in systems for ti in turns
                for w in [_turn_wer(data, self.scores.get((s, dialogue_id, ti), []))] if w is not None]
        worst = max(wers) if wers else None
        chips = "".join(f'<span class="chip bad">{esc(s)}: {n} failed</span>' for s, n in failed_by.items() if n)
        if worst is not None:
            chips += f'<span class="chip">worst WER {fmt(worst, "wer")}</span>'
        summary = (f"<summary><b>{esc(dialogue_id)}</b> <span class=\"muted\">{esc(task)}"
                   f"{' · ' + esc(category) if category else ''} · {len(turns)} turns</span>{chips}</summary>")
        body = [self.dialogue_scores(dialogue_id, systems)]
        for turn_index in sorted(turns):
            by_system = turns[turn_index]
            cards = "".join(_reply_card(data, by_system[s], self.scores.get((s, dialogue_id, turn_index), []),
                                        self.audio, self.run_dir[s], self.colors[s]) for s in systems if s in by_system)
            body.append(f'<div class="turn-h">Turn {turn_index + 1}</div><div class="turn">'
                        f"{self.user_card(dialogue_id, turn_index, by_system)}{cards}</div>")
        any_failed = int(any(failed_by.values()))
        return (f'<details class="dlg" data-i="{i}" data-task="{esc(task)}" data-failed="{any_failed}" '
                f'data-wer="{_attr_num(worst)}">{summary}<div class="dlg-body">{"".join(body)}</div></details>')


def _dialogues_html(data: ReportData, audio: AudioSources, colors: dict[str, str]) -> tuple[str, int]:
    view = _DialogueView(data, audio, colors)
    dialogues: dict[tuple[str, str], Turns] = {}
    categories: dict[tuple[str, str], Optional[str]] = {}
    for r in data.records:
        turns = dialogues.setdefault((r.task, r.dialogue_id), {})
        categories.setdefault((r.task, r.dialogue_id), r.category)
        held = turns.setdefault(r.turn_index, {}).get(r.system)
        if held is None or r.attempt >= held.attempt:
            turns[r.turn_index][r.system] = r
    # Encode every clip in one pass before rendering.
    audio.prepare([view.run_dir[system] / p for turns in dialogues.values() for by_system in turns.values()
                   for system, r in by_system.items() for p in (r.user_audio, r.reply_audio) if p])
    out = [view.dialogue(i, task, dialogue_id, turns, categories.get((task, dialogue_id)))
           for i, ((task, dialogue_id), turns) in enumerate(dialogues.items())]
    return "".join(out), len(dialogues)


def _filters_html(data: ReportData, n: int) -> str:
    tasks = "".join(f'<option value="{esc(t)}">{esc(t)}</option>' for t in data.tasks)
    systems = "".join(f'<option value="{esc(s)}">{esc(s)}</option>' for s in data.systems)
    return ('<div class="filters">'
            f'<label>task <select id="f-task"><option value="">all</option>{tasks}</select></label>'
            f'<label>system <select id="f-system"><option value="">all</option>{systems}</select></label>'
            '<label><input type="checkbox" id="f-failed"> failed turns only</label>'
            '<label>order <select id="f-order"><option value="task">as in the task</option>'
            '<option value="wer">worst WER first</option></select></label>'
            '<label>worst WER ≥ <input type="number" id="f-wer" min="0" step="5" style="width:5em"> %</label>'
            '<button type="button" id="f-open">open all</button><button type="button" id="f-close">close all</button>'
            f'<span id="f-count" class="muted">{n} dialogues</span></div>'
            '<p class="sub">Transcript differences: <span class="diff"><span class="subst"><del>written</del> '
            '<ins>said</ins></span> substitution · <del>written</del> deletion (not said) · '
            "<ins>said</ins> insertion (not written)</span></p>")


# -- the page -------------------------------------------------------------------------------

def _csp(audio_mode: str, script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    media = {"embed": "data:", "link": "'self' file: http: https:", "none": "'none'"}[audio_mode]
    return (f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
            f"img-src data:; media-src {media}; base-uri 'none'; form-action 'none'")


def render_html(data: ReportData, board: Leaderboard, plots: list[tuple[str, str, str]],
                plot_notes: list[str], audio: AudioSources, title: str) -> str:
    from .plots import system_colors

    colors = system_colors(data.systems)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    dialogues, n_dialogues = _dialogues_html(data, audio, colors)
    figures = "".join(f"<figure><h3>{esc(t)}</h3>{svg}<figcaption>{esc(c)}</figcaption></figure>"
                      for t, svg, c in plots)
    plot_missing = "".join(f"<li>{esc(n)}</li>" for n in plot_notes)
    tasks = ", ".join(esc(t) for t in data.tasks)
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp(audio.mode, JS))}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><p class=\"muted\">{len(data.runs)} run(s) · tasks {tasks} · "
        f"{len(data.systems)} systems · {len(data.records)} turns · "
        f"generated {generated} by ivbench {esc(__version__)}</p>"
        "</header>",
        '<nav><a href="#leaderboard-section">Leaderboard</a><a href="#plots">Plots</a>'
        '<a href="#dialogues">Dialogues</a><a href="#runs">Runs</a></nav><main>',
        f'<section id="leaderboard-section"><h2>Leaderboard</h2>{_leaderboard_html(data, board, colors)}'
        f"{_tests_html(data)}</section>",
        f'<section id="plots"><h2>Plots</h2>{figures}'
        + (f'<ul class="notes muted">{plot_missing}</ul>' if plot_missing else "") + "</section>",
        f'<section id="dialogues"><h2>Dialogues</h2>{_filters_html(data, n_dialogues)}'
        f'<div id="dialogue-list">{dialogues}</div></section>',
        f'<section id="runs"><h2>Runs</h2>{_runs_html(data)}</section>',
        "</main><footer>Made by ivbench. Latency: from the moment the complete user turn was handed to the "
        "system (t0), on the runner's clock. Every number that could not be computed is shown as n/a with "
        "its reason, never as 0.</footer>",
        f"<script>{JS}</script></body></html>\n",
    ])
