"""GPU checks, for when a GPU machine is available (CI never has one).

    python bench/gpu_check.py --steps 6            # writes bench/results/gpu_check_<card>.{md,json}

On the locally built tiny Qwen2.5-VL (nothing is downloaded), for each engine that can run here
(``hf`` always, ``vllm`` when importable) and each dtype (float32, bfloat16):

- the ratio check: max |log π_sampler − log π_train| over completion tokens before any update
  (the number that must be ~0 for GRPO's ratio to mean anything);
- GRPO seconds per step (median after one warm-up step), generation seconds, peak GPU memory;
- the vLLM weight sync: after one update, vLLM's log-probs track the *updated* policy;
- vLLM at ``top_p: 0.9`` with 2 minibatches (the old-log-prob rule at work): the ratio gap stays
  ~0 because old log-probs are the policy's, and ``rollout/vllm_logprob_gap`` shows how far
  vLLM's own (nucleus-renormalised) ones were;
- vLLM seeds: one prompt sent twice in a call, 4 samples each — with a shared seed per sample
  index the two copies' completions would be identical;
- ``rollout.mode: async``: a weight push to a worker process (gloo staged through the CPU; nccl to
  a worker on its own GPU when there are two), GRPO with staleness 0 against sync (max |Δ weight|)
  and with staleness 1 (its ``rollout/staleness`` and seconds per step);
- the GPU tests of the engine (``tests/test_vllm_engine.py``: fp32 engine vs fp32 forward, bf16 vs
  bf16, the encoder cache reset after a vision-tower change, a weight change reaching vLLM).

With ≥ 2 GPUs it also runs ``torchrun --nproc_per_node=2 -m vlmrl train`` (nccl) for 2 steps, and
the same with ``rollout.engine=vllm``, where each rank reports the device of its vLLM model (must be
``cuda:LOCAL_RANK``: the ``external_launcher`` placement).
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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class EngineRun:
    """One engine check: which engine, in which dtype, with which nucleus and minibatch count."""

    engine: str
    dtype: str
    top_p: float = 1.0
    minibatches: int = 1  # > 1: off-policy minibatches, so old log-probs are read (vLLM recomputes them)


def _overrides(model: str, run_dir: Path, run: EngineRun, steps: int, device: str = "cuda") -> list[str]:
    return [
        f"rollout.top_p={run.top_p}",
        f"train.minibatches={run.minibatches}",
        f"model.path={model}",
        f"model.device={device}",
        f"model.dtype={run.dtype}",
        f"rollout.engine={run.engine}",
        "rollout.vllm_gpu_memory_utilization=0.15",  # up to 5 engines live in one process
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


def run_engine(model: str, run: EngineRun, steps: int, device: str = "cuda") -> dict:
    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, _overrides(model, Path(tmp) / "run", run, steps, device))
        gpu = device.startswith("cuda")
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        trainer = GRPOTrainer(cfg)
        out: dict = asdict(run)
        out["ratio_gap_before_update"] = ratio_gap(trainer)
        times, gen, vllm_gap = [], [], []
        for _ in range(steps):
            m = trainer.train_step()
            times.append(m["time/step_s"])
            gen.append(m["time/generate_s"])
            if "rollout/vllm_logprob_gap" in m:  # vLLM's own log-probs vs the policy's (recomputed)
                vllm_gap.append(m["rollout/vllm_logprob_gap"])
        out["vllm_logprob_gap_max"] = max(vllm_gap) if vllm_gap else None
        out |= {
            "s_per_step_median": statistics.median(times[1:] or times),
            "generate_s_median": statistics.median(gen[1:] or gen),
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0,
        }
        # after updates: the engine must sample from the updated policy (vLLM: weights synced)
        out["ratio_gap_after_updates"] = ratio_gap(trainer)
        return out


def vllm_seed_check(model: str) -> dict:
    """One prompt sent twice in one call, 4 samples each: copies must not repeat each other's samples.

    With one seed per call (sample j seeded seed + j) the j-th samples of the two copies shared
    their noise and came out identical; with a seed block per prompt they are independent."""
    from vlmrl.data import build_messages, generate
    from vlmrl.models import load_policy
    from vlmrl.rollout.batch import encode_prompts
    from vlmrl.rollout.vllm_engine import VLLMEngine

    policy = load_policy(model, device="cuda")
    engine = VLLMEngine(
        policy,
        model,
        max_new_tokens=16,
        gpu_memory_utilization=0.1,
        dtype="float32",
        recompute_logprobs=False,
    )
    s = generate("count", 1, seed=0)[0]
    enc = encode_prompts(policy.processor, [build_messages(s, "answer")] * 2, [s.images] * 2)
    batch = engine.generate(enc, 4)
    rows = [batch.completion_ids[i, : batch.completion_lengths[i]].tolist() for i in range(batch.size)]
    same = sum(rows[j] == rows[4 + j] for j in range(4))
    return {
        "check": "vllm_seeds",
        "ok": same < 4,
        "identical_pairs_of_4": same,
        "distinct_samples": len(set(map(tuple, rows))),
    }


def run_gpu_tests() -> dict:
    """The engine's GPU tests (they skip without CUDA + vllm) and its CPU boundary tests."""
    tests = ["tests/test_vllm_engine.py", "tests/test_vllm_boundary.py"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr[-500:]
    return {
        "check": "vllm_tests",
        "ok": proc.returncode == 0,
        "summary": summary,
        "tail": proc.stdout[-3000:],
    }


def placement_probe(model: str, out_dir: Path) -> None:
    """Under torchrun: a GRPO step with ``rollout.engine=vllm``; each rank writes where its vLLM model is."""
    from vlmrl.config import load_config
    from vlmrl.train.grpo import GRPOTrainer

    rank = int(os.environ["RANK"])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(
            load_config(None, _overrides(model, Path(tmp) / "run", EngineRun("vllm", "bfloat16"), 1))
        )
        trainer.train_step()
        vllm_model = trainer.engine._model_runner_model()
        report = {
            "rank": rank,
            "local_rank": int(os.environ["LOCAL_RANK"]),
            "vllm_device": str(next(vllm_model.parameters()).device),
            "policy_device": str(next(trainer.policy.model.parameters()).device),
        }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))


def run_torchrun(model: str, steps: int, engine: str = "hf") -> dict:
    """2 processes × 1 GPU each; with ``vllm``, each rank's engine must sit on ``cuda:LOCAL_RANK``."""
    with tempfile.TemporaryDirectory() as tmp:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        if engine == "vllm":
            cmd = [*launch, str(Path(__file__).resolve()), "--placement-probe", tmp, "--model", model]
        else:
            cmd = [
                *launch,
                "-m",
                "vlmrl",
                "train",
                *_overrides(model, Path(tmp) / "run", EngineRun(engine, "bfloat16"), steps),
            ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        out = {"engine": engine, "seconds": time.perf_counter() - t0, "tail": proc.stderr[-2000:]}
        if engine == "vllm":
            ranks = [json.loads(f.read_text()) for f in sorted(Path(tmp).glob("rank*.json"))]
            out["ranks"] = ranks
            out["ok"] = (
                proc.returncode == 0
                and len(ranks) == 2
                and all(r["vllm_device"] == f"cuda:{r['local_rank']}" == r["policy_device"] for r in ranks)
            )
        else:
            out["ok"] = proc.returncode == 0 and (Path(tmp) / "run" / "metrics.jsonl").exists()
        return out


def _pull_on(port: int, backend: str, device: str, out) -> None:
    """Worker side of the weight-push check: receive one push on ``device``, send back its sum."""
    from vlmrl.rollout.weight_sync import WORKER, WeightChannel

    recv = [torch.zeros(1000, 100, device=device), torch.zeros(7, dtype=torch.bfloat16, device=device)]
    WeightChannel(WORKER, port, backend, device, timeout_s=600).pull(recv)
    out.put([float(t.double().sum()) for t in recv])


def async_check(model: str, steps: int, device: str = "cuda") -> dict:
    """``rollout.mode: async`` on the GPU: the weight push (gloo, CPU-staged, worker on the same GPU;
    nccl with the worker on a GPU of its own when there are two), then GRPO with k = 0 vs sync
    (max |Δ weight|: 0 when the GPU kernels are deterministic) and with k = 1 (staleness logged)."""
    import torch.multiprocessing as mp

    from vlmrl.config import load_config
    from vlmrl.rollout.weight_sync import TRAINER, WeightChannel, free_port
    from vlmrl.train.grpo import GRPOTrainer

    out: dict = {"check": "async", "push": {}}
    ctx = mp.get_context("spawn")
    gpu = device.startswith("cuda")
    for backend, dev in [("gloo", "cuda:0" if gpu else "cpu")] + [("nccl", "cuda:1")] * (
        gpu and torch.cuda.device_count() >= 2
    ):
        q, port = ctx.Queue(), free_port()
        proc = ctx.Process(target=_pull_on, args=(port, backend, dev, q), daemon=True)
        proc.start()
        here = "cuda:0" if gpu else "cpu"
        sent = [torch.randn(1000, 100, device=here), torch.randn(7, device=here).bfloat16()]
        WeightChannel(TRAINER, port, backend, here, 600, peer_alive=proc.is_alive).push(sent)
        got = q.get(timeout=600)
        proc.join(timeout=60)
        out["push"][backend] = got == [float(t.double().sum()) for t in sent]
    finals = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in [("sync", []), ("k0", ["rollout.staleness=0"]), ("k1", ["rollout.staleness=1"])]:
            base = _overrides(model, Path(tmp) / name, EngineRun("hf", "float32"), steps, device)
            mode = ["rollout.mode=async"] if extra else []
            trainer = GRPOTrainer(load_config(None, [*base, *mode, *extra]))
            ms = [trainer.train_step() for _ in range(steps)]
            out[f"{name}_s_per_step_median"] = statistics.median(m["time/step_s"] for m in ms[1:] or ms)
            out[f"{name}_staleness"] = [m.get("rollout/staleness") for m in ms]
            finals[name] = [p.detach().clone() for p in trainer.policy.model.parameters()]
            if extra:
                trainer.engine.close()
    out["k0_vs_sync_max_abs_dweight"] = max(
        float((a - b).abs().max()) for a, b in zip(finals["sync"], finals["k0"], strict=True)
    )
    out["ok"] = all(out["push"].values()) and out["k1_staleness"][1:] == [1.0] * (steps - 1)
    return out


def _guarded(label: dict, fn, *args, **kw) -> dict:
    """``fn(...)``, or ``label`` with the error: one broken check must not hide the others."""
    try:
        return fn(*args, **kw)
    except Exception as e:
        return {
            **label,
            "ok": False,
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc()[-3000:],
        }


#: The engine checks: both engines in fp32 and bf16; vLLM also at top_p < 1, off-policy.
ENGINE_RUNS = [EngineRun(e, d) for e in ("hf", "vllm") for d in ("float32", "bfloat16")]
ENGINE_RUNS.append(EngineRun("vllm", "float32", top_p=0.9, minibatches=2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--cpu-dry-run", action="store_true", help="run the hf/float32 check on the CPU (tests the script)"
    )
    ap.add_argument("--placement-probe", type=Path, default=None, help=argparse.SUPPRESS)  # torchrun child
    ap.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.placement_probe is not None:
        placement_probe(args.model, args.placement_probe)
        return 0
    if args.cpu_dry_run:
        with tempfile.TemporaryDirectory() as tmp:
            from vlmrl.models import TinyConfig, make_tiny

            model = str(make_tiny(Path(tmp) / "tiny", TinyConfig(seed=0)))
            print(json.dumps(run_engine(model, EngineRun("hf", "float32"), args.steps, device="cpu")))
            print(json.dumps(async_check(model, args.steps, device="cpu")))
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
        runs = ENGINE_RUNS
    except ImportError as e:
        results["vllm"] = f"not importable: {e}"
        runs = [r for r in ENGINE_RUNS if r.engine == "hf"]
    results["other"] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_tiny(Path(tmp) / "tiny", TinyConfig(seed=0)))
        has_vllm = len(runs) > 4
        if has_vllm:  # first, in its own process, while this one holds no GPU memory yet
            results["other"].append(_guarded({"check": "vllm_tests"}, run_gpu_tests))
        for run in runs:
            results["checks"].append(_guarded(asdict(run), run_engine, model, run, args.steps))
            print(json.dumps(results["checks"][-1], default=str)[:400], flush=True)
        if has_vllm:
            results["other"].append(_guarded({"check": "vllm_seeds"}, vllm_seed_check, model))
        results["other"].append(_guarded({"check": "async"}, async_check, model, args.steps))
        if torch.cuda.device_count() >= 2:
            for engine in ("hf", "vllm") if has_vllm else ("hf",):
                results["other"].append(
                    {"check": f"torchrun_2gpu_{engine}", **run_torchrun(model, 2, engine)}
                )
    slug = "".join(c if c.isalnum() else "_" for c in card.lower()).strip("_")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"gpu_check_{slug}.json").write_text(json.dumps(results, indent=2, default=str))
    lines = [
        f"# GPU check on {card} ({results['gpus']} GPU), torch {results['torch']}, vllm {results['vllm']}",
        "",
        f"`python bench/gpu_check.py --steps {args.steps}`; tiny Qwen2.5-VL, 16 prompts × 8 samples, "
        "≤ 16 new tokens. Ratio gaps: old log-probs vs the training forward; vLLM gap: vLLM's own vs the "
        "policy's (only where they are recomputed, i.e. minibatches > 1).",
        "",
        "| engine | dtype | top_p | minibatches | ratio gap before | after updates | vLLM gap | s/step | "
        "generate s | peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in results["checks"]:
        head = f"| {c['engine']} | {c['dtype']} | {c['top_p']} | {c['minibatches']} |"
        if "error" in c:
            lines.append(f"{head} error: {c['error'][:120]} | | | | | |")
        else:
            gap = c["vllm_logprob_gap_max"]
            lines.append(
                f"{head} {c['ratio_gap_before_update']:.2e} | {c['ratio_gap_after_updates']:.2e} | "
                f"{'' if gap is None else f'{gap:.2e}'} | {c['s_per_step_median']:.3f} | "
                f"{c['generate_s_median']:.3f} | {c['peak_gpu_mem_gb']:.2f} |"
            )
    for o in results["other"]:
        detail = (
            o.get("error")
            or o.get("summary")
            or {k: v for k, v in o.items() if k not in ("check", "ok", "tail")}
        )
        lines.append(f"- {o['check']}: {'ok' if o['ok'] else 'FAILED'} ({str(detail)[:300]})")
    (args.out / f"gpu_check_{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
