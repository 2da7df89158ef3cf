"""How much would a compiled decode step buy on this CPU? transformers' own ``generate``, eager vs compiled.

Not vlmrl's sampler: the question is the ceiling a compiled decode could reach for *any* caller of
transformers' modules, TRL included. The same tiny Qwen2.5-VL and ``count`` prompts as
``bench/vs_trl.py`` (4 prompts × 4 samples, exactly ``--tokens`` new tokens, temperature 1 over the
full vocabulary, 1 torch thread), three ways:

* ``eager_dynamic``: ``generate`` as TRL calls it (dynamic cache);
* ``eager_static``: ``cache_implementation="static"``;
* ``compiled_static``: the same with ``torch.compile`` of the decode step (transformers'
  ``CompileConfig``, switched on for CPU), timed after its first, compiling, call.

Each is the median of ``--calls`` calls after one warm-up call (whose time, for the compiled one,
includes compiling: about 27 s on 2 cores from a cold inductor cache, seconds from a warm one).
Writes ``OUT.json``.

    .venv/bin/python bench/compile_decode.py --out bench/results/compile_decode
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import command_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--out", default="bench/results/compile_decode")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationConfig
    from transformers.generation.configuration_utils import CompileConfig

    from vlmrl.data import build_messages
    from vlmrl.data import generate as make_samples
    from vlmrl.models import TinyConfig, make_tiny

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="compile_decode_"))
    make_tiny(work / "model", TinyConfig())
    model = AutoModelForImageTextToText.from_pretrained(work / "model", dtype=torch.float32).eval()
    proc = AutoProcessor.from_pretrained(work / "model")
    samples = make_samples("count", 4, seed=0, split="train", max_count=6, distractors=3)
    texts = [proc.apply_chat_template(build_messages(s), add_generation_prompt=True) for s in samples]
    inputs = proc(text=texts, images=[s.images[0] for s in samples], return_tensors="pt", padding=True)

    def compiled() -> dict:
        cc = CompileConfig(fullgraph=False, dynamic=False)
        cc._compile_all_devices = True  # transformers compiles on CUDA only unless told
        return {"cache_implementation": "static", "compile_config": cc}

    modes = {"eager_dynamic": dict, "eager_static": lambda: {"cache_implementation": "static"},
             "compiled_static": compiled}  # fmt: skip
    result: dict = {"command": command_line("compile_decode.py", args), "machine": platform.processor()
                    or platform.machine(), "torch": torch.__version__, "threads": 1}  # fmt: skip
    for name, kw in modes.items():
        n = args.tokens
        g = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                             min_new_tokens=n, num_return_sequences=4, pad_token_id=0, **kw())  # fmt: skip
        times = []
        for _ in range(args.calls + 1):
            t0 = time.perf_counter()
            with torch.no_grad():
                model.generate(**inputs, generation_config=g)
            times.append(time.perf_counter() - t0)
        result[name] = {"first_s": times[0], "median_s": statistics.median(times[1:])}
        print(
            f"{name}: first call {times[0]:.2f} s, then median {result[name]['median_s']:.3f} s", flush=True
        )
    result["compiled_speedup_vs_eager_static"] = (
        result["eager_static"]["median_s"] / result["compiled_static"]["median_s"]
    )
    result["compiled_speedup_vs_eager_dynamic"] = (
        result["eager_dynamic"]["median_s"] / result["compiled_static"]["median_s"]
    )
    Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
