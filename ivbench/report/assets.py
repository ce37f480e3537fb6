"""The report's stylesheet and script, inlined into every report (no CDN, works offline).

The script only reads the page: it sorts the leaderboard, filters and orders the dialogues,
and opens or closes them. It inserts no markup and evaluates nothing, and the page's
Content-Security-Policy lets no other script run.
"""

CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#d9dde5; --bg:#fff; --soft:#f5f7fa; --best:#e3f5e8;
        --bad:#fde8e8; --sub:#fff1c2; --del:#fbd5d5; --ins:#d4f0dc; --accent:#2855c5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       margin: 0; background: var(--bg); }
header, main > section, footer { max-width: 1500px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 18px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { position: sticky; top: 0; background: rgba(255,255,255,.95); border-bottom: 1px solid var(--line);
      padding: 6px 20px; z-index: 5; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; }
.muted, .sub { color: var(--muted); }
.sub { font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; vertical-align: top; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
table.kv th { width: 160px; }
table.sortable th[data-col] { cursor: pointer; user-select: none; }
table.sortable th[data-col]::after { content: " ⇅"; color: #aab; font-size: 11px; }
table.sortable th.asc::after { content: " ▲"; color: var(--fg); }
table.sortable th.desc::after { content: " ▼"; color: var(--fg); }
td.system { white-space: nowrap; }
td.best { background: var(--best); font-weight: 700; }
td .ci { display: block; font-size: 11px; color: var(--muted); font-weight: 400; }
td .partial { display: block; font-size: 11px; color: #a15c00; font-weight: 400; }
.na { color: #98a2b3; font-style: italic; }
sup.fn { color: #a15c00; font-style: normal; }
sup.sig { color: #137333; font-weight: 700; }
td.failed-some { background: var(--bad); }
.notes li, .footnotes li { margin: 2px 0; }
.footnotes { font-size: 12px; color: var(--muted); }
figure { margin: 10px 0 22px; }
figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 12px; color: var(--muted); max-width: 900px; }
main > section, details.dlg { scroll-margin-top: 44px; }
.filters { position: sticky; top: 33px; z-index: 4; display: flex; flex-wrap: wrap; gap: 14px;
           align-items: center; background: var(--soft); padding: 8px 10px; border: 1px solid var(--line);
           border-radius: 6px; margin-bottom: 10px; }
.filters label { font-size: 13px; }
details.dlg { border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; background: #fff; }
details.dlg > summary { padding: 8px 10px; cursor: pointer; background: var(--soft); border-radius: 6px; }
details.dlg[open] > summary { border-bottom: 1px solid var(--line); border-radius: 6px 6px 0 0; }
.chip { display: inline-block; padding: 0 6px; margin-left: 6px; border-radius: 10px; font-size: 12px;
        border: 1px solid var(--line); background: #fff; }
.chip.bad { background: var(--bad); border-color: #f3b4b4; }
.dlg-body { padding: 8px 10px; }
.turn { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 10px;
        margin: 10px 0 16px; }
.turn-h { font-weight: 600; margin-top: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px; min-width: 0; }
.card.user { background: #f3f6fd; }
.card.failed { background: #fff6f6; border-color: #f3b4b4; }
.card-h { font-weight: 600; margin-bottom: 4px; overflow-wrap: anywhere; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 5px; }
.badge { font-size: 11px; padding: 0 5px; border-radius: 8px; background: var(--best); font-weight: 400; }
.badge.failed, .badge.timeout { background: var(--bad); }
.lbl { font-size: 11px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); margin-top: 6px; }
.txt { white-space: pre-wrap; overflow-wrap: anywhere; }
audio { width: 100%; height: 32px; margin: 4px 0; }
.diff del { background: var(--del); text-decoration: line-through; }
.diff ins { background: var(--ins); text-decoration: none; }
.diff .subst { background: var(--sub); border-radius: 2px; }
.diff .subst del { background: transparent; }
.diff .subst ins { background: transparent; font-weight: 600; }
table.m { width: 100%; font-size: 12px; margin: 4px 0; }
table.m th, table.m td { padding: 2px 5px; }
table.m th { width: 40%; font-weight: 500; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--soft); padding: 6px; margin: 4px 0;
      font-size: 12px; max-height: 320px; overflow: auto; }
details > summary { cursor: pointer; }
.hidden { display: none !important; }
footer { margin: 30px auto 40px; color: var(--muted); font-size: 12px; }
"""

JS = """
(function () {
  "use strict";
  function num(cell) {
    var v = cell.getAttribute("data-v");
    return v === null || v === "" ? null : parseFloat(v);
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.querySelectorAll("th[data-col]");
    heads.forEach(function (th) {
      th.addEventListener("click", function () {
        var col = parseInt(th.getAttribute("data-col"), 10);
        var desc = !th.classList.contains("desc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(desc ? "desc" : "asc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = num(a.cells[col]), y = num(b.cells[col]);
          if (x === null && y === null) { return 0; }
          if (x === null) { return 1; }
          if (y === null) { return -1; }
          if (isNaN(x) || isNaN(y)) {
            var s = a.cells[col].textContent.localeCompare(b.cells[col].textContent);
            return desc ? -s : s;
          }
          return desc ? y - x : x - y;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });

  var list = document.getElementById("dialogue-list");
  if (!list) { return; }
  var dialogues = Array.prototype.slice.call(list.querySelectorAll("details.dlg"));
  var task = document.getElementById("f-task"), system = document.getElementById("f-system"),
      failed = document.getElementById("f-failed"), order = document.getElementById("f-order"),
      minWer = document.getElementById("f-wer"), count = document.getElementById("f-count");
  function apply() {
    var t = task.value, s = system.value, onlyFailed = failed.checked;
    var threshold = parseFloat(minWer.value);
    threshold = isNaN(threshold) ? null : threshold / 100;
    var shown = 0;
    dialogues.forEach(function (d) {
      var cards = d.querySelectorAll(".card[data-system]");
      var hasSystem = !s;
      cards.forEach(function (c) {
        var mine = !s || c.getAttribute("data-system") === s;
        if (mine) { hasSystem = true; }
        c.classList.toggle("hidden", !mine);
      });
      d.querySelectorAll(".turn").forEach(function (turn) {
        var bad = false;
        turn.querySelectorAll(".card[data-system]").forEach(function (c) {
          if (c.getAttribute("data-failed") === "1" && (!s || c.getAttribute("data-system") === s)) { bad = true; }
        });
        var hide = onlyFailed && !bad;
        turn.classList.toggle("hidden", hide);
        var head = turn.previousElementSibling;
        if (head && head.classList.contains("turn-h")) { head.classList.toggle("hidden", hide); }
      });
      var wer = parseFloat(d.getAttribute("data-wer"));
      var ok = (!t || d.getAttribute("data-task") === t) && hasSystem &&
               (!onlyFailed || d.getAttribute("data-failed") === "1") &&
               (threshold === null || (!isNaN(wer) && wer >= threshold));
      d.classList.toggle("hidden", !ok);
      if (ok) { shown += 1; }
    });
    var sorted = dialogues.slice();
    if (order.value === "wer") {
      sorted.sort(function (a, b) {
        var x = parseFloat(a.getAttribute("data-wer")), y = parseFloat(b.getAttribute("data-wer"));
        x = isNaN(x) ? -1 : x; y = isNaN(y) ? -1 : y;
        return y - x || parseInt(a.getAttribute("data-i"), 10) - parseInt(b.getAttribute("data-i"), 10);
      });
    }
    sorted.forEach(function (d) { list.appendChild(d); });
    count.textContent = shown + " of " + dialogues.length + " dialogues";
  }
  [task, system, failed, order, minWer].forEach(function (el) {
    el.addEventListener("change", apply);
    el.addEventListener("input", apply);
  });
  document.getElementById("f-open").addEventListener("click", function () {
    dialogues.forEach(function (d) { if (!d.classList.contains("hidden")) { d.open = true; } });
  });
  document.getElementById("f-close").addEventListener("click", function () {
    dialogues.forEach(function (d) { d.open = false; });
  });
  apply();
})();
"""
