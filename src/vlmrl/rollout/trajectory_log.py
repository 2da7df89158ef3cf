"""Per-episode logs (``rollouts/step_N.jsonl``'s ``trajectory``) and their replay.

:func:`trajectory_log` records every turn (text, images saved as PNG, the parsed tool call, its
validity) and the sample; :func:`replay` plays the logged model turns through a fresh env, so a
deterministic environment gives the logged observations and reward back: an episode is
reproducible from its log alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from vlmrl.rollout.trajectory import Trajectory, Turn


def _jsonable(x: Any) -> Any:
    try:
        json.dumps(x)
        return x
    except TypeError:
        if isinstance(x, dict):
            return {str(k): _jsonable(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [_jsonable(v) for v in x]
        return repr(x)


def trajectory_log(t: Trajectory, sample, out_dir: Path, prefix: str) -> dict[str, Any]:
    """A JSON-able record of every turn (images saved as PNG under ``out_dir``, paths relative to
    it), plus what :func:`replay` needs to rebuild the sample (id, problem, answer, facts)."""
    out_dir = Path(out_dir)
    img_dir = out_dir / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    turns = []
    screen = sample.images[-1] if sample.images else None  # the last image the model was shown
    for k, turn in enumerate(t.turns):
        refs = []
        for j, im in enumerate(turn.images):
            ref = img_dir / f"{prefix}_t{k}_{j}.png"
            im.save(ref)
            refs.append(str(ref.relative_to(out_dir)))
            screen = im
        row: dict[str, Any] = {"role": turn.role, "text": turn.text, "images": refs}
        if turn.role == "assistant":
            row["kind"] = turn.info.get("kind")
            row["tool"] = turn.info.get("tool")
            row["valid"] = bool(turn.info.get("valid", False))
            row["error"] = turn.info.get("error")
            row["tool_call"] = _parsed_call(turn.text)
            row |= _click_view(turn.info.get("click"), screen, img_dir, f"{prefix}_t{k}_click", out_dir)
        turns.append(row)
    sample_imgs = []
    for j, im in enumerate(sample.images):
        ref = img_dir / f"{prefix}_sample_{j}.png"
        im.save(ref)
        sample_imgs.append(str(ref.relative_to(out_dir)))
    return {
        "turns": turns,
        "sample": {
            "id": sample.id,
            "problem": sample.problem,
            "answer": sample.answer,
            "task": sample.task,
            "answer_type": sample.answer_type,
            "facts": _jsonable(sample.facts),
            "images": sample_imgs,
        },
    }


def _click_view(click: Any, screen: Image.Image | None, img_dir: Path, name: str, out_dir: Path) -> dict:
    """GUI turns (``info["click"]`` = the env's clipped ``[x, y]``): the screen the model clicked on,
    with the click marked, saved beside the other images (``click``, ``click_image``)."""
    numbers = isinstance(click, (list, tuple)) and all(isinstance(v, (int, float)) for v in click)
    if not numbers or len(click) != 2 or screen is None:
        return {}
    from vlmrl.envs.gui.render import mark_click

    ref = img_dir / f"{name}.png"
    mark_click(screen, float(click[0]), float(click[1])).save(ref)
    return {"click": [float(click[0]), float(click[1])], "click_image": str(ref.relative_to(out_dir))}


def _parsed_call(text: str) -> dict | None:
    """``{"name", "arguments"}`` of the turn's tool call, or None (the env's parser, never raises)."""
    if "<tool_call>" not in text:
        return None
    try:
        from vlmrl.envs import parse_tool_call
    except ImportError:  # pragma: no cover - envs not installed
        return None
    call = parse_tool_call(text)
    name = getattr(call, "name", None)
    if name is None or not hasattr(call, "arguments"):
        return None
    return {"name": name, "arguments": _jsonable(call.arguments)}


@dataclass
class Replay:
    """What the environment said when the logged model turns were played again, and the reward."""

    observations: list[Turn]  # the env's user turns after the first, in order
    reward: Any  # RewardBreakdown
    matches: bool  # every observation's text and image pixels equal the logged ones


def replay(log_row: dict[str, Any], env, root: str | Path = ".") -> Replay:
    """Play a logged trajectory's model turns through a fresh ``env``; images load from ``root``.

    Deterministic environments give the logged observations and reward back: the trajectory
    is reproducible from ``rollouts/step_N.jsonl`` alone (tested).
    """
    from vlmrl.data import Sample

    root = Path(root)
    traj = log_row.get("trajectory", log_row)
    s = traj["sample"]
    images = [Image.open(root / p).convert("RGB") for p in s["images"]]
    sample = Sample(
        id=s["id"], images=images, problem=s["problem"], answer=s["answer"], task=s.get("task", "custom"),
        answer_type=s.get("answer_type", "math"), facts=s.get("facts", {}),
    )  # fmt: skip
    env.reset(sample)
    turns = traj["turns"]
    observations: list[Turn] = []
    matches = True
    for k, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        res = env.step(turn["text"])
        if res.done or res.observation is None:
            break
        obs = Turn("user", res.observation.text, list(res.observation.images))
        observations.append(obs)
        logged = turns[k + 1] if k + 1 < len(turns) and turns[k + 1]["role"] == "user" else None
        if logged is None:  # the episode ended on the token budget (loop side), not the env
            stop = getattr(env, "stop", None)
            if callable(stop):
                stop("tokens")
            break
        same = logged["text"] == obs.text and len(logged["images"]) == len(obs.images)
        for ref, im in zip(logged["images"], obs.images, strict=False):
            same = same and _same_pixels(Image.open(root / ref), im)
        matches = matches and same
    return Replay(observations, env.reward(), matches)


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
