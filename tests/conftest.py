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
