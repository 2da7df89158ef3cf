"""POPE hallucination metrics: yes/no existence probes scored as a binary classifier.

POPE (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models") asks
"Is there a <object> in the image?" about present objects (gold "yes") and absent ones (gold
"no", sampled ``random`` / ``popular`` / ``adversarial``), and reports, with "yes" as the
positive class:

- accuracy  = (TP + TN) / N
- precision = TP / (TP + FP)        (0 when the model never says yes)
- recall    = TP / (TP + FN)        (0 when there are no yes probes)
- F1        = 2·P·R / (P + R)
- yes_ratio = (#answers "yes") / N  (≈ 0.5 on balanced probes; a model that hallucinates says yes
  more often, so its yes_ratio rises and precision falls)

Here an answer that reads as neither yes nor no is ``unparsed``: it counts as wrong for
accuracy, is not a "yes" (so a missed yes-probe is a false negative and a no-probe costs no
false positive), and its share is reported as ``unparsed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmrl.data import Sample, generate, get_task
from vlmrl.data.tasks.pope import MODES
from vlmrl.eval.accuracy import evaluate
from vlmrl.rewards import extract_answer, get_reward, parse_yesno

METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio", "false_yes", "unparsed")


def parse_prediction(completion: str | None) -> str | None:
    """``"yes"`` / ``"no"`` from the ``<answer>`` span, else from the whole completion; ``None`` if neither.

    >>> [parse_prediction(c) for c in ("<answer>Yes</answer>", "No, there is none.", "<answer>red</answer>")]
    ['yes', 'no', None]
    """
    answer = extract_answer(completion)
    if answer is None and isinstance(completion, str):
        answer = completion.strip()
    return parse_yesno(answer)


def pope_metrics(preds: Sequence[str | None], golds: Sequence[str]) -> dict[str, float]:
    """The POPE numbers of the module docstring for one list of predictions (``None`` = unparsed).

    >>> m = pope_metrics(["yes", "yes", "no", None], ["yes", "no", "no", "yes"])
    >>> m["precision"], m["recall"], m["accuracy"], m["yes_ratio"], m["unparsed"]
    (0.5, 0.5, 0.5, 0.5, 0.25)
    """
    if len(preds) != len(golds):
        raise ValueError(f"pope_metrics: {len(preds)} predictions but {len(golds)} gold answers")
    bad = sorted({g for g in golds if g not in ("yes", "no")})
    if bad:
        raise ValueError(f"pope_metrics: gold answers must be 'yes' or 'no', got {bad}")
    n = len(golds)
    if n == 0:
        return dict.fromkeys(METRICS, 0.0) | {"n": 0.0}
    tp = sum(p == "yes" and g == "yes" for p, g in zip(preds, golds, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(preds, golds, strict=True))
    tn = sum(p == "no" and g == "no" for p, g in zip(preds, golds, strict=True))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(preds, golds, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": sum(p == "yes" for p in preds) / n,
        # the hallucination rate: "yes" about an object that is not there, FP / (FP + TN + unparsed no's)
        "false_yes": fp / max(sum(g == "no" for g in golds), 1),
        "unparsed": sum(p is None for p in preds) / n,
        "n": float(n),
    }


def pope_report(
    preds: Sequence[str | None], golds: Sequence[str], modes: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{"overall": metrics, <mode>: metrics, ...}``; ``modes[i]`` is the probe set item i belongs to."""
    report = {"overall": pope_metrics(preds, golds)}
    for mode in dict.fromkeys(modes):  # first-seen order
        idx = [i for i, m in enumerate(modes) if m == mode]
        report[mode] = pope_metrics([preds[i] for i in idx], [golds[i] for i in idx])
    return report


def pope_probes(n: int, seed: int = 0, modes: Sequence[str] = MODES, **knobs: Any) -> list[Sample]:
    """``n`` held-out (``split="test"``) probes per POPE mode, half yes / half no on average.

    With one seed every mode sees the same scenes and the same yes-probes; only the absent
    objects asked about differ, as in POPE, where one image set is probed three ways.
    """
    out = []
    for mode in modes:
        for s in generate(get_task("pope", mode=mode, **knobs), n, seed=seed, split="test"):
            s.id = f"{s.id}-{mode}"
            s.facts = {**s.facts, "pope_set": mode}
            out.append(s)
    return out


def pope_eval(
    policy,
    n: int,
    seed: int = 0,
    template: str = "answer",
    max_new_tokens: int = 16,
    batch_size: int = 50,
    **scene: Any,
) -> dict[str, dict[str, float]]:
    """Greedy answers to ``n`` probes per mode (``evaluate``'s decoding), scored by :func:`pope_report`.

    ``scene`` knobs (``min_objects``, ``max_objects``) shape the probed scenes, e.g. as in training.
    """
    samples = pope_probes(n, seed, **scene)
    res = evaluate(policy, samples, template, get_reward("yesno"), max_new_tokens, batch_size, True)
    preds = [parse_prediction(o["completion"]) for o in res["outputs"]]
    return pope_report(preds, [s.answer for s in samples], [s.facts["pope_set"] for s in samples])


def flatten_pope(report: dict[str, dict[str, float]], prefix: str = "pope") -> dict[str, float]:
    """``{"pope/f1": …, "pope/random/f1": …}`` for a metrics logger (``overall`` has no infix)."""
    out = {}
    for part, metrics in report.items():
        head = prefix if part == "overall" else f"{prefix}/{part}"
        out |= {f"{head}/{k}": v for k, v in metrics.items() if k != "n"}
    return out


def format_pope_table(report: dict[str, dict[str, float]]) -> str:
    """A fixed-width table: one row per mode and ``overall``, one column per metric."""
    cols = ("n", *METRICS)
    lines = [f"{'POPE':<12}" + "".join(f"{c:>11}" for c in cols)]
    for part in [p for p in report if p != "overall"] + ["overall"]:
        m = report[part]
        cells = [f"{int(m['n']):>11}"] + [f"{m[c]:>11.3f}" for c in METRICS]
        lines.append(f"{part:<12}" + "".join(cells))
    return "\n".join(lines)
