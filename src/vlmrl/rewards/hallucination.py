r"""``no_false_yes``: a penalty for claiming what is not there, to weigh beside ``accuracy``.

On yes/no probes whose "yes" is right most of the time, the plain accuracy reward pays a model
that answers "yes" without looking: with a share ``π`` of yes-probes, guessing "yes" earns ``π``.
This reward is 1.0 for a parsed yes/no answer unless it is "yes" to a probe whose gold answer is
"no" (a *false yes*: it claims an object or count the image does not have); then it is 0.0. A
completion with no yes/no answer (empty, cut off, anything else) also scores 0.0, like every
reward here, so the weight never pays for saying nothing; a right answer, a wrong "no" or a sample
that is no yes/no probe score 1.0.

Mixed as ``{accuracy: 1, no_false_yes: w}``, a right answer earns ``1 + w``, a wrong "no" ``w``,
a false yes ``0``. A model that believes the object is there with probability ``P`` gains by
saying "yes" exactly when ``P·(1 + w) > P·w + (1 − P)(1 + w)``, i.e. when the odds
``P / (1 − P) > 1 + w``. Under a prior of ``π`` yes-probes the posterior odds are the prior odds
``π / (1 − π)`` times the image's likelihood ratio, so ``w = π / (1 − π) − 1`` (8 for
``π = 0.9``) makes the best policy say "yes" exactly when the image favours "yes": the prior's
pull is cancelled, what the image shows is not.
"""

from __future__ import annotations

from vlmrl.data.sample import Sample
from vlmrl.rewards.accuracy import parse_yesno
from vlmrl.rewards.parse import extract_answer
from vlmrl.rewards.registry import register_reward
from vlmrl.rewards.types import RewardBreakdown

NAME = "no_false_yes"


def is_false_yes(completion: str | None, gold: object) -> bool:
    """Whether ``completion``'s answer reads "yes" while ``gold`` reads "no".

    >>> is_false_yes("<answer>Yes.</answer>", "no"), is_false_yes("<answer>yes</answer>", "yes")
    (True, False)
    >>> is_false_yes(None, "no"), is_false_yes("<answer>no</answer>", "no")
    (False, False)
    """
    if not isinstance(gold, str) or parse_yesno(gold) != "no":
        return False
    return parse_yesno(extract_answer(completion)) == "yes"


def prior_cancelling_weight(yes_share: float) -> float:
    """The ``no_false_yes`` weight ``w = π / (1 − π) − 1`` that cancels a prior of ``π`` yes-probes
    (see the module docstring); 0 for ``π ≤ 0.5``, where no cancelling is needed.

    >>> round(prior_cancelling_weight(0.9), 9), prior_cancelling_weight(0.5), prior_cancelling_weight(0.2)
    (8.0, 0.0, 0.0)
    """
    if not 0.0 <= yes_share < 1.0:
        raise ValueError(f"prior_cancelling_weight: the yes share must be in [0, 1), got {yes_share}")
    return max(yes_share / (1.0 - yes_share) - 1.0, 0.0)


@register_reward(NAME)
def no_false_yes_reward(completion: str | None, sample: Sample) -> RewardBreakdown:
    """0.0 for a false yes (gold "no", answer "yes") or no yes/no answer at all, else 1.0; never raises.

    >>> from vlmrl.data.sample import Sample
    >>> s = Sample(id="0", images=[], problem="", answer="no")
    >>> [no_false_yes_reward(c, s).total for c in ("<answer>yes</answer>", "<answer>no</answer>")]
    [0.0, 1.0]
    >>> no_false_yes_reward(None, s).total, no_false_yes_reward("<answer>maybe</answer>", s).total
    (0.0, 0.0)
    """
    answered = parse_yesno(extract_answer(completion)) is not None
    score = 1.0 if answered and not is_false_yes(completion, getattr(sample, "answer", None)) else 0.0
    return RewardBreakdown(score, {NAME: score})
