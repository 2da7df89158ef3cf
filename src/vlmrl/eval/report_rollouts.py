"""The rollout browser of ``report.html``: ``rollouts/step_N.jsonl`` rendered as escaped HTML.

Completions are untrusted model output: every string goes through ``html.escape`` and image
references become percent-quoted relative URLs under ``rollouts/``, so neither tags nor
``javascript:`` URLs survive. The page stays small by a byte budget: steps are rendered newest
first until ``max_bytes`` of HTML is reached; the rest are named, not shown.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

#: Longest completion shown in full; longer ones are cut with a note (the jsonl keeps all of it).
MAX_COMPLETION_CHARS = 6000

#: Shown above a span; the tag names themselves are shown as they are.
_LABELS = {"raw": "no tags", "text": "outside tags"}
_TAG_RE = re.compile(r"<(/?)(look|think|answer)>")
_STEP_FILE_RE = re.compile(r"step_(\d+)\.jsonl")


def split_completion(text: str) -> list[tuple[str, str]]:
    """Split a completion into ``(label, text)`` spans in order: ``look`` / ``think`` / ``answer``
    for each closed tag pair, ``text`` for what lies outside them; ``[("raw", text)]`` when no
    pair closes. One pass over the tags (an opening tag pairs with the next tag if that is its
    own closing tag), so it is linear on any input.

    >>> split_completion("<look>3 red</look><answer>3</answer>")
    [('look', '3 red'), ('answer', '3')]
    >>> split_completion("no tags")
    [('raw', 'no tags')]
    """
    spans: list[tuple[str, str]] = []
    done = 0  # end of the last emitted span
    prev: re.Match[str] | None = None
    for tag in _TAG_RE.finditer(text):
        if prev is not None and not prev.group(1) and tag.group(1) and tag.group(2) == prev.group(2):
            if text[done : prev.start()].strip():
                spans.append(("text", text[done : prev.start()]))
            spans.append((prev.group(2), text[prev.end() : tag.start()]))
            done = tag.end()
        prev = tag
    if not spans:
        return [("raw", text)]
    if text[done:].strip():
        spans.append(("text", text[done:]))
    return spans


@dataclass
class RolloutSection:
    """The HTML of the rollout browser and what it holds."""

    html: str
    steps_shown: list[int]
    steps_omitted: list[int]
    rows: int
    bad_lines: int


def rollout_files(run_dir: Path) -> list[tuple[int, Path]]:
    """``rollouts/step_N.jsonl`` files, newest step first."""
    found = []
    for p in (Path(run_dir) / "rollouts").glob("step_*.jsonl"):
        m = _STEP_FILE_RE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def render_rollouts(run_dir: Path, max_rows_per_step: int, max_bytes: int) -> RolloutSection:
    """One ``<section class="step">`` per logged step, newest first, until ``max_bytes``."""
    run_dir = Path(run_dir)
    sections: list[str] = []
    shown: list[int] = []
    omitted: list[int] = []
    size = rows = bad = 0
    for step, path in rollout_files(run_dir):
        if size >= max_bytes:
            omitted.append(step)
            continue
        records, n_bad = _read_jsonl(path)
        bad += n_bad
        groups = _by_group(records[:max_rows_per_step])
        body = "".join(_group(run_dir, g, rows) for g, rows in groups.items())
        more = len(records) - max_rows_per_step
        note = f'<p class="note">{more} more rows in {_e(path.name)} not shown.</p>' if more > 0 else ""
        n = min(len(records), max_rows_per_step)
        part = (
            f'<section class="step" data-step="{step}"><h3>step {step} '
            f'<span class="dim">({len(groups)} groups, {n} rollouts)</span></h3>{note}'
            "<table><thead><tr><th>completion</th><th>reward</th><th>advantage</th><th>finish</th></tr>"
            f"</thead>{body}</table></section>"
        )
        sections.append(part)
        shown.append(step)
        rows += min(len(records), max_rows_per_step)
        size += len(part.encode())
    return RolloutSection("".join(sections), shown, omitted, rows, bad)


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    out, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            out.append(row)
        else:
            bad += 1
    return out, bad


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(v: object) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:.3f}" if math.isfinite(v) else str(v)
    return _e(v)


def _by_group(records: list[dict]) -> dict[object, list[dict]]:
    """Rows keyed by their ``group`` (the prompt they answer), in order of first appearance."""
    out: dict[object, list[dict]] = {}
    for r in records:
        g = r.get("group", "")
        out.setdefault(g if isinstance(g, (int, str)) else str(g), []).append(r)
    return out


def _group(run_dir: Path, group: object, rows: list[dict]) -> str:
    """One prompt's group as a ``<tbody>``: a head row (image, question, gold answer, the group's
    reward mean / spread and how many of its G completions are right), then one row per completion
    with its reward, parts and advantage. GRPO learns from the spread within a group: a group whose
    rewards are all equal has zero advantages and teaches nothing."""
    first = rows[0]
    rewards = [r["reward"] for r in rows if _finite(r.get("reward"))]
    right = [_accuracy(r) for r in rows]
    stats = f"{len(rows)} completions"
    if rewards:
        mean = sum(rewards) / len(rewards)
        std = math.sqrt(sum((x - mean) ** 2 for x in rewards) / len(rewards))
        stats += f" · reward mean {mean:.3f}, std {std:.3f}"
    if any(a is not None for a in right):
        stats += f" · right {sum(a == '1' for a in right)}/{len(rows)}"
    head = (
        f'<tr class="grouphead"><td colspan="4"><div class="ghead">'
        f'<div class="imgs">{_images(run_dir, first.get("images"))}</div><div>'
        f'<div class="dim">group {_e(group)} · {_e(first.get("task", ""))} · '
        f"{_e(first.get('sample_id', ''))}</div>"
        f'<div class="q">{_e(first.get("problem", ""))}</div>'
        f'<div>gold: <b class="gold">{_e(first.get("answer", ""))}</b></div>'
        f'<div class="dim">{_e(stats)}</div>{_games(first)}</div></div></td></tr>'
    )
    body = "".join(_row(run_dir, r) for r in rows)
    return f'<tbody class="group" data-group="{_e(group)}">{head}{body}</tbody>'


def _games(first: dict) -> str:
    """Self-play groups (``env.name: spy``): each game on the pair (the head shows both images, A
    then B): every seat's role, clues and vote, and whether the spy was found; all text escaped."""
    traj = first.get("trajectory") if isinstance(first.get("trajectory"), dict) else {}
    facts = traj.get("sample", {}).get("facts") if isinstance(traj.get("sample"), dict) else None
    games = facts.get("games") if isinstance(facts, dict) else None
    if not isinstance(games, list):
        return ""
    out = [f'<div class="dim">images: A (civilians), B (spy) · {_e(facts.get("difference", ""))}</div>']
    for i, g in enumerate(g for g in games if isinstance(g, dict)):
        rows = "".join(
            f"<tr><td>{_e(p.get('seat'))}</td><td>{_e(p.get('role'))}</td>"
            f"<td>{_e(' | '.join(map(str, p.get('clues') or [])))}</td><td>{_e(p.get('vote'))}</td></tr>"
            for p in g.get("players") or []
            if isinstance(p, dict)
        )
        out.append(
            f'<div class="game">game {i + 1}: spy = player {_e(g.get("spy"))}, found: {_e(g.get("found"))}'
            f"<table><tr><th>player</th><th>role</th><th>clues</th><th>vote</th></tr>{rows}</table></div>"
        )
    return "".join(out)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _accuracy(r: dict) -> str | None:
    """``"1"`` / ``"0"`` when the row's reward parts say whether its answer is right, else None."""
    parts = r.get("reward_parts") if isinstance(r.get("reward_parts"), dict) else {}
    acc = parts.get("accuracy")
    return None if not isinstance(acc, (int, float)) else ("1" if acc >= 1 else "0")


def _row(run_dir: Path, r: dict) -> str:
    parts = r.get("reward_parts") if isinstance(r.get("reward_parts"), dict) else {}
    acc_attr = _accuracy(r) or ""
    cls = {"1": " right", "0": " wrong"}.get(acc_attr, "")
    reward_items = "".join(f"<li>{_e(k)}: {_num(v)}</li>" for k, v in parts.items())
    adv = r.get("advantage")
    adv_cls = "" if not _finite(adv) else (" pos" if adv > 0 else " neg" if adv < 0 else "")
    return (
        f'<tr class="row{cls}" data-acc="{acc_attr}">'
        f'<td class="comp">{_conversation(run_dir, r) or _completion(r.get("completion"))}</td>'
        f'<td class="rw"><b>{_num(r.get("reward", ""))}</b><ul>{reward_items}</ul></td>'
        f'<td class="adv{adv_cls}">{_num("" if adv is None else adv)}</td>'
        f"<td>{_e(r.get('finish_reason', ''))}</td></tr>"
    )


def _images(run_dir: Path, refs: object) -> str:
    """``<img>`` per image that exists under ``rollouts/`` (refs are relative to it); a note for
    refs that are missing or point outside, so the page never shows a broken image."""
    out = []
    root = (run_dir / "rollouts").resolve()
    for ref in refs if isinstance(refs, list) else []:
        target = (root / str(ref)).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            out.append(f'<span class="dim">missing: {_e(ref)}</span>')
            continue
        url = _e(quote("rollouts/" + target.relative_to(root).as_posix()))
        out.append(f'<a href="{url}"><img src="{url}" alt="prompt image"></a>')
    return "".join(out)


def _completion(text: object) -> str:
    text = "" if text is None else str(text)
    cut = ""
    if len(text) > MAX_COMPLETION_CHARS:
        cut = f'<div class="dim">… {len(text) - MAX_COMPLETION_CHARS} more characters not shown</div>'
        text = text[:MAX_COMPLETION_CHARS]
    spans = "".join(
        f'<div class="span {label}"><span class="tag">{_LABELS.get(label, label)}</span>'
        f"<pre>{_e(body)}</pre></div>"
        for label, body in split_completion(text)
    )
    return spans + cut


def _conversation(run_dir: Path, r: dict) -> str:
    """Env runs (``trajectory.turns``): every turn in order — role, text (escaped; model turns split
    like completions), its images, and for model turns the tool call and whether it was valid.
    Empty for single-turn rows."""
    traj = r.get("trajectory")
    turns = traj.get("turns") if isinstance(traj, dict) else None
    if not isinstance(turns, list):
        return ""
    out = []
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            continue
        role = "assistant" if t.get("role") == "assistant" else "user"
        head = f'<span class="tag">{k}: {role}</span>'
        if role == "assistant":
            call = t.get("tool_call")
            valid = "valid" if t.get("valid") else "invalid"
            head += f' <span class="dim">{_e(t.get("kind", ""))} · {valid}</span>'
            if isinstance(call, dict):
                args = json.dumps(call.get("arguments"), ensure_ascii=True)[:500]
                name = _e(call.get("name", ""))
                head += f'<div class="call">tool call: <b>{name}</b> <code>{_e(args)}</code></div>'
            if t.get("error"):
                head += f'<div class="dim">error: {_e(t.get("error"))}</div>'
            body = _completion(t.get("text"))
        else:
            body = f"<pre>{_e(str(t.get('text', ''))[:MAX_COMPLETION_CHARS])}</pre>"
        imgs = _images(run_dir, t.get("images")) if t.get("images") else ""
        if role == "assistant" and t.get("click_image"):  # GUI episodes: the screen, click marked
            marked = _images(run_dir, [t["click_image"]])
            imgs += f'<div class="dim">click {_e(t.get("click"))}</div>{marked}'
        out.append(f'<div class="turn {role}">{head}{body}{imgs}</div>')
    return f'<div class="turns">{"".join(out)}</div>'
