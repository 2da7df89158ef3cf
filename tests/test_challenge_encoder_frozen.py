"""``encoder_frozen``: the faint-circle shift by hand, and the quick pipeline end to end (the
files, their shape and the context numbers; not the effect, which needs the full run)."""

from __future__ import annotations

import json

import pytest

from vlmrl.cli.main import main
from vlmrl.data import generate
from vlmrl.data.tasks.base import PALETTE, faded
from vlmrl.experiments.encoder_common import CONTEXT_KEYS
from vlmrl.experiments.encoder_frozen import SHIFT


def cells(line: str) -> list[str]:
    """A markdown table row's cells (``[]`` for any other line)."""
    return [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []


def test_faded_by_hand():
    # blue (40, 90, 225) on white (255, 255, 255) at contrast 0.2: 255 + 0.2·(c − 255)
    # = 255 − 43, 255 − 33, 255 − 6 -> (212, 222, 249)
    assert faded((40, 90, 225), 0.2) == (212, 222, 249)
    assert faded(PALETTE["red"], 1.0) == PALETTE["red"]


def test_contrast_draws_the_circle_faint_and_keeps_the_rest():
    full = generate("position", 6, seed=3, split="test")
    faint = generate("position", 6, seed=3, split="test", contrast=0.2)
    for a, b in zip(full, faint, strict=True):
        # same layout, answer and box: the knob changes only the colour
        assert a.answer == b.answer
        box = a.facts["objects"][0]["box"]
        assert b.facts["objects"][0]["box"] == box and b.facts["objects"][0]["contrast"] == 0.2
        centre = ((box[0] + box[2]) // 2, (box[1] + box[3]) // 2)
        assert a.images[0].getpixel(centre) == PALETTE["blue"]
        assert b.images[0].getpixel(centre) == faded(PALETTE["blue"], 0.2)
        assert b.images[0].getpixel((0, 0)) == (255, 255, 255)
    # the default leaves the facts as they were (no contrast key)
    assert "contrast" not in full[0].facts["objects"][0]


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_contrast_out_of_range_is_named(bad: float):
    with pytest.raises(ValueError, match=r"knob 'contrast' must satisfy 0 < contrast <= 1"):
        generate("position", 1, contrast=bad)


def test_shift_is_outside_pretraining():
    from vlmrl.models.base_mix import find_entry

    trained = find_entry("position").knobs
    assert SHIFT["radius"][1] < trained["radius"][0]  # smaller than any pretraining circle
    assert SHIFT["contrast"] < 1.0  # and fainter (pretraining drew full colour)


def test_quick_encoder_frozen_writes_the_results(tmp_path):
    (tmp_path / "challenges.json").write_text(json.dumps({"other": {"metric": "kept"}}))
    assert main(["experiment", "encoder_frozen", "--quick", "--seeds", "0", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "challenges.json").read_text())
    assert data["other"] == {"metric": "kept"}
    e = data["encoder_frozen"]
    assert set(e) == {"metric", "higher_is_better", "failure", "seeds", "command"}
    assert e["higher_is_better"] is True and e["seeds"] == [0]
    for arm in ("baseline", "fix"):
        assert len(e["failure"][arm]) == 1 and 0.0 <= e["failure"][arm][0] <= 1.0
    assert e["command"] == f"vlmrl experiment encoder_frozen --seeds 0 --quick --out {tmp_path}"
    md = (tmp_path / "challenge_encoder_frozen.md").read_text()
    assert "Verdict: no verdict: 1 seed" in md
    # the context table has every encoder column; the frozen tower did not move, the trained one did
    rows = {r[0]: r[1:] for r in map(cells, md.splitlines()) if r and r[0] in ("arm", "baseline")}
    assert rows["arm"] == sorted(CONTEXT_KEYS)
    baseline = dict(zip(rows["arm"], rows["baseline"], strict=True))
    assert baseline["weight_change"] == "0.000" and baseline["cka"] == "1.000"
    assert (tmp_path / "challenge_encoder_frozen.png").stat().st_size > 0
