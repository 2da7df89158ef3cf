"""GPU checks, for when a GPU machine is available (CI never has one).

    python bench/gpu_check.py --steps 6            # writes bench/results/gpu_check_<card>.{md,json}

On the locally built tiny Qwen2.5-VL (nothing is downloaded), for each engine that can run here
(``hf`` always, ``vllm`` when importable) and each dtype (float32, bfloat16):

- the ratio check: max |log π_sampler − log π_train| over completion tokens before any update
  (the number that must be ~0 for GRPO's ratio to mean anything);
- GRPO seconds per step (median after one warm-up step), generation seconds, peak GPU memory;
- the vLLM weight sync: after one update, vLLM's log-probs track the *updated* policy.

With ≥ 2 GPUs it also runs ``torchrun --nproc_per_node=2 -m vlmrl train`` (nccl) for 2 steps.
Every check is independent: one that fails is recorded with its error and the rest still run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _overrides(
    model: str, run_dir: Path, engine: str, dtype: str, steps: int, device: str = "cuda"
) -> list[str]:
    return [
        f"model.path={model}",
        f"model.device={device}",
        f"model.dtype={dtype}",
        f"rollout.engine={engine}",
        "rollout.vllm_gpu_memory_utilization=0.3",
        "data.task=count",
        "reward.weights={accuracy: 1.0}",
        "train.batch_prompts=16",
        "rollout.n=8",
        "rollout.max_new_tokens=16",
        "train.micro_batch=64",
        f"train.steps={steps}",
        "train.save_every=0",
        "eval.every=0",
        "data.eval_size=16",
        "eval.drift=false",
        f"log.run_dir={run_dir}",
        "log.progress=false",
        "log.tensorboard=false",
    ]


def ratio_gap(trainer) -> float:
    """max |sampler − training forward| log-prob on one fresh rollout batch, before any update."""
    from vlmrl.rollout.batch import completion_logprobs, training_inputs

    batch = trainer._rollout_round(trainer.cfg.train.batch_prompts).batch
    model = trainer.policy.model.eval()
    worst = 0.0
    with torch.no_grad():
        for start in range(0, batch.size, 32):
            rows = list(range(start, min(start + 32, batch.size)))
            inputs, _ = training_inputs(batch, rows)
            inputs = {k: v.to(model.device) for k, v in inputs.items()}
            logp, _ = completion_logprobs(
                model, inputs, batch.completion_ids[rows].to(model.device), trainer.cfg.rollout.temperature
            )
            diff = (logp.float().cpu() - batch.sampler_logprobs[rows]).abs() * batch.completion_mask[rows]
            worst = max(worst, float(diff.max()))
    return worst


def run_engine(model: str, engine: str, dtype: str, steps: int, device: str = "cuda") -> dict:
    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, _overrides(model, Path(tmp) / "run", engine, dtype, steps, device))
        gpu = device.startswith("cuda")
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        trainer = GRPOTrainer(cfg)
        out: dict = {"engine": engine, "dtype": dtype, "ratio_gap_before_update": ratio_gap(trainer)}
        times, gen = [], []
        for _ in range(steps):
            m = trainer.train_step()
            times.append(m["time/step_s"])
            gen.append(m["time/generate_s"])
        out |= {
            "s_per_step_median": statistics.median(times[1:] or times),
            "generate_s_median": statistics.median(gen[1:] or gen),
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0,
        }
        # after updates: the engine must sample from the updated policy (vLLM: weights synced)
        out["ratio_gap_after_updates"] = ratio_gap(trainer)
        return out


def run_torchrun(model: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "-m",
            "vlmrl",
            "train",
            *_overrides(model, Path(tmp) / "run", "hf", "bfloat16", steps),
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        ok = proc.returncode == 0 and (Path(tmp) / "run" / "metrics.jsonl").exists()
        return {"ok": ok, "seconds": time.perf_counter() - t0, "tail": proc.stderr[-2000:]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--cpu-dry-run", action="store_true", help="run the hf/float32 check on the CPU (tests the script)"
    )
    args = ap.parse_args()
    if args.cpu_dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            from vlmrl.models import TinyConfig, make_tiny

            model = str(make_tiny(Path(tmp) / "tiny", TinyConfig(seed=0)))
            print(json.dumps(run_engine(model, "hf", "float32", args.steps, device="cpu")))
        return 0
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA here; nothing to check (--cpu-dry-run tests the script)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vlmrl.models import TinyConfig, make_tiny

    card = torch.cuda.get_device_name(0)
    results: dict = {
        "card": card,
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "checks": [],
    }
    try:
        import vllm

        results["vllm"] = vllm.__version__
        engines = ["hf", "vllm"]
    except ImportError as e:
        results["vllm"] = f"not importable: {e}"
        engines = ["hf"]
    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_tiny(Path(tmp) / "tiny", TinyConfig(seed=0)))
        for engine in engines:
            for dtype in ("float32", "bfloat16"):
                try:
                    results["checks"].append(run_engine(model, engine, dtype, args.steps))
                except Exception as e:  # record and go on: one broken check must not hide the others
                    results["checks"].append(
                        {"engine": engine, "dtype": dtype, "error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc()[-3000:]}
                    )  # fmt: skip
                print(json.dumps(results["checks"][-1], default=str)[:400], flush=True)
        if torch.cuda.device_count() >= 2:
            results["torchrun_2gpu"] = run_torchrun(model, 2)
    slug = "".join(c if c.isalnum() else "_" for c in card.lower()).strip("_")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu_check_{slug}.json").write_text(json.dumps(results, indent=2, default=str))
    lines = [
        f"# GPU check on {card} ({results['gpus']} GPU), torch {results['torch']}, vllm {results['vllm']}",
        "",
        f"`python bench/gpu_check.py --steps {args.steps}`; tiny Qwen2.5-VL, 16 prompts × 8 samples, "
        "≤ 16 new tokens.",
        "",
        "| engine | dtype | ratio gap before | after updates | s/step | generate s | peak GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["checks"]:
        if "error" in c:
            lines.append(f"| {c['engine']} | {c['dtype']} | error: {c['error'][:120]} | | | | |")
        else:
            lines.append(
                f"| {c['engine']} | {c['dtype']} | {c['ratio_gap_before_update']:.2e} | "
                f"{c['ratio_gap_after_updates']:.2e} | {c['s_per_step_median']:.3f} | "
                f"{c['generate_s_median']:.3f} | {c['peak_gpu_mem_gb']:.2f} |"
            )
    if "torchrun_2gpu" in results:
        t = results["torchrun_2gpu"]
        lines += ["", f"torchrun 2 GPUs (nccl): {'ok' if t['ok'] else 'FAILED'} in {t['seconds']:.0f} s"]
    (args.out / f"gpu_check_{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
