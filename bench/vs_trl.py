"""Seconds per GRPO step: vlmrl vs TRL's ``GRPOTrainer``, same model, data and settings, this CPU.

Both sides get the same locally built tiny Qwen2.5-VL (``vlmrl make-tiny``), the same procedural
``count`` prompts (image + question, chat template of the tiny processor), B prompts × G
samples, the same max new tokens, temperature 1 over the full vocabulary (top-k 0, top-p 1),
β = 0 (no reference model), one optimizer step per rollout batch, fp32, the same number of
torch threads, and the same reward (vlmrl's exact-answer accuracy).

Measured so that other work on a shared CPU hurts both sides alike: each side runs in its own
worker process (so peak RSS is per side), all workers are started first, then the parent
drives them **one step at a time, interleaved** (round r: TRL step, vlmrl step, …; the order is
reversed every other round). Only one worker computes at any moment; the others wait on a pipe.
The headline is the **median over rounds of the per-round ratio** TRL s / vlmrl s, with its
quartiles; a burst of load then inflates one round's two steps together, not one side's run.

``--before`` adds a third worker: vlmrl with its fast paths switched off (plain
``model.generate`` sampling and one full prompt+completion forward per rollout), i.e. the
before-optimisation vlmrl, in the same interleaving.

Reported per side: median s/step over the rounds after ``--warmup``, rollout tokens/s
(completion tokens generated per second of sampling: time inside ``generate`` only), mean
completion length (an untrained model rarely stops early, so all sides generate ~max tokens),
and peak RSS.

    .venv/bin/pip install trl==1.16.0
    .venv/bin/python bench/vs_trl.py --model-size default --steps 10 --warmup 3 --before

Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: TinyConfig overrides per size; ``small`` is about the 0.65 M-param model of docs/facts.md.
SIZES: dict[str, dict] = {
    "small": dict(
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        intermediate_size=128,
        mrope_section=[2, 3, 3],
        vision_hidden=64,
        vision_layers=2,
        vision_heads=2,
        vision_intermediate=128,
    ),
    "default": {},
}
SIDES = ("trl", "vlmrl")


# ---------------------------------------------------------------------------- worker side
class _Ctl:
    """Line-delimited JSON over two inherited pipe fds (stdout stays free for the libraries' chatter)."""

    def __init__(self, fds: str):
        r, w = (int(x) for x in fds.split(","))
        self.r, self.w = os.fdopen(r, "r"), os.fdopen(w, "w")

    def recv(self) -> str:
        return self.r.readline().strip()

    def send(self, obj: dict) -> None:
        self.w.write(json.dumps(obj) + "\n")
        self.w.flush()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(n: int):
    from vlmrl.data import generate

    return generate("count", n, seed=0, split="train", max_count=6, distractors=3)


def _timed(obj, name: str, log: list[float]) -> None:
    """Wrap ``obj.name`` so each call's wall time is appended to ``log``."""
    orig = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            log.append(time.perf_counter() - t0)

    setattr(obj, name, wrapper)


def run_vlmrl(args, ctl: _Ctl, plain: bool) -> None:
    from vlmrl.config import load_config
    from vlmrl.rollout import shared_prompt
    from vlmrl.train.grpo import GRPOTrainer

    if plain:  # the pre-optimisation paths: one full forward per rollout, HF generate, unfused AdamW
        shared_prompt.shared_prompt_supported = lambda model, batch: False
    cfg = load_config(
        overrides=[
            f"model.path={args.model}",
            "data.task=count",
            "data.task_kwargs={max_count: 6, distractors: 3}",
            "data.eval_size=0",
            "reward.weights={accuracy: 1.0}",
            f"rollout.n={args.g}",
            f"rollout.max_new_tokens={args.tokens}",
            "rollout.temperature=1.0",
            f"train.batch_prompts={args.b}",
            f"train.micro_batch={args.b * args.g}",
            "train.lr=1e-5",
            "algo.kl_coef=0.0",
            f"log.run_dir={args.work}/vlmrl_run_{'plain' if plain else 'fast'}",
            "log.tensorboard=false",
            "log.progress=false",
            "log.groups_per_step=0",
            "train.save_every=0",
        ]
    )
    trainer = GRPOTrainer(cfg)
    trainer.engine.shared_prefill = not plain
    if plain:  # and the per-tensor AdamW loop it used before the fused kernel
        for group in trainer.optimizer.param_groups:
            group["fused"] = None
    gen: list[float] = []
    _timed(trainer.engine, "generate", gen)
    ctl.send({"ready": True})
    while ctl.recv() == "step":
        g0 = len(gen)
        t0 = time.perf_counter()
        m = trainer.train_step()
        ctl.send({"s": time.perf_counter() - t0, "gen_s": sum(gen[g0:]), "len": m["rollout/response_length"]})
    ctl.send({"peak_rss_mb": _peak_rss_mb()})


def run_trl(args, ctl: _Ctl) -> None:
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback

    from vlmrl.data import build_messages
    from vlmrl.rewards import build_reward

    samples = {s.id: s for s in _samples(args.b * (args.warmup + args.steps + 2))}
    accuracy = build_reward({"accuracy": 1.0})

    def reward(prompts, completions, sample_id, **kw):
        """TRL passes the dataset's extra columns as keyword lists, one entry per completion."""
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [accuracy(t, samples[i]).total for t, i in zip(texts, sample_id, strict=True)]

    ds = Dataset.from_list(
        [{"prompt": build_messages(s), "image": s.images[0], "sample_id": s.id} for s in samples.values()]
    )
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(args.model)
    gen: list[float] = []
    _timed(model, "generate", gen)

    class Driver(TrainerCallback):
        """Wait for the parent's go before each step; report the step when its log arrives."""

        def on_step_begin(self, a, state, control, **kw):
            if ctl.recv() != "step":
                raise RuntimeError("bench parent stopped before max_steps")
            self.g0 = len(gen)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.dt = time.perf_counter() - self.t0

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                ctl.send(
                    {
                        "s": self.dt,
                        "gen_s": sum(gen[self.g0 :]),
                        "len": float(logs["completions/mean_length"]),
                        "trl_step_time": float(logs.get("step_time", "nan")),
                    }
                )

    conf = trl.GRPOConfig(
        output_dir=f"{args.work}/trl_run",
        per_device_train_batch_size=args.b * args.g,
        num_generations=args.g,
        max_completion_length=args.tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        loss_type="grpo",
        learning_rate=1e-5,
        max_steps=args.warmup + args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=conf,
        train_dataset=ds,
        processing_class=processor,
        callbacks=[Driver()],
    )
    ctl.send({"ready": True})
    trainer.train()
    ctl.recv()  # "stop"
    ctl.send({"peak_rss_mb": _peak_rss_mb()})


def _child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    ctl = _Ctl(args.ctl)
    if args.child == "trl":
        run_trl(args, ctl)
    else:
        run_vlmrl(args, ctl, plain=args.child == "vlmrl_before")


# ---------------------------------------------------------------------------- parent side
class _Worker:
    def __init__(self, side: str, base_cmd: list[str]):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        cmd = [*base_cmd, "--child", side, "--ctl", f"{p2c_r},{c2p_w}"]
        self.proc = subprocess.Popen(cmd, pass_fds=(p2c_r, c2p_w))
        os.close(p2c_r)
        os.close(c2p_w)
        self.w, self.r = os.fdopen(p2c_w, "w"), os.fdopen(c2p_r, "r")
        self.side = side

    def ask(self, cmd: str) -> dict:
        self.w.write(cmd + "\n")
        self.w.flush()
        return self.recv()

    def recv(self) -> dict:
        line = self.r.readline()
        if not line:
            raise RuntimeError(f"bench worker {self.side!r} exited (code {self.proc.wait()})")
        return json.loads(line)


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def _summary(steps: list[dict], warmup: int, b: int, g: int) -> dict:
    timed = steps[warmup:]
    t = [s["s"] for s in timed]
    tokens = [s["len"] * b * g for s in timed]
    gen = [s["gen_s"] for s in timed]
    out = {
        "s_per_step_median": statistics.median(t),
        "s_per_step_all": [s["s"] for s in steps],
        "gen_s_median": statistics.median(gen),
        "rollout_tokens_per_s": sum(tokens) / sum(gen),
        "mean_completion_length": statistics.mean(s["len"] for s in timed),
    }
    if "trl_step_time" in steps[0]:
        out["trl_logged_step_time_median"] = statistics.median(s["trl_step_time"] for s in timed)
    return out


def _machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"cpu": model, "cores": os.cpu_count(), "arch": platform.machine(), "gpu": "none"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-size", choices=sorted(SIZES), default="default")
    ap.add_argument("--b", type=int, default=4, help="prompts per step")
    ap.add_argument("--g", type=int, default=4, help="samples per prompt")
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens")
    ap.add_argument("--steps", type=int, default=10, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (the same for all)")
    ap.add_argument("--before", action="store_true", help="also run vlmrl with its fast paths off")
    ap.add_argument("--out", default="bench/results/vs_trl_default")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", choices=["trl", "vlmrl", "vlmrl_before"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ctl", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return

    import torch
    import transformers
    import trl

    from vlmrl.models import TinyConfig, make_tiny

    work = Path(args.work or tempfile.mkdtemp(prefix="vs_trl_"))
    model_dir = work / f"tiny_{args.model_size}"
    make_tiny(model_dir, TinyConfig(**SIZES[args.model_size]))
    sides = [*SIDES, "vlmrl_before"] if args.before else list(SIDES)
    base = [
        sys.executable, __file__, "--model", str(model_dir), "--work", str(work), "--b", str(args.b),
        "--g", str(args.g), "--tokens", str(args.tokens), "--steps", str(args.steps),
        "--warmup", str(args.warmup), "--threads", str(args.threads),
    ]  # fmt: skip
    workers = {s: _Worker(s, base) for s in sides}
    for w in workers.values():
        w.recv()  # ready
    load_start = os.getloadavg()
    steps: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(args.warmup + args.steps):
        for side in sides if r % 2 == 0 else sides[::-1]:
            steps[side].append(workers[side].ask("step"))
        line = "  ".join(f"{s} {steps[s][-1]['s']:.3f}" for s in sides)
        print(f"round {r}{' (warm-up)' if r < args.warmup else ''}: {line}", flush=True)
    load_end = os.getloadavg()
    results = {}
    for side in sides:
        results[side] = _summary(steps[side], args.warmup, args.b, args.g)
        results[side]["peak_rss_mb"] = workers[side].ask("stop")["peak_rss_mb"]
        workers[side].proc.wait()

    def ratios(num: str, den: str) -> dict:
        pairs = zip(steps[num][args.warmup :], steps[den][args.warmup :], strict=True)
        rs = [a["s"] / b["s"] for a, b in pairs]
        return {"median": statistics.median(rs), "q25": _quantile(rs, 0.25), "q75": _quantile(rs, 0.75),
                "min": min(rs), "max": max(rs), "per_round": rs}  # fmt: skip

    ratio = ratios("trl", "vlmrl")
    extra = {"vlmrl_before_over_vlmrl": ratios("vlmrl_before", "vlmrl"),
             "trl_over_vlmrl_before": ratios("trl", "vlmrl_before")} if args.before else {}  # fmt: skip
    n_params = _count_params(model_dir)
    meta = {
        "command": "python bench/vs_trl.py " + " ".join(sys.argv[1:]),
        "machine": _machine(),
        "load_average_start_end": [load_start, load_end],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "params": n_params,
        "settings": {"B": args.b, "G": args.g, "max_new_tokens": args.tokens, "steps": args.steps,
                     "warmup": args.warmup, "model_size": args.model_size, "threads": args.threads},
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blob = {"meta": meta, "results": results, "ratio_trl_over_vlmrl": ratio, **extra}
    out.with_suffix(".json").write_text(json.dumps(blob, indent=2))
    m = meta["machine"]
    rows = [
        f"# vlmrl vs TRL {trl.__version__} GRPOTrainer: seconds per step on this CPU\n",
        f"Command: `{meta['command']}`  ",
        f"Machine: {m['cpu']}, {m['cores']} cores, no GPU; load average (1 min) {load_start[0]:.1f} at "
        f"start, {load_end[0]:.1f} at end (the CPU is shared).  ",
        f"Versions: python {meta['python']}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}.  ",
        f"Settings: tiny Qwen2.5-VL, {n_params / 1e6:.2f} M params; B={args.b} prompts × G={args.g}, "
        f"≤{args.tokens} new tokens, temperature 1, β=0, fp32, {args.threads} torch thread(s) per side; "
        f"{args.steps} interleaved rounds after {args.warmup} warm-up rounds.\n",
        "| | s/step (median) | rollout tokens/s | mean completion length | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for side in sides:
        r = results[side]
        rows.append(
            f"| {side} | {r['s_per_step_median']:.3f} | {r['rollout_tokens_per_s']:.0f} | "
            f"{r['mean_completion_length']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    rows.append(
        f"\n**TRL / vlmrl seconds per step: {ratio['median']:.2f}×** (median of {args.steps} per-round "
        f"ratios; quartiles {ratio['q25']:.2f}–{ratio['q75']:.2f}, "
        f"range {ratio['min']:.2f}–{ratio['max']:.2f})"
    )
    if args.before:
        b = extra["trl_over_vlmrl_before"]
        s = extra["vlmrl_before_over_vlmrl"]
        rows.append(
            f"\nBefore the optimisation (`vlmrl_before`: fast paths off): TRL / vlmrl {b['median']:.2f}× "
            f"(quartiles {b['q25']:.2f}–{b['q75']:.2f}); speed-up of vlmrl itself {s['median']:.2f}× "
            f"(quartiles {s['q25']:.2f}–{s['q75']:.2f})."
        )
    out.with_suffix(".md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


def _count_params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), "pt") as st:
            for k in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                n = 1
                for d in st.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


if __name__ == "__main__":
    main()
