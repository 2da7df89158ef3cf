"""Shared fixtures: one tiny model per test session (built locally, never downloaded)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from vlmrl.models import TinyConfig, make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny") / "model", TinyConfig(seed=0))


@pytest.fixture()
def tiny_policy(tiny_dir):
    from vlmrl.models import load_policy

    return load_policy(tiny_dir)


#: A reward that varies on an untrained model's random text, so advantages are non-zero.
LETTERS_PLUGIN = '''
from vlmrl.rewards import RewardBreakdown, register_reward

@register_reward("test_letters")
def test_letters(completion, sample):
    """Fraction of letters among the first 8 characters."""
    text = (completion or "")[:8]
    return RewardBreakdown(total=sum(c.isalpha() for c in text) / 8)
'''


@pytest.fixture(scope="session")
def letters_plugin(tmp_path_factory):
    """One plugin file per test session: every test that says ``test_letters`` gets this one."""
    path = tmp_path_factory.mktemp("letters") / "letters_reward.py"
    path.write_text(LETTERS_PLUGIN)
    return path


@pytest.fixture(scope="session")
def plugin(letters_plugin):
    """``letters_plugin`` under the short name the GRPO-step tests use (test_papo_noisy overrides it
    with the override list)."""
    return letters_plugin


@pytest.fixture(scope="session")
def letters_reward(letters_plugin) -> list[str]:
    """Overrides that make ``test_letters`` the run's only reward (a plugin file, as users write)."""
    return [f"reward.modules=[{letters_plugin}]", "reward.weights={test_letters: 1.0}"]


#: A GRPO run on the tiny model that takes seconds a step: 2 prompts × 4 samples × 6 tokens, no eval.
QUICK_RUN = (
    "data.task=count",
    "train.batch_prompts=2",
    "rollout.n=4",
    "rollout.max_new_tokens=6",
    "eval.every=0",
    "data.eval_size=4",
    "eval.max_new_tokens=4",
    "log.progress=false",
    "log.tensorboard=false",
    "train.lr=1e-3",
)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A random 16-px ``FlowPolicy`` saved as a ``vlmrl gen pretrain`` directory (gen tests)."""
    import torch

    from vlmrl.gen.model import FlowPolicy, GenModelSpec

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gen") / "model"
    FlowPolicy(GenModelSpec(size=16, block_out_channels=(16, 32))).save(path)
    return path
