"""``runs/NAME/report.html``: the page a person reads after a run.

One self-contained file (inline CSS, a few lines of inline JS for filtering, no external
assets, so it works offline from ``file://``): a summary (steps, held-out accuracy first → last,
a config excerpt), one curve image per metric family present (``report/*.png``, see
``report_curves``), a table of every metric, and a browser of the logged rollouts, newest step
first, group by group: each prompt (image, question, gold answer, its group's reward mean, spread
and right count) above all G of its completions (split into ``<look>`` / ``<think>`` /
``<answer>``, reward and parts, advantage, finish reason). A Content-Security-Policy lets only the page's own
script run (by its sha256), as a second fence behind the escaping of model output.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from vlmrl.errors import MissingFileError
from vlmrl.eval.report_curves import FAMILIES, Curve, Metrics, plot_families, read_series
from vlmrl.eval.report_rollouts import RolloutSection, render_rollouts

#: Config keys shown in the summary (when present); the whole config is one click away.
CONFIG_EXCERPT = (
    "model.path",
    "data.task",
    "data.path",
    "data.template",
    "vision.train",
    "rollout.n",
    "rollout.temperature",
    "rollout.max_new_tokens",
    "algo.advantage",
    "algo.loss",
    "algo.loss_agg",
    "algo.kl_coef",
    "reward.weights",
    "train.steps",
    "train.batch_prompts",
    "train.lr",
    "train.seed",
)


def write_report(
    run_dir: str | Path, max_rows_per_step: int = 64, max_rollout_bytes: int = 3_000_000
) -> Path:
    """(Re)build ``run_dir/report.html`` and ``run_dir/report/*.png``; returns the HTML path.

    ``max_rollout_bytes`` bounds the rollout browser's HTML (older steps beyond it are listed,
    not shown) so the page stays under ~5 MB however long the run; images are linked, not inlined.
    Raises ``FileNotFoundError`` when ``run_dir`` has no ``metrics.jsonl``.
    """
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.jsonl"
    if not metrics_path.is_file():
        raise MissingFileError(f"{run_dir} is not a run directory: no metrics.jsonl in it")
    metrics = read_series(metrics_path)
    curves = plot_families(metrics, run_dir / "report")
    rollouts = render_rollouts(run_dir, max_rows_per_step, max_rollout_bytes)
    config = _read_config(run_dir / "config.yaml")
    body = "".join(
        (
            f"<h1>vlmrl run: {_e(run_dir.resolve().name)}</h1>",
            f'<p class="dim">{_e(run_dir.resolve())} · written {time.strftime("%Y-%m-%d %H:%M:%S")}</p>',
            _summary(metrics, rollouts, config),
            _curves(run_dir, curves),
            _sample_grids(run_dir),
            _metrics_table(metrics),
            _rollout_browser(rollouts),
        )
    )
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(_page(f"vlmrl report: {run_dir.resolve().name}", body), encoding="utf-8")
    os.replace(tmp, out)  # a browser reloading mid-write never sees half a page
    return out


# ---------------------------------------------------------------------------------- sections
def _summary(m: Metrics, rollouts: RolloutSection, config: dict[str, Any] | str | None) -> str:
    rows: list[tuple[str, str]] = []
    steps = [s for xs, _ in m.series.values() for s in xs]
    rows.append(("steps logged", f"{max(steps) if steps else 0} (metrics rows: {m.rows})"))
    if m.bad_lines:
        rows.append(("unreadable metrics lines", str(m.bad_lines)))
    evals = ("eval/accuracy", "eval/reward")  # VLM runs; generator runs (vlmrl gen train)
    for key in sorted(k for k in m.series if k in evals or k.startswith(tuple(e + "/" for e in evals))):
        rows.append((key, _first_last_best(m, key)))
    for key in _headline_keys(m):
        rows.append((key, _first_last_best(m, key, best=False)))
    if "time/step_s" in m.series:
        rows.append(("training time", f"{sum(m.series['time/step_s'][1]):.0f} s (sum of time/step_s)"))
    seen = f"{rollouts.rows} rows from {len(rollouts.steps_shown)} steps"
    if rollouts.steps_omitted:
        seen += f"; {len(rollouts.steps_omitted)} older steps left out (size cap)"
    if rollouts.bad_lines:
        seen += f"; {rollouts.bad_lines} unreadable lines"
    rows.append(("rollouts", seen))
    table = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    if isinstance(config, dict):
        excerpt = [(k, _dotted(config, k)) for k in CONFIG_EXCERPT]
        cfg_rows = "".join(
            f"<tr><th>{_e(k)}</th><td><code>{_e(v if isinstance(v, str) else json.dumps(v))}</code></td></tr>"
            for k, v in excerpt
            if v is not _MISSING and v is not None
        )
        full = yaml.safe_dump(config, sort_keys=False)
        cfg_html = (
            f'<table class="kv">{cfg_rows}</table>'
            f"<details><summary>full config.yaml</summary><pre>{_e(full)}</pre></details>"
        )
    else:
        cfg_html = f'<p class="dim">{_e(config or "no config.yaml in the run directory")}</p>'
    return (
        '<div class="grid2"><div><h2>Summary</h2>'
        f'<table class="kv">{table}</table></div><div><h2>Config</h2>{cfg_html}</div></div>'
    )


#: Families whose every key is worth a summary line (the vision diagnostics), and single keys.
_HEADLINE_FAMILIES = ("blind", "pope", "drift")
_HEADLINE_KEYS = ("reward/total", "actor/kl_ref", "actor/entropy", "rollout/response_length")


def _headline_keys(m: Metrics) -> list[str]:
    fams = [f for f in FAMILIES if f.slug in _HEADLINE_FAMILIES]
    diag = sorted(k for k in m.series if any(f.matches(k) for f in fams))
    return [k for k in _HEADLINE_KEYS if k in m.series] + diag


def _first_last_best(m: Metrics, key: str, best: bool = True) -> str:
    xs, ys = m.series[key]
    text = f"{_g(ys[0])} (step {xs[0]}) → {_g(ys[-1])} (step {xs[-1]})"
    if best and len(ys) > 2:
        i = max(range(len(ys)), key=ys.__getitem__)
        text += f"; best {_g(ys[i])} (step {xs[i]})"
    return text


def _curves(run_dir: Path, curves: list[Curve]) -> str:
    if not curves:
        return '<h2>Curves</h2><p class="dim">no numeric metrics logged yet.</p>'
    figs = []
    for c in curves:
        title = c.family.title
        keys = "" if c.keys == [title] else f' <span class="dim">{_e(", ".join(c.keys))}</span>'
        cls = ' class="wide"' if c.wide else ""
        src = _e(c.path.relative_to(run_dir).as_posix())
        figs.append(
            f"<figure{cls}><figcaption><b>{_e(title)}</b>{keys}</figcaption>"
            f'<img class="curve" src="{src}" alt="{_e(title)}"></figure>'
        )
    return f'<h2>Curves</h2><div class="curves">{"".join(figs)}</div>'


def _sample_grids(run_dir: Path, limit: int = 8) -> str:
    """Generator runs: the newest ``limit`` sample grids (``samples/step_N.png``, one row per eval
    prompt), newest first. Empty for VLM runs."""
    found = [p for p in (run_dir / "samples").glob("step_*.png") if p.stem[5:].isdigit()]
    grids = sorted(found, key=lambda p: -int(p.stem[5:]))
    if not grids:
        return ""
    figs = "".join(
        f'<figure class="wide"><figcaption><b>step {p.stem[5:]}</b></figcaption>'
        f'<img class="grid" src="samples/{_e(p.name)}" alt="samples {_e(p.stem)}"></figure>'
        for p in grids[:limit]
    )
    more = f'<p class="dim">{len(grids) - limit} older grids in samples/.</p>' if len(grids) > limit else ""
    return f'<h2>Samples (evaluation prompts)</h2><div class="curves">{figs}</div>{more}'


def _metrics_table(m: Metrics) -> str:
    rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{len(ys)}</td><td>{_g(ys[0])}</td><td>{_g(ys[-1])}</td>"
        f"<td>{_g(min(ys))}</td><td>{_g(max(ys))}</td></tr>"
        for k, (_, ys) in sorted(m.series.items())
    )
    return (
        f"<details><summary>all {len(m.series)} metrics (first, last, min, max)</summary>"
        '<table class="metrics"><thead><tr><th>key</th><th>points</th><th>first</th><th>last</th>'
        f"<th>min</th><th>max</th></tr></thead><tbody>{rows}</tbody></table></details>"
    )


def _rollout_browser(r: RolloutSection) -> str:
    if not r.steps_shown:
        return '<h2>Rollouts</h2><p class="dim">no rollouts/step_*.jsonl (log.groups_per_step is 0?)</p>'
    options = "".join(f'<option value="{s}">step {s}</option>' for s in r.steps_shown)
    omitted = (
        f'<p class="note">Steps {_e(_ranges(r.steps_omitted))} are not shown to keep this page small; '
        "their rows are in rollouts/step_N.jsonl.</p>"
        if r.steps_omitted
        else ""
    )
    return (
        "<h2>Rollouts</h2>"
        '<div class="filters"><label>step <select id="step"><option value="all">all steps</option>'
        f'{options}</select></label> <label>answer <select id="acc"><option value="all">all</option>'
        '<option value="1">right</option><option value="0">wrong</option></select></label> '
        '<label>contains <input id="q" type="search" placeholder="text in question or completion"></label> '
        f'<span class="dim"><span id="shown">{r.rows}</span> of {r.rows} rows shown</span></div>'
        f"{omitted}{r.html}"
    )


# ---------------------------------------------------------------------------------- helpers
_MISSING = object()


def _dotted(d: dict, key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _read_config(path: Path) -> dict | str | None:
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return f"{path.name}: cannot parse: {e}"
    return cfg if isinstance(cfg, dict) else f"{path.name}: not a mapping"


def _ranges(steps: list[int]) -> str:
    s = sorted(steps)
    return f"{s[0]}–{s[-1]}" if len(s) > 1 else str(s[0])


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _g(v: float) -> str:
    return f"{v:.4g}"


# ---------------------------------------------------------------------------------- page
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1400px;
 padding:0 16px;color:#1d232a;background:#fafbfc}
h1{font-size:22px;margin:0 0 2px}h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid #d8dee4}
h3{font-size:15px;margin:18px 0 6px}.dim{color:#6a737d;font-size:12px}.note{color:#8a6d00}
table{border-collapse:collapse;background:#fff}th,td{border:1px solid #e1e4e8;padding:4px 8px;
 vertical-align:top;text-align:left}thead th{background:#f1f3f5;position:sticky;top:0}
table.kv th{background:#f6f8fa;font-weight:600;white-space:nowrap}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.curves{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px;grid-auto-flow:dense}
figure{margin:0;background:#fff;border:1px solid #e1e4e8;padding:8px}figure.wide{grid-column:1/-1}
figcaption{margin-bottom:4px}img.curve{max-width:100%;height:auto;display:block;margin:auto}
details{margin:12px 0}summary{cursor:pointer;color:#0366d6}
table.metrics td{font-family:monospace;font-size:12px}
.filters{position:sticky;top:0;background:#fafbfc;padding:8px 0;z-index:2;border-bottom:1px solid #e1e4e8}
.filters label{margin-right:12px}.filters input{width:260px}section.step table{width:100%}
td.imgs img{max-width:160px;max-height:160px;image-rendering:pixelated;display:block;border:1px solid #ccc}
td.q{max-width:260px}td.gold{font-weight:600}td.comp{min-width:380px;max-width:620px}
td.rw ul{margin:4px 0 0;padding-left:16px;font-size:12px;white-space:nowrap}
tr.grouphead td{background:#f1f3f5;border-top:2px solid #8c959f}.ghead{display:flex;gap:12px}
.ghead img{max-width:140px;max-height:140px;image-rendering:pixelated;border:1px solid #ccc}
td.adv{font-family:monospace}td.adv.pos{color:#1a7f37}td.adv.neg{color:#cf222e}
tr.right td:first-child{border-left:4px solid #2ea043}tr.wrong td:first-child{border-left:4px solid #cf222e}
.span{margin:2px 0}.span pre{margin:0;white-space:pre-wrap;word-break:break-word;font-size:12px;
 background:#f6f8fa;padding:3px 6px;border-radius:3px}
.tag{font-size:10px;text-transform:uppercase;letter-spacing:.05em;color:#57606a}
.look pre{background:#eef6ff}.think pre{background:#fff8e5}.answer pre{background:#e9f7ec;font-weight:600}
.raw pre{background:#f6f8fa}
"""

# Filtering only (also from the URL: report.html?step=all&acc=0&q=text); on load it records, for
# headless checks, how many images rendered and how many rows (and env turns, tool calls) exist.
_JS = """
(function(){
var step=document.getElementById('step'),acc=document.getElementById('acc'),q=document.getElementById('q');
function apply(){
 if(!step){return;}
 var s=step.value,a=acc.value,t=q.value.toLowerCase(),shown=0;
 document.querySelectorAll('section.step').forEach(function(sec){
  var on=(s==='all'||sec.dataset.step===s),n=0;
  sec.querySelectorAll('tr.row').forEach(function(r){
   var ok=on&&(a==='all'||r.dataset.acc===a)&&(!t||r.textContent.toLowerCase().indexOf(t)>=0);
   r.hidden=!ok;if(ok){n++;}
  });
  sec.querySelectorAll('tbody.group').forEach(function(g){g.hidden=!g.querySelector('tr.row:not([hidden])');});
  sec.hidden=(n===0);shown+=n;
 });
 document.getElementById('shown').textContent=shown;document.body.dataset.visibleRows=shown;
}
function pick(sel,v){for(var i=0;i<sel.options.length;i++){if(sel.options[i].value===v){sel.value=v;}}}
if(step){
 if(step.options.length>1){step.selectedIndex=1;}
 var p=new URLSearchParams(location.search);
 if(p.has('step')){pick(step,p.get('step'));}
 if(p.has('acc')){pick(acc,p.get('acc'));}
 if(p.has('q')){q.value=p.get('q');}
 step.addEventListener('change',apply);acc.addEventListener('change',apply);q.addEventListener('input',apply);
 apply();
}
window.addEventListener('load',function(){
 var imgs=document.images,ok=0;
 for(var i=0;i<imgs.length;i++){if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}}
 var b=document.body.dataset;
 b.imagesLoaded=ok;b.imagesTotal=imgs.length;b.rows=document.querySelectorAll('tr.row').length;
 b.curves=document.querySelectorAll('img.curve').length;b.groups=document.querySelectorAll('tbody.group').length;
 b.turns=document.querySelectorAll('div.turn').length;
 b.turnImages=document.querySelectorAll('div.turn img').length;
 b.toolCalls=document.querySelectorAll('div.turn div.call').length;b.ready='1';
});
})();
"""


def _page(title: str, body: str) -> str:
    digest = base64.b64encode(hashlib.sha256(_JS.encode()).digest()).decode()
    csp = (
        "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}<script>{_JS}</script></body></html>"
    )
