"""The generation task's prompts and renderer, the flow-matching generator, its checkpoints,
ODE sampler, pretraining loop and CLI (all on a tiny 16-px spec so the file runs in seconds)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from vlmrl.cli.main import main
from vlmrl.data.tasks.base import PALETTE
from vlmrl.gen.model import (
    SPEC_FILE,
    WEIGHTS_FILE,
    FlowPolicy,
    GenModelSpec,
    from_uint8,
    load_flow_policy,
    sample_ode,
    to_uint8,
)
from vlmrl.gen.pretrain import LOG_FILE, SAMPLES_FILE, pretrain
from vlmrl.gen.prompts import (
    ALL_PROMPTS,
    COLOURS,
    COUNTS,
    SIDES,
    GenPrompt,
    parse_prompt,
    prompt_ids,
    render,
    render_batch,
    split_prompts,
)

TINY = GenModelSpec(size=16, block_out_channels=(16, 32), norm_num_groups=8, attention_head_dim=8)


@pytest.fixture(scope="module")
def tiny() -> FlowPolicy:
    torch.manual_seed(0)
    return FlowPolicy(TINY).eval()


# ---------------------------------------------------------------- prompts and renderer


@pytest.mark.parametrize("size", [32, 16])
def test_render_draws_count_separate_circles_of_the_colour_in_the_half(size):
    for seed in range(4):
        rng = np.random.default_rng(seed)
        for p in ALL_PROMPTS:
            img = render(p, rng, size)
            assert img.shape == (size, size, 3) and img.dtype == np.uint8
            mask = (img == PALETTE[p.colour]).all(-1)
            ink = (img != 255).any(-1)
            assert (mask == ink).all(), "only the prompt's colour on a white background"
            # 8-connectivity: even diagonal touching would merge two circles
            _, n = ndimage.label(mask, structure=np.ones((3, 3)))
            assert n == p.count, (p.text, seed)
            xs = np.nonzero(mask)[1]
            assert (xs < size // 2).all() if p.side == "left" else (xs >= size // 2).all(), p.text


def test_render_is_deterministic_for_a_seed_and_varies_across_seeds():
    a = render_batch(ALL_PROMPTS, np.random.default_rng(3))
    b = render_batch(ALL_PROMPTS, np.random.default_rng(3))
    c = render_batch(ALL_PROMPTS, np.random.default_rng(4))
    assert a.shape == (18, 32, 32, 3) and (a == b).all() and (a != c).any()


def test_all_prompts_text_ids_and_parse_round_trip():
    assert len(ALL_PROMPTS) == 18 == len(set(ALL_PROMPTS))
    assert GenPrompt("red", 1, "left").text == "1 red circle on the left"
    assert GenPrompt("blue", 3, "right").text == "3 blue circles on the right"
    for p in ALL_PROMPTS:
        assert parse_prompt(p.text) == p
        assert parse_prompt("  " + p.text.upper() + " ") == p
        assert p.ids == (COLOURS.index(p.colour), p.count - 1, SIDES.index(p.side))
    ids = prompt_ids(ALL_PROMPTS)
    assert ids.dtype == torch.long and ids.shape == (18, 3)
    assert ids[:, 0].max() == 2 and ids[:, 1].max() == 2 and ids[:, 2].max() == 1


@pytest.mark.parametrize(
    "text, why",
    [
        ("4 red circles on the left", "count '4'"),
        ("2 pink circles on the left", "colour 'pink'"),
        ("2 red circles on the top", "side 'top'"),
        ("2 red circle on the left", "noun 'circle'"),
        ("1 red circles on the left", "noun 'circles'"),
        ("2 red squares on the left", "noun 'squares'"),
        ("red circles", "not of the form"),
        ("", "not of the form"),
    ],
)
def test_parse_prompt_rejects_bad_text_with_one_clear_line(text, why):
    with pytest.raises(ValueError) as e:
        parse_prompt(text)
    msg = str(e.value)
    assert repr(text) in msg and why in msg and "\n" not in msg
    assert "allowed" in msg or str(COLOURS) in msg


def test_gen_prompt_rejects_bad_fields():
    with pytest.raises(ValueError, match="colour 'pink'"):
        GenPrompt("pink", 1, "left")
    with pytest.raises(ValueError, match="count 0"):
        GenPrompt("red", 0, "left")
    with pytest.raises(ValueError, match="side 'up'"):
        GenPrompt("red", 1, "up")


def test_split_prompts_holds_out_four_and_keeps_every_word_in_train():
    train, held = split_prompts()
    assert len(held) == 4 and len(train) == 14
    assert not set(train) & set(held) and set(train) | set(held) == set(ALL_PROMPTS)
    assert {p.colour for p in train} == set(COLOURS)
    assert {p.count for p in train} == set(COUNTS)
    assert {p.side for p in train} == set(SIDES)
    assert split_prompts() == (train, held)


# ---------------------------------------------------------------- model and checkpoints


def test_velocity_shape_spec_and_prompt_conditioning(tiny):
    x = torch.randn(4, 3, 16, 16)
    cond = prompt_ids(ALL_PROMPTS[:4])
    v = tiny.velocity(x, torch.full((4,), 0.5), cond)
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert tiny.spec == TINY and tiny.encode_prompt(cond).shape == (4, TINY.embed_dim)
    other = prompt_ids(ALL_PROMPTS[-4:])
    with torch.no_grad():
        assert not torch.allclose(tiny.velocity(x, torch.full((4,), 0.5), other), v)


def test_deepcopy_is_an_equal_independent_model(tiny):
    ref = copy.deepcopy(tiny)
    assert ref.spec == tiny.spec
    x, t, c = torch.randn(2, 3, 16, 16), torch.rand(2), prompt_ids(ALL_PROMPTS[:2])
    with torch.no_grad():
        assert torch.equal(ref.velocity(x, t, c), tiny.velocity(x, t, c))
        next(ref.parameters()).add_(1.0)
        assert not torch.equal(ref.velocity(x, t, c), tiny.velocity(x, t, c))


def test_save_load_gives_identical_velocity(tiny, tmp_path):
    tiny.save(tmp_path / "g")
    spec = json.loads((tmp_path / "g" / SPEC_FILE).read_text())
    assert spec["format"] == 1 and spec["block_out_channels"] == [16, 32]
    loaded = load_flow_policy(tmp_path / "g")
    assert loaded.spec == TINY
    x, t, c = torch.randn(3, 3, 16, 16), torch.rand(3), prompt_ids(ALL_PROMPTS[5:8])
    with torch.no_grad():
        assert torch.equal(loaded.velocity(x, t, c), tiny.velocity(x, t, c))


def _one_line_error(path, exc_type, *needles):
    with pytest.raises(exc_type) as e:
        load_flow_policy(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg


def test_load_errors_name_the_file(tiny, tmp_path):
    d = tmp_path / "g"
    _one_line_error(d, FileNotFoundError, d)
    tiny.save(d)
    (d / WEIGHTS_FILE).rename(d / "w.bak")
    _one_line_error(d, FileNotFoundError, d / WEIGHTS_FILE)
    (d / "w.bak").write_bytes(b"\x07\x00\x00\x00\x00\x00\x00\x00not safetensors")
    (d / "w.bak").rename(d / WEIGHTS_FILE)
    _one_line_error(d, ValueError, d / WEIGHTS_FILE, "safetensors")

    tiny.save(d)
    good = json.loads((d / SPEC_FILE).read_text())
    (d / SPEC_FILE).write_text("{not json")
    _one_line_error(d, ValueError, d / SPEC_FILE, "JSON")
    (d / SPEC_FILE).write_text(json.dumps({k: v for k, v in good.items() if k != "norm_num_groups"}))
    _one_line_error(d, ValueError, d / SPEC_FILE, "missing", "norm_num_groups")
    (d / SPEC_FILE).write_text(json.dumps({**good, "depth": 3}))
    _one_line_error(d, ValueError, d / SPEC_FILE, "unknown", "depth")
    (d / SPEC_FILE).write_text(json.dumps({**good, "block_out_channels": [16, 16]}))
    _one_line_error(d, ValueError, d / WEIGHTS_FILE, "shape")
    (d / SPEC_FILE).write_text(json.dumps({**good, "norm_num_groups": 5}))
    _one_line_error(d, ValueError, d / SPEC_FILE, "norm_num_groups")


def test_spec_validation_names_the_field():
    with pytest.raises(ValueError, match="size 30"):
        GenModelSpec(size=30, block_out_channels=(16, 32, 32))
    with pytest.raises(ValueError, match="norm_num_groups 5"):
        GenModelSpec(norm_num_groups=5)


# ---------------------------------------------------------------- sampling and pretraining


def test_sample_ode_shape_range_determinism(tiny):
    cond = prompt_ids(ALL_PROMPTS[:3])
    a = sample_ode(tiny, cond, steps=3, generator=torch.Generator().manual_seed(1))
    b = sample_ode(tiny, cond, steps=3, generator=torch.Generator().manual_seed(1))
    c = sample_ode(tiny, cond, steps=3, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    x1 = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert torch.equal(sample_ode(tiny, cond, steps=3, x1=x1), a)
    # one Euler step from t = 1 to 0 is x1 - v(x1, 1)
    with torch.no_grad():
        one = (x1 - tiny.velocity(x1, torch.ones(3), cond)).clamp(-1, 1)
    assert torch.allclose(sample_ode(tiny, cond, steps=1, x1=x1), one)


def test_uint8_round_trip():
    imgs = render_batch(ALL_PROMPTS[:2], np.random.default_rng(0))
    x = from_uint8(imgs)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert (to_uint8(x) == imgs).all()


def test_pretrain_lowers_the_loss_and_writes_its_outputs(tmp_path):
    logged = []
    res = pretrain(
        tmp_path / "run", TINY, steps=30, batch=8, lr=2e-3, seed=0, log_every=1,
        on_log=lambda s, r: logged.append(s), per_prompt=1, sample_steps=2,
    )  # fmt: skip
    lines = [json.loads(x) for x in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 31)) == logged
    losses = [r["loss"] for r in lines]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    assert res["final_loss"] == losses[-1]
    for f in (SAMPLES_FILE, SPEC_FILE, WEIGHTS_FILE):
        assert (tmp_path / "run" / f).is_file()
    assert load_flow_policy(tmp_path / "run").spec == TINY


def test_pretrain_is_deterministic_for_a_seed(tmp_path):
    kw = dict(spec=TINY, steps=3, batch=4, seed=5, log_every=1, per_prompt=1, sample_steps=1)
    a, b = pretrain(tmp_path / "a", **kw), pretrain(tmp_path / "b", **kw)
    assert a["final_loss"] == b["final_loss"]
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == (tmp_path / "b" / WEIGHTS_FILE).read_bytes()


def test_cli_gen_pretrain_and_sample(tmp_path, capsys):
    out = tmp_path / "base"
    argv = ["gen", "pretrain", "--out", str(out), "--steps", "2", "--batch", "2", "--per-prompt", "1"]
    assert main([*argv, "--sample-steps", "1"]) == 0
    for f in (SAMPLES_FILE, SPEC_FILE, WEIGHTS_FILE, LOG_FILE):
        assert (out / f).is_file()
    assert len((out / LOG_FILE).read_text().splitlines()) == 1
    grid = tmp_path / "grid.png"
    assert main(["gen", "sample", str(out), "--out", str(grid), "--steps", "1", "--per-prompt", "1"]) == 0
    assert grid.is_file()
    assert main(["gen", "sample", str(tmp_path / "nope"), "--out", str(grid)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
