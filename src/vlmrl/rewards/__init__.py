"""Verifiable rewards: plain functions ``(completion, sample) -> RewardBreakdown``, by name.

Importing this package registers every built-in reward; ``get_reward(name)`` or
``build_reward({"accuracy": 0.9, "format": 0.1})`` then picks them for a config.
Registered names: ``format``, ``format_answer_only``, ``math``, ``number``, ``choice``,
``yesno``, ``text``, ``iou``, ``iou_1000``, ``auto`` (alias ``accuracy``), ``perception`` (the
``<look>`` span against the scene's objects), ``sr1`` (filled in by the trainer's Vision-SR1 check).
"""

from vlmrl.rewards.accuracy import (
    BY_ANSWER_TYPE,
    accuracy_reward,
    choice_reward,
    number_reward,
    parse_choice,
    parse_yesno,
    text_reward,
    yesno_reward,
)
from vlmrl.rewards.box import box_iou, iou_1000_reward, iou_reward, iou_score, parse_box
from vlmrl.rewards.compose import DEFAULT_WEIGHTS, build_reward, compose
from vlmrl.rewards.format import format_answer_only_reward, format_reward
from vlmrl.rewards.hallucination import no_false_yes_reward
from vlmrl.rewards.math_reward import math_equal, math_reward
from vlmrl.rewards.numeric import numbers_close, parse_number
from vlmrl.rewards.parse import extract_answer, last_boxed, normalize_text
from vlmrl.rewards.perception import look_span, parse_mentions, perception_reward, perception_scores
from vlmrl.rewards.registry import RewardFn, UnknownRewardError, get_reward, register_reward, reward_names
from vlmrl.rewards.sr1 import sr1_placeholder_reward
from vlmrl.rewards.timeout import RewardTimeout, call_with_timeout
from vlmrl.rewards.types import RewardBreakdown

__all__ = [
    "BY_ANSWER_TYPE",
    "DEFAULT_WEIGHTS",
    "RewardBreakdown",
    "RewardFn",
    "RewardTimeout",
    "UnknownRewardError",
    "accuracy_reward",
    "box_iou",
    "build_reward",
    "call_with_timeout",
    "choice_reward",
    "compose",
    "extract_answer",
    "format_answer_only_reward",
    "format_reward",
    "get_reward",
    "iou_1000_reward",
    "iou_reward",
    "iou_score",
    "last_boxed",
    "look_span",
    "math_equal",
    "math_reward",
    "no_false_yes_reward",
    "normalize_text",
    "number_reward",
    "numbers_close",
    "parse_box",
    "parse_choice",
    "parse_mentions",
    "parse_number",
    "parse_yesno",
    "perception_reward",
    "perception_scores",
    "register_reward",
    "reward_names",
    "sr1_placeholder_reward",
    "text_reward",
    "yesno_reward",
]
