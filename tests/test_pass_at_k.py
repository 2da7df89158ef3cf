"""``vlmrl eval --samples N --temperature T --pass-k K``: the unbiased pass@k estimator by hand, and
through the command line on the tiny model."""

from __future__ import annotations

import json
from math import comb

import pytest

from vlmrl.cli.main import main
from vlmrl.eval.accuracy import pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 2, 0.5),  # 1 − C(3,2)/C(4,2) = 1 − 3/6
        (5, 2, 2, 0.7),  # 1 − C(3,2)/C(5,2) = 1 − 3/10
        (10, 3, 1, 0.3),  # pass@1 = c / n
        (5, 0, 3, 0.0),  # nothing right: no k draws can hold a right one
        (5, 3, 3, 1.0),  # n − c = 2 < k = 3: every 3 draws hold a right one
        (6, 2, 6, 1.0),
    ],
)
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_refuses_k_above_n():
    with pytest.raises(ValueError, match="0 < k ≤ n"):
        pass_at_k(3, 1, 4)


def test_eval_samples_and_pass_at_k(tiny_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    args = [f"model.path={tiny_dir}", "data.task=color", "data.eval_size=3", "eval.max_new_tokens=3"]
    assert (
        main(
            ["eval", *args, "--samples", "4", "--temperature", "1.5", "--pass-k", "1", "2", "--out", str(out)]
        )
        == 0
    )
    res = json.loads(out.read_text())
    s = res["sampled"]
    assert s["temperature"] == 1.5 and s["samples_per_prompt"] == 4.0
    assert s["pass@1"] == pytest.approx(s["sampled_accuracy"])  # unbiased pass@1 is the mean of c / n
    assert 0 <= s["pass@1"] <= s["pass@2"] <= 1
    assert "accuracy" in res["accuracy"]  # greedy stays beside it
    assert main(["eval", *args, "--samples", "2", "--pass-k", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--pass-k" in err[-1] and "1..2" in err[-1]
