"""Chaos from the operator's side: faults injected into real ``vlmrl train`` runs on the tiny model.

    .venv/bin/python bench/chaos.py            # every case + ≥ 20 random SIGKILLs (< 10 min, 2 cores)
    .venv/bin/python bench/chaos.py --quick    # 4 fast cases, no kills: what `make test` runs

Cases, each run through the command line as a user would: a reward returning NaN and
``train.lr=1e6`` (one line, every checkpoint finite); each corrupt checkpoint (truncated weights,
garbage header, 64 KB of NaN bytes in the weights, empty optimizer, broken ``state.json``) with
``--resume`` falling back to the previous one and naming the bad file; a torn last line of
``metrics.jsonl``; a run dir that is a file, ``checkpoints/`` that is a file, a read-only run dir
and a full disk (the last two simulated: this script cannot mount a filesystem); duplicate YAML
keys, a binary YAML, ``train.lr=-1``; an 8000×8 image (rejected naming the row, or resized).

Kills: a reference run, then runs of the same config SIGKILLed at uniformly random moments and
resumed (``--resume`` once a checkpoint exists) until one finishes; every metric of every step and
the final weights must equal the reference's. Writes ``bench/results/chaos.json``:
``{"cases": [{"name", "passed", "detail"}], "kills": N, "resumed_exact": N, ...}``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import command_line
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
LETTERS = '''
import math, os
from vlmrl.rewards import RewardBreakdown, register_reward

@register_reward("chaos_letters")
def chaos_letters(completion, sample):
    """Fraction of letters among the first 8 characters (NaN when CHAOS_NAN is set)."""
    if os.environ.get("CHAOS_NAN"):
        return RewardBreakdown(total=math.nan)
    return RewardBreakdown(total=sum(c.isalpha() for c in (completion or "")[:8]) / 8)
'''
TINY_RUN = (  # 2 prompts × 4 samples × 6 tokens a step, a checkpoint every step, no eval between
    *("data.task=count", "train.batch_prompts=2", "rollout.n=4", "rollout.max_new_tokens=6"),
    *("eval.every=0", "data.eval_size=2", "eval.max_new_tokens=4", "log.progress=false"),
    *("log.tensorboard=false", "train.lr=1e-3", "train.save_every=1", "train.keep_checkpoints=3"),
    "reward.weights={chaos_letters: 1.0}",
)
#: What "resumed exactly" compares, step by step, against the uninterrupted run.
KEYS = ("reward/total", "actor/pg_loss", "actor/entropy", "actor/grad_norm", "rollout/response_length")


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.tiny = work / "tiny"
        plugin = work / "chaos_reward.py"
        plugin.write_text(LETTERS)
        self.base = [f"model.path={self.tiny}", f"reward.modules=[{plugin}]", *TINY_RUN]
        self.cases: list[dict] = []

    def train(self, run: Path, *extra: str, env: dict | None = None, wait: bool = True):
        cmd = [sys.executable, "-m", "vlmrl", "train", *self.base, f"log.run_dir={run}", *extra]
        proc = subprocess.Popen(
            cmd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if not wait:
            return proc
        out, err = proc.communicate(timeout=600)
        return proc.returncode, out, err

    def case(self, name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        t0 = time.time()
        try:
            passed, detail = fn()
        except Exception as e:  # a case that raises has failed; say how
            passed, detail = False, f"{type(e).__name__}: {e}"
        self.cases.append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"[{'pass' if passed else 'FAIL'}] {name} ({time.time() - t0:.0f} s): {detail}", flush=True)


def one_line_error(rc: int, err: str, *needles: str) -> tuple[bool, str]:
    """The run failed with exactly one ``vlmrl train: error:`` line holding every needle, no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln]
    last = lines[-1] if lines else ""
    ok = rc != 0 and "Traceback" not in err and last.startswith("vlmrl train: error:")
    ok = ok and all(n in last for n in needles)
    return ok, last[:300]


def all_finite(run: Path) -> tuple[bool, str]:
    from vlmrl.run.verify import step_dirs, verify_checkpoint

    dirs = step_dirs(run)
    bad = [f"{d.name}: {p}" for d in dirs if (p := verify_checkpoint(d)) is not None]
    return not bad, f"{len(dirs)} checkpoints, all verified finite" if not bad else "; ".join(bad)


# ----------------------------------------------------------------------------- NaN
def nan_cases(b: Bench) -> None:
    def nan_reward() -> tuple[bool, str]:
        run = b.work / "nan_reward"
        rc, _, err = b.train(run, "train.steps=4", "train.nonfinite_patience=2", env={"CHAOS_NAN": "1"})
        ok, line = one_line_error(rc, err, "reward(s) were NaN")
        fin, what = all_finite(run)
        return ok and fin, f"{line} | {what}"

    def huge_lr() -> tuple[bool, str]:
        run = b.work / "lr_1e6"
        rc, _, err = b.train(run, "train.steps=6", "train.lr=1e6", "train.nonfinite_patience=2")
        ok, line = one_line_error(rc, err, "train.lr too high", "Last good checkpoint")
        fin, what = all_finite(run)
        return ok and fin, f"{line} | {what}"

    b.case("nan_reward_plugin", nan_reward)
    b.case("lr_1e6", huge_lr)


# ----------------------------------------------------------------------------- corrupt files
def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _nan_bytes(p: Path) -> None:
    raw = bytearray(p.read_bytes())
    raw[-65536:] = b"\x00\x00\xc0\x7f" * 16384
    p.write_bytes(bytes(raw))


CORRUPTIONS = {
    "truncated_model_safetensors": ("model/model.safetensors", _truncate),
    "garbage_header_model_safetensors": (
        "model/model.safetensors",
        lambda p: p.write_bytes(b"\xff" * 16 + p.read_bytes()[16:]),
    ),
    "nan_bytes_in_weights": ("model/model.safetensors", _nan_bytes),
    "empty_optimizer_safetensors": ("optimizer.safetensors", lambda p: p.write_bytes(b"")),
    "broken_state_json": ("state.json", lambda p: p.write_text('{"step": 2, "data_po')),
}


def corrupt_cases(b: Bench, names: list[str]) -> None:
    base = b.work / "base_run"
    rc, _, err = b.train(base, "train.steps=2")
    if rc != 0:
        raise RuntimeError(f"the base run failed: {err[-2000:]}")

    def fallback(rel: str, corrupt: Callable[[Path], None], run: Path) -> tuple[bool, str]:
        shutil.copytree(base, run)
        bad = run / "checkpoints" / "step_2" / rel
        corrupt(bad)
        rc, _, err = b.train(run, "train.steps=3", "--resume")
        named = str(bad) in err
        steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
        ok = rc == 0 and named and (run / "checkpoints" / "step_2.bad").is_dir() and steps == [0, 1, 2, 3]
        return ok, f"rc {rc}; warning names {rel}: {named}; resumed from step_1, metrics steps {steps}"

    for name in names:
        rel, corrupt = CORRUPTIONS[name]
        b.case(name, lambda rel=rel, corrupt=corrupt, name=name: fallback(rel, corrupt, b.work / name))

    def torn_metrics() -> tuple[bool, str]:
        run = b.work / "torn_metrics"
        shutil.copytree(base, run)
        with (run / "metrics.jsonl").open("a") as f:
            f.write('{"step": 3, "reward/tot')
        rc, _, err = b.train(run, "train.steps=3", "--resume")
        rows = (run / "metrics.jsonl").read_text().splitlines()
        ok = rc == 0 and "metrics.jsonl: line 4" in err and all(json.loads(r) for r in rows)
        return ok, f"rc {rc}; warning names metrics.jsonl line 4: {'metrics.jsonl: line 4' in err}"

    b.case("torn_metrics_line", torn_metrics)


# ----------------------------------------------------------------------------- filesystem, config, data
def preflight_cases(b: Bench, with_model: bool) -> None:
    def run_dir_file() -> tuple[bool, str]:
        f = b.work / "a_file"
        f.write_text("x")
        return one_line_error(*b.train(f, "train.steps=1")[::2], "is a file")

    def checkpoints_file() -> tuple[bool, str]:
        run = b.work / "ckpt_file"
        run.mkdir()
        (run / "checkpoints").write_text("x")
        return one_line_error(*b.train(run, "train.steps=1")[::2], "checkpoints", "is a file")

    def read_only() -> tuple[bool, str]:
        """Simulated: root ignores permissions and a container cannot mount; the OS's EROFS is raised."""
        from unittest import mock

        from vlmrl.config.checks import check_run_dir
        from vlmrl.errors import StorageError

        def erofs(*a, **k):
            raise OSError(errno.EROFS, "Read-only file system")

        with mock.patch.object(Path, "write_bytes", erofs):
            try:
                check_run_dir(b.work / "ro")
            except StorageError as e:
                return "not writable" in str(e) and "Read-only" in str(e), str(e)
        return False, "no error"

    def full_disk() -> tuple[bool, str]:
        """Simulated ENOSPC at the checkpoint write: one line naming the file, previous intact."""
        from unittest import mock

        import torch

        from vlmrl.errors import StorageError
        from vlmrl.run import checkpoint as ck

        model = torch.nn.Linear(4, 4)
        opt = torch.optim.AdamW(model.parameters())
        d = b.work / "enospc" / "checkpoints"
        ck.write_checkpoint(d / "step_1", lambda t: None, opt, {"step": 1, "data_position": 1})

        def no_space(tensors, path, *a, **k):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        with mock.patch.object(ck, "save_file", no_space):
            try:
                ck.write_checkpoint(d / "step_2", lambda t: None, opt, {"step": 2, "data_position": 2})
            except StorageError as e:
                left = sorted(p.name for p in d.iterdir())
                return "No space left" in str(e) and "optimizer.safetensors" in str(e) and left == [
                    "step_1"
                ], f"{e} | left: {left}"
        return False, "no error"

    def config(text: str | bytes, *needles: str) -> Callable[[], tuple[bool, str]]:
        def run() -> tuple[bool, str]:
            p = b.work / f"cfg_{abs(hash(text))}.yaml"
            p.write_bytes(text if isinstance(text, bytes) else text.encode())
            proc = subprocess.run(
                [sys.executable, "-m", "vlmrl", "train", str(p)], capture_output=True, text=True
            )
            return one_line_error(proc.returncode, proc.stderr, *needles)

        return run

    b.case("run_dir_is_a_file", run_dir_file)
    b.case("read_only_run_dir_simulated", read_only)
    b.case("full_disk_simulated", full_disk)
    b.case("duplicate_yaml_keys", config("train:\n  steps: 3\n  steps: 0\n", "duplicate key 'steps'"))
    if with_model:
        b.case("binary_yaml", config(bytes(range(256)) * 4, "not a UTF-8 text file"))
        b.case("negative_lr", config("train:\n  lr: -1\n", "train.lr"))
        b.case("checkpoints_is_a_file", checkpoints_file)
        b.case("aspect_ratio_8000x8", lambda: long_image(b, False))
        b.case("aspect_ratio_8000x8_resized", lambda: long_image(b, True))


def long_image(b: Bench, resize: bool) -> tuple[bool, str]:
    from PIL import Image

    d = b.work / "long_ds"
    d.mkdir(exist_ok=True)
    Image.new("RGB", (8000, 8), "white").save(d / "long.png")
    Image.new("RGB", (64, 64), "white").save(d / "ok.png")
    rows = [{"images": [f], "problem": "<image>How many?", "answer": "1"} for f in ("ok.png", "long.png")]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = [f"data.path={d / 'train.jsonl'}", "train.steps=1", "train.save_every=0"]
    if resize:
        rc, _, err = b.train(b.work / "long_resized", *extra, "data.image_bounds=resize")
        return rc == 0, f"rc {rc}: padded to 8000×40 and trained one step" if rc == 0 else err[-300:]
    rc, _, err = b.train(b.work / "long_rejected", *extra)
    return one_line_error(rc, err, "row 1", "8000×8", "data.image_bounds=resize")


# ----------------------------------------------------------------------------- kills
def kill_chain(b: Bench, name: str, steps: int, seed: int, kills: int, rng: random.Random) -> dict:
    """A reference run, then rounds on fresh run dirs: each started, SIGKILLed at a uniformly random
    moment of a run's span and resumed until it finishes, then compared with the reference. Rounds
    repeat until ``kills`` kills; the chain is exact when every round is."""
    from vlmrl.run.verify import step_dirs

    cfg = [f"train.steps={steps}", f"train.seed={seed}", f"data.seed={seed}"]
    ref = b.work / f"{name}_ref"
    t0 = time.time()
    rc, _, err = b.train(ref, *cfg)
    span = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"reference run failed: {err[-2000:]}")
    total, rounds = 0, []
    while total < kills:
        victim = b.work / f"{name}_round{len(rounds)}"
        done, moments = 0, []
        while True:
            proc = b.train(victim, *cfg, *(["--resume"] if step_dirs(victim) else []), wait=False)
            if total + done < kills:
                moment = rng.uniform(0.1, 0.95) * span
                try:
                    proc.wait(timeout=moment)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.communicate()
                    done, moments = done + 1, [*moments, round(moment, 1)]
                    continue
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                rounds.append({"kills": done, "exact": False, "detail": err[-500:]})
                break
            if (victim / "checkpoints" / f"step_{steps}").is_dir():
                rounds.append(compare(ref, victim, steps) | {"kills": done, "kill_moments_s": moments})
                break
        total += done
        shutil.rmtree(victim, ignore_errors=True)
    exact = all(r["exact"] for r in rounds)
    exact_kills = sum(r["kills"] for r in rounds if r["exact"])
    return {
        "name": name,
        "kills": total,
        "resumed_exact": exact_kills,
        "exact": exact,
        "span_s": round(span, 1),
        "rounds": rounds,
    }


def compare(ref: Path, got: Path, steps: int) -> dict:
    from vlmrl.run.metrics import read_metrics

    a = {r["step"]: r for r in read_metrics(ref)}
    b_ = {r["step"]: r for r in read_metrics(got)}
    worst = 0.0
    same_steps = sorted(a) == sorted(b_)
    for s in a if same_steps else []:
        for k in KEYS:
            if k in a[s]:
                if (a[s][k] is None) != (b_[s].get(k) is None):
                    worst = float("inf")
                elif a[s][k] is not None:
                    worst = max(worst, abs(a[s][k] - b_[s][k]))
    w1 = load_file(ref / "checkpoints" / f"step_{steps}" / "model" / "model.safetensors")
    w2 = load_file(got / "checkpoints" / f"step_{steps}" / "model" / "model.safetensors")
    wdiff = max(float((w1[k] - w2[k]).abs().max()) for k in w1)
    exact = same_steps and worst <= 1e-5 and wdiff <= 1e-6
    return {"exact": exact, "max_metric_diff": worst, "max_weight_diff": wdiff, "steps": sorted(b_)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the smoke version: 4 fast cases, no kills")
    p.add_argument("--kills", type=int, default=21, help="random SIGKILLs in all, over 3 runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "chaos.json"))
    args = p.parse_args()
    t0 = time.time()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="vlmrl-chaos-") as tmp:
        b = Bench(Path(tmp))
        from vlmrl.models import TinyConfig, make_tiny

        if args.quick:  # no case of the quick set loads a model: the path need only exist
            b.tiny.mkdir()
        else:
            make_tiny(b.tiny, TinyConfig(seed=0))
        preflight_cases(b, with_model=not args.quick)
        chains = []
        if not args.quick:
            nan_cases(b)
            corrupt_cases(b, list(CORRUPTIONS))
            per = -(-args.kills // 3)
            chains = [kill_chain(b, f"chain{i}", 3, i, per, rng) for i in range(3)]
    for c in chains:
        print(f"{c['name']}: {c['resumed_exact']}/{c['kills']} kills resumed exactly: {c}", flush=True)
    result = {
        "cases": b.cases,
        "kills": sum(c["kills"] for c in chains),
        "resumed_exact": sum(c["resumed_exact"] for c in chains),
        "chains": chains,
        "seconds": round(time.time() - t0, 1),
        "command": command_line("chaos.py", args),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    failed = [c["name"] for c in b.cases if not c["passed"]]
    print(
        f"{len(b.cases) - len(failed)}/{len(b.cases)} cases passed; {result['resumed_exact']}/"
        f"{result['kills']} kills resumed exactly; {result['seconds']} s; wrote {args.out}"
    )
    if failed or result["resumed_exact"] != result["kills"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
