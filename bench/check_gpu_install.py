"""Does the documented GPU install resolve, and does the core suite pass under what it installs?

    python bench/check_gpu_install.py        # or: make check-gpu-install

Runs on a CPU machine with a package index and writes ``bench/results/gpu_install.json``:

1. a dry-run resolution (``pip install --dry-run --ignore-installed --report``) of the GPU install
   that ``make setup-gpu`` performs, ``pip install -e '.[dev,vllm]'``: which vLLM, torch,
   torchvision and transformers a fresh machine gets (vLLM pins its own torch and caps
   transformers, so they differ from the CPU setup's);
2. the core tests (rollout parity, a GRPO step, the loaders, the vLLM boundary) on the CPU under the
   resolved transformers, installed with its tokenizers / huggingface-hub into a separate
   ``--target`` folder put first on ``PYTHONPATH``; this environment is left untouched.

Torch stays this environment's in step 2 (the CPU wheel; vLLM's CUDA torch is for GPU machines):
the check is about transformers, the one library whose version changes what our code computes.

    python bench/check_gpu_install.py --floor-only   # what `make test` (CI) runs, about 2 minutes

skips the resolution (minutes, over CI's budget) and runs step 2 under the ``transformers>=X``
floor of the ``[vllm]`` extra in pyproject.toml, the oldest transformers that extra can pull.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The documented GPU install (Makefile ``setup-gpu``), as pip arguments from the repository root.
GPU_INSTALL = ["-e", ".[dev,vllm]"]
#: Resolved packages to report.
REPORTED = ("vllm", "torch", "torchvision", "transformers", "tokenizers", "huggingface-hub")
#: Installed beside the resolved transformers (its tightly coupled dependencies).
WITH_TRANSFORMERS = ("transformers", "tokenizers", "huggingface-hub")
#: The core suite: rollout parity, GRPO steps, data and model loading, the vLLM engine's CPU side.
CORE_TESTS = [
    "tests/test_rollout.py",
    "tests/test_prefix_attention.py",
    "tests/test_fast_paths.py::test_shared_prefill_sampler_draws_what_generate_draws",
    "tests/test_train.py::test_one_grpo_step_moves_exactly_the_trainable_parameters",
    "tests/test_train.py::test_micro_batch_invariance",
    "tests/test_data_loading.py",
    "tests/test_models.py",
    "tests/test_vllm_boundary.py",
    "tests/test_vllm_engine.py",
]


def extra_floor(package: str = "transformers", extra: str = "vllm") -> str:
    """The ``package>=X`` floor that pyproject.toml's ``[extra]`` sets (the one source of it)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    for dep in deps:
        name, sep, version = dep.partition(">=")
        if sep and name.strip().lower() == package:
            return version.split(",")[0].strip()
    raise SystemExit(f"pyproject.toml: the [{extra}] extra sets no {package}>= floor")


def resolve(timeout: int) -> tuple[bool, dict[str, str], str]:
    """Dry-run the GPU install; returns (resolved, {package: version}, pip's error tail)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet"]
        cmd += ["--report", str(report), *GPU_INSTALL]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not report.exists():
            return False, {}, proc.stderr[-2000:]
        items = json.loads(report.read_text())["install"]
    versions = {it["metadata"]["name"].lower().replace("_", "-"): it["metadata"]["version"] for it in items}
    return "vllm" in versions, versions, ""


def install_target(versions: dict[str, str], target: Path) -> list[str]:
    """Install the resolved transformers (+ tokenizers, hub) into ``target`` where this environment's
    versions differ; returns the pins installed there."""
    pins = []
    for name in WITH_TRANSFORMERS:
        try:
            here = metadata.version(name)
        except metadata.PackageNotFoundError:
            here = None
        if name in versions and versions[name] != here:
            pins.append(f"{name}=={versions[name]}")
    have = {p.name.split("-")[1] for p in target.glob("*.dist-info")} if target.exists() else set()
    missing = [p for p in pins if p.split("==")[1] not in have]  # a folder from an earlier run is reused
    if missing:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade"]
        subprocess.run([*cmd, "--target", str(target), *missing], check=True, timeout=900)
    return pins


def run_core(target: Path, timeout: int) -> dict:
    """The core tests under ``target`` first on the path; their outcome and the transformers they saw."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]))
    probe = "import transformers, torch; print(transformers.__version__, torch.__version__)"
    seen = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    tf_seen, torch_seen = seen.stdout.split()
    t0 = time.perf_counter()
    cmd = ["nice", "-n", "15", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CORE_TESTS]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return {
        "passed": proc.returncode == 0,
        "transformers_seen": tf_seen,
        "torch_seen": torch_seen,
        "seconds": round(time.perf_counter() - t0, 1),
        "summary": proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_install.json")
    ap.add_argument("--target", type=Path, default=None, help="where the resolved transformers goes")
    ap.add_argument("--resolve-timeout", type=int, default=900)
    ap.add_argument("--test-timeout", type=int, default=900)
    ap.add_argument("--floor-only", action="store_true", help="only the core tests, under the extra's floor")
    args = ap.parse_args()
    if args.floor_only:
        floor = extra_floor()
        target = args.target or Path(tempfile.gettempdir()) / f"vlmrl_tf_{floor}"
        install_target({"transformers": floor}, target)
        core = run_core(target, args.test_timeout)
        print(f"core tests under transformers {core['transformers_seen']} (floor {floor}): {core['summary']}")
        return 0 if core["passed"] and core["transformers_seen"] == floor else 1
    t0 = time.perf_counter()
    ok, versions, error = resolve(args.resolve_timeout)
    result: dict = {
        "resolves": ok,
        **{k: versions.get(k, "") for k in ("vllm", "torch", "transformers")},
        "core_tests_passed": False,
        "install": "pip install " + " ".join(f"'{a}'" if "[" in a else a for a in GPU_INSTALL),
        "resolved": {k: versions[k] for k in REPORTED if k in versions},
        "transformers_floor": extra_floor(),  # what --floor-only (CI) tests; ≤ the resolved one
        "python": sys.version.split()[0],
    }
    if not ok:
        result["error"] = error
    else:
        target = args.target or Path(tempfile.gettempdir()) / f"vlmrl_tf_{versions['transformers']}"
        result["installed_into_target"] = install_target(versions, target)
        core = run_core(target, args.test_timeout)
        core["tests"] = CORE_TESTS
        result["core"] = core
        result["core_tests_passed"] = core["passed"] and core["transformers_seen"] == versions["transformers"]
    result["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("resolves", "vllm", "torch", "transformers", "core_tests_passed")
    print(json.dumps({k: result[k] for k in keys}))
    return 0 if result["core_tests_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
