"""Challenges: experiments that provoke a known failure of vision RL and test a fix over seeds.

Each experiment (one module, registered in :mod:`vlmrl.experiments.registry`) runs a baseline arm
(the failure-inducing setting) and a fix arm for several seeds; :mod:`vlmrl.experiments.runner`
writes the numbers into ``challenges.json``, a markdown verdict and a plot, and
:mod:`vlmrl.experiments.verdict` holds the statistics. Run one with ``vlmrl experiment NAME``.
"""

from vlmrl.experiments.registry import ArmResult, Challenge, ExperimentName, check_name, get_challenge

__all__ = ["ArmResult", "Challenge", "ExperimentName", "check_name", "get_challenge"]
