"""Reward functions in our, TRL's and EasyR1's forms, and the one-line errors for broken ones."""

from __future__ import annotations

import pytest

from vlmrl.config import load_config
from vlmrl.config.checks import check_before_loading
from vlmrl.data.sample import Sample
from vlmrl.errors import UserError
from vlmrl.rewards.compose import compose, score_all
from vlmrl.rewards.forms import RewardReturnError, form_of
from vlmrl.rewards.plugins import import_reward_modules, reward_from_config

SAMPLES = [
    Sample(id=str(i), images=[], problem=f"q{i}", answer=str(i), answer_type="number", columns={"w": i})
    for i in range(3)
]
TEXTS = ["<answer>0</answer>", "<answer>9</answer>", None]


def write(tmp_path, name: str, source: str) -> str:
    path = tmp_path / name
    path.write_text(source)
    return str(path)


def test_forms_are_told_apart_by_parameter_names():
    assert form_of(lambda completions, **kw: []) == "trl"
    assert form_of(lambda prompts, completions, answer, **kw: []) == "trl"
    assert form_of(lambda reward_inputs, format_weight=0.1: []) == "easyr1_batch"
    assert form_of(lambda reward_input: {}) == "easyr1_sequential"
    assert form_of(lambda completion, sample: 0.0) == "vlmrl"


def test_trl_batch_reward_gets_completions_prompts_and_columns(tmp_path):
    f = write(tmp_path, "trl_r.py", (
        "def weighted(completions, prompts, w, answer, **kw):\n"
        "    assert isinstance(completions, list) and prompts == ['q0', 'q1', 'q2']\n"
        "    return [wi * 0.5 if c else None for c, wi in zip(completions, w)]\n"
    ))  # fmt: skip
    out = score_all(compose({f"{f}:weighted": 2.0}), TEXTS, SAMPLES)
    # w·0.5 per rollout, weighted ×2; the None completion became "" and its None score counts 0
    assert [r.total for r in out] == [0.0, 1.0, 0.0]
    assert [r.parts["weighted"] for r in out] == [0.0, 0.5, 0.0]


def test_trl_conversational_completions_and_kwargs(tmp_path):
    f = write(tmp_path, "conv.py", (
        "def first_char(completions, scale, **kw):\n"
        "    return [scale * float(c[0]['content'].startswith('<')) for c in completions]\n"
    ))  # fmt: skip
    key = f"{f}:first_char"
    fn = compose({key: 1.0}, kwargs={key: {"scale": 0.25}}, trl_completions="messages")
    assert [r.total for r in fn.score_batch(TEXTS, SAMPLES)] == [0.25, 0.25, 0.0]


def test_per_sample_function_may_return_a_float(tmp_path):
    f = write(
        tmp_path,
        "plain.py",
        "def right(completion, sample):\n    return float(sample.answer in (completion or ''))\n",
    )
    r = compose({f"{f}:right": 1.0, "format": 0.0})("<answer>1</answer>", SAMPLES[1])
    assert r.total == 1.0 and r.parts["right"] == 1.0


def test_easyr1_sequential_and_batch(tmp_path):
    f = write(tmp_path, "e.py", (
        "def seq(reward_input):\n"
        "    ok = float(reward_input['ground_truth'] in reward_input['response'])\n"
        "    return {'overall': ok, 'accuracy': ok, 'w': reward_input['w']}\n"
        "def batch(reward_inputs, bonus=0.0):\n"
        "    return [{'overall': min(1.0, x['response_length'] / 100 + bonus)} for x in reward_inputs]\n"
    ))  # fmt: skip
    out = compose({f"{f}:seq": 1.0}).score_batch(TEXTS, SAMPLES)
    assert [r.total for r in out] == [1.0, 0.0, 0.0]
    assert [r.parts["seq/w"] for r in out] == [0.0, 1.0, 2.0]  # columns reach EasyR1's inputs too
    key = f"{f}:batch"
    out = compose({key: 1.0}, kwargs={key: {"bonus": 0.5}}).score_batch(TEXTS, SAMPLES, lengths=[10, 20, 0])
    assert [r.total for r in out] == pytest.approx([0.6, 0.7, 0.5])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "def f(completions, **kw):\n    return 1.0\n",
            r"bad\.py:f returned float; expected a list of 3 floats",
        ),
        (
            "def f(completions, **kw):\n    return [1.0]\n",
            r"bad\.py:f returned 1 items; expected a list of 3",
        ),
        ("def f(completions, **kw):\n    return ['x'] * 3\n", r"bad\.py:f returned str 'x' for completion 0"),
        (
            "def f(completion, sample):\n    return 'good'\n",
            r"bad\.py:f returned str 'good' for one completion",
        ),
        ("def f(reward_inputs):\n    return [{'score': 1}] * 3\n", r"bad\.py:f returned dict .*'overall'"),
        ("def f(completion, sample):\n    return float('nan')\n", r"bad\.py:f returned float nan"),
    ],
)
def test_wrong_return_type_is_one_line_naming_file_and_function(tmp_path, source, message):
    f = write(tmp_path, "bad.py", source)
    with pytest.raises(RewardReturnError, match=message) as info:
        compose({f"{f}:f": 1.0}).score_batch(TEXTS, SAMPLES)
    assert "\n" not in str(info.value)


def test_reward_file_that_registers_nothing_is_refused(tmp_path):
    f = write(tmp_path, "nothing.py", "def helper(completion, sample):\n    return 1.0\n")
    with pytest.raises(
        UserError, match=r"reward\.modules: .*nothing\.py registers no reward; .*nothing\.py:function"
    ):
        import_reward_modules([f])


def test_missing_function_or_file_names_the_spec(tmp_path):
    f = write(tmp_path, "some.py", "def real(completion, sample):\n    return 1.0\n")
    with pytest.raises(UserError, match=r"some\.py:nope'.* has no function 'nope'; functions are \['real'\]"):
        compose({f"{f}:nope": 1.0})
    with pytest.raises(UserError, match=r"file '.*gone\.py' does not exist"):
        compose({f"{tmp_path / 'gone.py'}:f": 1.0})


def test_config_errors_before_any_model_loads(tmp_path):
    f = write(tmp_path, "ok.py", "def ok(completion, sample):\n    return 1.0\n")
    cfg = load_config(overrides=[f"reward.weights={{'{f}:ok': 1.0}}", "reward.function_kwargs={acc: {x: 1}}"])
    with pytest.raises(
        UserError, match=r"reward\.function_kwargs: \['acc'\] are not keys of reward\.weights"
    ):
        check_before_loading(cfg, model_path=str(tmp_path))
    cfg = load_config(overrides=[f"reward.weights={{'{f}:ok': 1.0}}"])
    assert reward_from_config(cfg.reward)(None, SAMPLES[0]).total == 1.0
