"""Error split: was a wrong answer an error of seeing, of reasoning, or of format?

PAPO (Wang et al. 2025, arXiv:2507.06448) sorts a model's wrong answers by hand into perception
errors and reasoning errors. Here the split is computed, for a template with a ``<look>`` span
on samples whose ``facts["objects"]`` list the scene. Each response falls in exactly one class:

* ``format``: no parsable answer (``rewards.parse.extract_answer`` finds none, or it is longer
  than the accuracy reward reads), so nothing can be judged;
* ``perception``: a wrong answer from a wrong look;
* ``reasoning``: a wrong answer from a right look;
* ``right_wrong_look`` (right for the wrong reason): a right answer from a wrong look;
* ``right``: a right answer from a right look.

The answer is *right* when the ``accuracy`` reward (``rewards.accuracy``, ``auto`` by answer
type) scores it 1. The look is *right* when the ``perception`` reward (``rewards.perception``)
scores it F1 = 1: the span lists exactly the scene's multiset of ``(colour, shape)`` objects.
So it is wrong when it names an object that is not there, miscounts one, leaves one out, or is
missing (an unclosed or absent span scores 0, as in the reward and in segment credit: not
looking is a perception failure). Both judgements are those rewards' own, so the split cannot
disagree with what training pays for.

Rates are shares of all responses (the five sum to 1); ``wrong`` splits only the wrong answers
(``perception + reasoning + format`` shares of them), the figure PAPO reports; and
``right_wrong_look_of_right`` is the share of right answers whose look is wrong. Model text is
never evaluated or executed, only read by those two rewards, which never raise.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from vlmrl.data import Sample
from vlmrl.data.prompts import render_prompt
from vlmrl.errors import UserError
from vlmrl.rewards import get_reward
from vlmrl.rewards.math_reward import MAX_ANSWER_CHARS
from vlmrl.rewards.parse import extract_answer
from vlmrl.rewards.perception import LOOK_OPEN, perception_reward


class Outcome(StrEnum):
    """The class of one response (module docstring)."""

    RIGHT = "right"
    RIGHT_WRONG_LOOK = "right_wrong_look"
    PERCEPTION = "perception"
    REASONING = "reasoning"
    FORMAT = "format"


WRONG: tuple[Outcome, ...] = (Outcome.PERCEPTION, Outcome.REASONING, Outcome.FORMAT)
"""The classes of a wrong answer."""


def has_answer(completion: str | None) -> bool:
    """Whether an answer can be read at all (what the accuracy reward reads: the extracted answer,
    at most ``MAX_ANSWER_CHARS`` long, not blank).

    >>> has_answer("<answer>3</answer>"), has_answer("3 red circles"), has_answer("<answer> </answer>")
    (True, False, False)
    """
    answer = extract_answer(completion)
    return answer is not None and len(answer) <= MAX_ANSWER_CHARS and bool(answer.strip())


def look_is_right(completion: str | None, sample: Sample) -> bool:
    """The ``perception`` reward's F1 is 1: the look span lists exactly the scene's objects."""
    return perception_reward(completion, sample).total >= 1.0


def classify(completion: str | None, sample: Sample) -> Outcome:
    """The :class:`Outcome` of one response (module docstring).

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="How many red circles?", answer="2", answer_type="number",
    ...            facts={"objects": [{"shape": "circle", "color": "red"}] * 2})
    >>> [classify(c, s).value for c in ("<look>2 red circles</look><answer>2</answer>",
    ...     "<look>3 red circles</look><answer>2</answer>", "<look>3 red circles</look><answer>3</answer>",
    ...     "<look>2 red circles</look><answer>5</answer>", "<look>2 red circles</look>")]
    ['right', 'right_wrong_look', 'perception', 'reasoning', 'format']
    """
    if not has_answer(completion):
        return Outcome.FORMAT
    right = get_reward("accuracy")(completion, sample).total >= 1.0
    seen = look_is_right(completion, sample)
    if right:
        return Outcome.RIGHT if seen else Outcome.RIGHT_WRONG_LOOK
    return Outcome.REASONING if seen else Outcome.PERCEPTION


def check_error_setup(samples: Sequence[Sample], template: str, env: str | None = None) -> None:
    """A :class:`UserError` before any model work when the split cannot be made: single-turn only,
    the template must ask for a ``<look>`` span and every sample must carry ``facts["objects"]``."""
    if env is not None:
        raise UserError(
            f"vlmrl eval --errors: single-turn answers only; it does not apply to env.name={env!r}"
        )
    if not samples:
        raise UserError("vlmrl eval --errors: no held-out samples (data.eval_size, data.eval_path)")
    if LOOK_OPEN not in render_prompt(samples[0], template):
        raise UserError(
            f"vlmrl eval --errors: data.template={template!r} asks for no {LOOK_OPEN} span; "
            "use a template with one (e.g. data.template=look)"
        )
    missing = sum(not isinstance((s.facts or {}).get("objects"), list) for s in samples)
    if missing:
        raise UserError(
            f"vlmrl eval --errors: {missing} of {len(samples)} samples have no scene facts "
            "(facts.objects); use a procedural task that draws objects (count, pope, chart, …)"
        )


def error_split(completions: Sequence[str | None], samples: Sequence[Sample]) -> dict[str, Any]:
    """Counts and rates of each :class:`Outcome` over paired completions and samples.

    ``{"n", "counts": {class: k}, "rates": {class: k/n}, "wrong": {class: k/n_wrong},
    "right_wrong_look_of_right", "per_sample": [{"id", "outcome"}]}`` (a ratio over zero is 0).
    """
    if len(completions) != len(samples):
        raise ValueError(f"error_split: {len(completions)} completions for {len(samples)} samples")
    outcomes = [classify(c, s) for c, s in zip(completions, samples, strict=True)]
    counts = Counter(outcomes)
    n = len(outcomes)
    n_wrong = sum(counts[o] for o in WRONG)
    n_right = counts[Outcome.RIGHT] + counts[Outcome.RIGHT_WRONG_LOOK]

    def ratio(k: int, d: int) -> float:
        return k / d if d else 0.0

    return {
        "n": n,
        "counts": {o.value: counts[o] for o in Outcome},
        "rates": {o.value: ratio(counts[o], n) for o in Outcome},
        "wrong": {o.value: ratio(counts[o], n_wrong) for o in WRONG},
        "right_wrong_look_of_right": ratio(counts[Outcome.RIGHT_WRONG_LOOK], n_right),
        "per_sample": [{"id": s.id, "outcome": o.value} for s, o in zip(samples, outcomes, strict=True)],
    }


def format_error_table(split: dict[str, Any]) -> str:
    """A plain-text table of :func:`error_split`: each class's count, share of all, share of wrong."""
    rows = [f"{'class':<18} {'n':>5} {'of all':>7} {'of wrong':>9}"]
    for o in Outcome:
        of_wrong = f"{split['wrong'][o.value]:.3f}" if o.value in split["wrong"] else ""
        rows.append(
            f"{o.value:<18} {split['counts'][o.value]:>5} {split['rates'][o.value]:>7.3f} {of_wrong:>9}"
        )
    rows.append(f"right for the wrong reason, of right answers: {split['right_wrong_look_of_right']:.3f}")
    return "\n".join(rows)


def write_errors(res: dict[str, Any], eval_out: Path) -> Path | None:
    """Print the table of ``res["errors"]``, write the whole split to ``errors.json`` beside
    ``eval_out`` (the ``vlmrl eval`` results file) and keep only its summary in ``res``; its path.
    Without an ``errors`` entry (no ``--errors``) it does nothing and returns ``None``."""
    if "errors" not in res:
        return None
    split = res["errors"]
    path = Path(eval_out).with_name("errors.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(split, indent=2) + "\n")
    res["errors"] = {k: v for k, v in split.items() if k != "per_sample"}
    print(f"\nerror split of the {split['n']} greedy answers (per sample: {path})")
    print(format_error_table(split))
    return path
