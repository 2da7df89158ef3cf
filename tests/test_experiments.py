"""Challenges (``vlmrl experiment``): the verdict's statistics by hand, the registry's errors, and the
quick pipeline end to end (the files and their shape, not the effect)."""

from __future__ import annotations

import json
import math

import pytest

from vlmrl.cli.main import main
from vlmrl.errors import UserError
from vlmrl.experiments import ExperimentName, check_name
from vlmrl.experiments.runner import merge_entry
from vlmrl.experiments.verdict import mean_std, summary_table, verdict


def test_verdict_hand_computed():
    # baseline [0.2, 0.4, 0.3], fix [0.9, 0.8, 1.0] -> d = [0.7, 0.4, 0.7], mean(d) = 0.6.
    # deviations [0.1, -0.2, 0.1] -> squares sum 0.06 -> var (ddof 1) 0.03 -> std √0.03 = 0.17321;
    # SE = 0.17321 / √3 = 0.1. 0.6 > 2 × 0.1: the fix beats the baseline.
    v = verdict([0.2, 0.4, 0.3], [0.9, 0.8, 1.0], higher_is_better=True)
    assert v.n == 3
    assert v.baseline_mean == pytest.approx(0.3) and v.baseline_std == pytest.approx(0.1)
    assert v.fix_mean == pytest.approx(0.9) and v.fix_std == pytest.approx(0.1)
    assert v.diff_mean == pytest.approx(0.6)
    assert v.diff_se == pytest.approx(0.1)
    assert v.fix_beats is True


def test_verdict_null_and_lower_is_better():
    # lower is better: d = baseline − fix = [0.5, −0.3] -> mean 0.1; deviations ±0.4 -> var 0.32,
    # std 0.56569, SE 0.56569 / √2 = 0.4. 0.1 < 0.8: a null result.
    v = verdict([1.0, 0.5], [0.5, 0.8], higher_is_better=False)
    assert v.diff_mean == pytest.approx(0.1)
    assert v.diff_se == pytest.approx(0.4)
    assert v.fix_beats is False
    # one seed: no standard error, no verdict
    one = verdict([0.0], [1.0], higher_is_better=True)
    assert one.diff_se is None and one.fix_beats is None
    assert mean_std([2.0]) == (2.0, None)
    assert math.isclose(mean_std([1.0, 3.0])[1], math.sqrt(2))


def test_unknown_experiment_lists_the_allowed(capsys):
    with pytest.raises(UserError, match="allowed: encoder_blind"):
        check_name("nope")
    assert main(["experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "encoder_blind" in err
    assert check_name("encoder_blind") is ExperimentName.ENCODER_BLIND


def test_merge_keeps_other_entries(tmp_path):
    path = tmp_path / "challenges.json"
    path.write_text(json.dumps({"other": {"metric": "m"}}))
    merge_entry(path, "encoder_blind", {"metric": "x"})
    assert json.loads(path.read_text()) == {"other": {"metric": "m"}, "encoder_blind": {"metric": "x"}}


def test_quick_encoder_blind_writes_the_results(tmp_path):
    (tmp_path / "challenges.json").write_text(json.dumps({"other": {"metric": "kept"}}))
    assert main(["experiment", "encoder_blind", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "challenges.json").read_text())
    assert data["other"] == {"metric": "kept"}
    e = data["encoder_blind"]
    assert set(e) == {"metric", "higher_is_better", "failure", "seeds", "command"}
    assert isinstance(e["metric"], str) and e["higher_is_better"] is True
    assert e["seeds"] == [0]
    assert set(e["failure"]) == {"baseline", "fix"}
    for arm in ("baseline", "fix"):
        assert len(e["failure"][arm]) == 1 and all(0.0 <= x <= 1.0 for x in e["failure"][arm])
    assert e["command"].startswith("vlmrl experiment encoder_blind") and "--quick" in e["command"]
    md = (tmp_path / "challenge_encoder_blind.md").read_text()
    assert "| seed | baseline | fix |" in md and "Verdict: no verdict: 1 seed" in md
    assert (tmp_path / "challenge_encoder_blind.png").stat().st_size > 0


def test_summary_table_signs_the_difference_by_direction():
    entries = {
        "up": {
            "metric": "acc (held out)",
            "higher_is_better": True,
            "seeds": [0, 1, 2],
            "failure": {"baseline": [0.2, 0.4, 0.3], "fix": [0.9, 0.8, 1.0]},
        },
        "down": {
            "metric": "unsafe_rate",
            "higher_is_better": False,
            "seeds": [0, 1],
            "failure": {"baseline": [1.0, 0.5], "fix": [0.5, 0.8]},
        },
    }
    rows = summary_table(entries).splitlines()
    assert len(rows) == 4
    # the hand-computed verdicts above: +0.600 (SE 0.100) beats; +0.100 (SE 0.400) is null
    assert rows[2] == "| `up` | acc ↑ | 0.300 ± 0.100 | 0.900 ± 0.100 | +0.600 (0.100) | **fix beats** | 3 |"
    assert "| +0.100 (0.400) | **null** | 2 |" in rows[3] and "unsafe_rate ↓" in rows[3]
