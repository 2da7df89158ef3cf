"""Seconds per GRPO step: vlmrl vs TRL's ``GRPOTrainer``, same model, data and settings, this CPU.

Both sides get the same locally built tiny Qwen2.5-VL (``vlmrl make-tiny``), the same procedural
``count`` prompts (image + question, chat template of the tiny processor), B prompts × G
samples, the same max new tokens, temperature 1, β = 0 (no reference model), one optimizer step
per rollout batch, fp32, and the same reward (vlmrl's exact-answer accuracy). Each framework
runs in its own subprocess, one after the other (never in parallel: two torch jobs on two
cores slow each other down), so peak RSS is per framework.

Reported per side: median seconds per step over the steps after ``--warmup``, rollout tokens/s
(completion tokens generated per second of step time), mean completion length (an untrained
model rarely stops early, so both sides generate ~max tokens; the table shows it), peak RSS.

    .venv/bin/pip install trl==1.16.0
    .venv/bin/python bench/vs_trl.py --model-size small --steps 12 --warmup 3

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

#: TinyConfig overrides per size; ``small`` is about the 0.65 M-param model of shared/FACTS.md.
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


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _samples(n: int):
    from vlmrl.data import generate

    return generate("count", n, seed=0, split="train", max_count=6, distractors=3)


def run_vlmrl(args) -> dict:
    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

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
            f"log.run_dir={args.work}/vlmrl_run",
            "log.tensorboard=false",
            "log.progress=false",
            "log.rollouts_per_step=0",
            "train.save_every=0",
        ]
    )
    trainer = GRPOTrainer(cfg)
    times, tokens, lengths = [], [], []
    for _ in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        m = trainer.train_step()
        times.append(time.perf_counter() - t0)
        lengths.append(m["rollout/response_length"])
        tokens.append(m["rollout/response_length"] * args.b * args.g)
    return _summary(times, tokens, lengths, args.warmup)


def run_trl(args) -> dict:
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
    times: list[float] = []
    lengths: list[float] = []
    trl_own: list[float] = []  # TRL's own "step_time" log, as a cross-check of the callback timer

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))
                trl_own.append(float(logs.get("step_time", "nan")))

    conf = trl.GRPOConfig(
        output_dir=f"{args.work}/trl_run",
        per_device_train_batch_size=args.b * args.g,
        num_generations=args.g,
        max_completion_length=args.tokens,
        temperature=1.0,
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
        seed=0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=conf,
        train_dataset=ds,
        processing_class=processor,
        callbacks=[Timer()],
    )
    trainer.train()
    tokens = [length * args.b * args.g for length in lengths]
    res = _summary(times, tokens, lengths, args.warmup)
    res["trl_logged_step_time_median"] = statistics.median(trl_own[args.warmup :])
    return res


def _summary(times: list[float], tokens: list[float], lengths: list[float], warmup: int) -> dict:
    t, tok = times[warmup:], tokens[warmup:]
    return {
        "s_per_step_median": statistics.median(t),
        "s_per_step_all": times,
        "tokens_per_s": sum(tok) / sum(t) if tok else float("nan"),
        "mean_completion_length": statistics.mean(lengths[warmup:]) if lengths[warmup:] else float("nan"),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child(args) -> None:
    torch_threads = os.environ.get("VLMRL_BENCH_THREADS")
    if torch_threads:
        import torch

        torch.set_num_threads(int(torch_threads))
    res = run_trl(args) if args.child == "trl" else run_vlmrl(args)
    Path(args.result).write_text(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-size", choices=sorted(SIZES), default="small")
    ap.add_argument("--b", type=int, default=4, help="prompts per step")
    ap.add_argument("--g", type=int, default=4, help="samples per prompt")
    ap.add_argument("--tokens", type=int, default=32, help="max new tokens")
    ap.add_argument("--steps", type=int, default=12, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps")
    ap.add_argument("--out", default="bench/results/vs_trl")
    ap.add_argument("--work", default=None)
    ap.add_argument("--child", choices=["trl", "vlmrl"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return

    from vlmrl.models import TinyConfig, make_tiny

    work = Path(args.work or tempfile.mkdtemp(prefix="vs_trl_"))
    model_dir = work / f"tiny_{args.model_size}"
    make_tiny(model_dir, TinyConfig(**SIZES[args.model_size]))
    import transformers
    import trl

    results = {}
    for side in ("trl", "vlmrl"):
        out = work / f"{side}.json"
        cmd = [
            sys.executable, __file__, "--child", side, "--model", str(model_dir), "--result", str(out),
            "--work", str(work), "--b", str(args.b), "--g", str(args.g), "--tokens", str(args.tokens),
            "--steps", str(args.steps), "--warmup", str(args.warmup),
        ]  # fmt: skip
        print("running", side, flush=True)
        subprocess.run(cmd, check=True)
        results[side] = json.loads(out.read_text())
        print(side, f"{results[side]['s_per_step_median']:.3f} s/step", flush=True)
    n_params = _count_params(model_dir)
    ratio = results["trl"]["s_per_step_median"] / results["vlmrl"]["s_per_step_median"]
    meta = {
        "command": "python bench/vs_trl.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "python": platform.python_version(),
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "params": n_params,
        "settings": {"B": args.b, "G": args.g, "max_new_tokens": args.tokens, "steps": args.steps,
                     "warmup": args.warmup, "model_size": args.model_size},
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    blob = {"meta": meta, "results": results, "ratio": ratio}
    out.with_suffix(".json").write_text(json.dumps(blob, indent=2))
    rows = [
        f"# vlmrl vs TRL {trl.__version__} GRPOTrainer: seconds per step on this CPU\n",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; transformers {transformers.__version__}; "
        f"tiny Qwen2.5-VL, {n_params / 1e6:.2f} M params; B={args.b} prompts × G={args.g}, "
        f"≤{args.tokens} new tokens, β=0, fp32.\n",
        "| | s/step (median) | completion tokens/s | mean completion length | peak RSS MB |",
        "|---|---|---|---|---|",
    ]
    for side in ("trl", "vlmrl"):
        r = results[side]
        rows.append(
            f"| {side} | {r['s_per_step_median']:.3f} | {r['tokens_per_s']:.0f} | "
            f"{r['mean_completion_length']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    rows.append(f"\n**TRL / vlmrl seconds per step: {ratio:.2f}×**\n")
    out.with_suffix(".md").write_text("\n".join(rows))
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
