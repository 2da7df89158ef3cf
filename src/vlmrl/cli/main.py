"""``vlmrl`` command line: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _cmd_make_tiny(args) -> None:
    from vlmrl.models import TinyConfig, make_tiny

    if args.arch == "qwen3_vl":
        from vlmrl.models.tiny_qwen3 import make_tiny_qwen3

        out = make_tiny_qwen3(args.dir, TinyConfig(seed=args.seed))
    else:
        out = make_tiny(args.dir, TinyConfig(seed=args.seed))
    print(f"tiny Qwen2.5-VL written to {out}")


def _cmd_pretrain_tiny(args) -> None:
    from vlmrl.train.pretrain import pretrain_and_card

    out = pretrain_and_card(
        out=args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        card_size=args.card_size,
        stop_after=args.stop_after,
    )
    print(f"tiny base written to {out} (model card: {out / 'README.md'})")


def _cmd_data(args) -> None:
    from vlmrl.data import export_parquet, generate, task_names, write_tasks_grid

    if args.action == "list":
        print("\n".join(task_names()))
    elif args.action == "synth":
        knobs = _parse_knobs(args.knob)
        samples = generate(args.task, args.n, seed=args.seed, split=args.split, **knobs)
        export_parquet(samples, args.out)
        print(f"wrote {len(samples)} {args.task} samples to {args.out}")
    elif args.action == "grid":
        print(f"wrote {write_tasks_grid(args.out)}")


def _parse_knobs(items: list[str]) -> dict:
    import yaml

    knobs = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--knob {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        knobs[k] = yaml.safe_load(v)
    return knobs


def _cmd_sft(args) -> None:
    from vlmrl.config import load_config
    from vlmrl.config.checks import check_before_loading

    cfg = load_config(args.config, args.overrides)
    check_before_loading(cfg, cfg.sft.init)
    from vlmrl.run.progress import sft_with_progress
    from vlmrl.train.sft import run_sft  # torch and transformers load only now

    def run(on_step=None) -> dict:
        if on_step is not None:  # the bar shows the loss; no per-step lines under it
            return run_sft(cfg, on_step=on_step)
        return run_sft(cfg, on_log=lambda s, r: print(f"sft step {s}: loss {r['sft/loss']:.4f}", flush=True))

    res = sft_with_progress(run, cfg.sft.steps, cfg.log.progress)
    print(
        f"SFT held-out accuracy {res['accuracy_before']:.3f} -> {res['accuracy_after']:.3f} "
        f"({res['seconds']:.0f} s); model saved to {cfg.sft.out}"
    )


def _cmd_train(args) -> None:
    from vlmrl.config import load_config
    from vlmrl.config.checks import check_before_loading, check_run_dir, claim_run_dir

    cfg = load_config(args.config, args.overrides)
    check_before_loading(cfg)
    claim_run_dir(cfg.log.run_dir, args.resume, args.overwrite)  # an old run: resume, overwrite or refuse
    check_run_dir(cfg.log.run_dir, cfg.model.path)  # a file, read-only, full: before the model loads
    from vlmrl.run.dist import shutdown  # torch and transformers load only now
    from vlmrl.run.progress import run_with_progress
    from vlmrl.train.grpo import GRPOTrainer

    try:  # under torchrun / accelerate every rank runs this; rank 0 shows progress and prints
        trainer = GRPOTrainer(cfg, resume=args.resume)
        run_with_progress(trainer, cfg.log.progress and trainer.dist.is_main)
    finally:
        shutdown()
    if trainer.dist.is_main:
        print(f"run directory: {cfg.log.run_dir}")


def _cmd_eval(args) -> None:
    import json

    from vlmrl.config import load_config
    from vlmrl.config.checks import check_before_loading, check_sampling_args
    from vlmrl.data.stream import eval_samples
    from vlmrl.eval.errors import check_error_setup, write_errors
    from vlmrl.rewards.plugins import reward_from_config

    cfg = load_config(args.config, args.overrides)
    model = args.model or cfg.model.path
    check_before_loading(cfg, model)
    ks = check_sampling_args(args.samples, args.pass_k, args.temperature, cfg.env.name)
    samples = eval_samples(cfg.data)  # dataset files and columns, before the model
    if args.errors:  # a <look> template and scene facts, before the model
        check_error_setup(samples, cfg.data.template, cfg.env.name)
    from vlmrl.eval.blind import format_blind_table  # torch and transformers load only now
    from vlmrl.eval.diagnostics import eval_report
    from vlmrl.eval.pope import format_pope_table
    from vlmrl.models import load_policy

    policy = load_policy(
        model,
        cfg.model.dtype,
        cfg.model.device,
        min_pixels=cfg.model.min_pixels,
        max_pixels=cfg.model.max_pixels,
    )
    res = eval_report(
        policy, samples, cfg, reward_from_config(cfg.reward), args.blind, args.pope, args.errors
    )
    print(json.dumps(res["accuracy"], indent=2))
    if args.samples:  # beside greedy: n samples per prompt at a temperature, pass@k
        from vlmrl.eval.accuracy import sampled_accuracy

        res["sampled"] = sampled_accuracy(
            policy, samples, cfg.data.template, reward_from_config(cfg.reward), args.samples,
            ks, args.temperature, cfg.eval.max_new_tokens, cfg.eval.batch_size, cfg.train.seed,
        )  # fmt: skip
        print(f"\nsampled ({args.samples} per prompt, temperature {args.temperature})")
        print(json.dumps(res["sampled"], indent=2))
    if "blind" in res:
        print(f"\naccuracy by image condition (greedy, {len(samples)} held-out prompts)")
        print(format_blind_table(res["blind"]))
    if "pope" in res:
        print(f"\nPOPE hallucination probes ({args.pope} per mode; positive class: yes)")
        print(format_pope_table(res["pope"]))
    out = Path(args.out) if args.out else (Path(model) if Path(model).is_dir() else Path(".")) / "eval.json"
    write_errors(res, out)  # --errors: the table; errors.json (per sample) beside eval.json
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(model), **res}, indent=2) + "\n")
    print(f"wrote {out}")


def _cmd_view(args) -> None:
    import webbrowser

    from vlmrl.eval.report import write_report
    from vlmrl.eval.report_compare import write_comparison

    if len(args.run) > 1:  # several runs: their curves compared, one plot per metric
        path = write_comparison(args.run, args.out or "runs/compare")
    else:
        path = write_report(Path(args.run[0]))
    print(path)
    if args.open:
        webbrowser.open(path.resolve().as_uri())


def _cmd_demo(args) -> None:
    from vlmrl.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)


def _cmd_gen(args) -> None:
    if args.action == "pretrain":
        from vlmrl.gen.pretrain import pretrain

        res = pretrain(
            args.out,
            steps=args.steps,
            batch=args.batch,
            lr=args.lr,
            seed=args.seed,
            per_prompt=args.per_prompt,
            sample_steps=args.sample_steps,
            on_log=lambda s, r: print(f"gen pretrain step {s}: loss {r['loss']:.4f}", flush=True),
        )
        print(
            f"generator ({res['params'] / 1e6:.2f} M params) loss {res['first_loss']:.3f} -> "
            f"{res['final_loss']:.3f} in {res['seconds']:.0f} s; saved with samples.png to {res['out_dir']}"
        )
    elif args.action == "sample":
        from vlmrl.gen.load import load_gen_policy
        from vlmrl.gen.pretrain import write_samples

        gen = load_gen_policy(args.model_dir)  # a gen pretrain model, a checkpoint, or a pipeline
        out = write_samples(gen, args.out, per_prompt=args.per_prompt, steps=args.steps, seed=args.seed)
        print(f"wrote {out}")
    elif args.action == "train":
        from vlmrl.config.checks import claim_run_dir
        from vlmrl.gen.config import load_gen_config
        from vlmrl.gen.trainer import GenGRPOTrainer

        cfg = load_gen_config(args.config, args.overrides)
        claim_run_dir(cfg.log.run_dir, args.resume, args.overwrite)  # as `vlmrl train`: never append
        rows = GenGRPOTrainer(cfg, resume=args.resume).train()
        evals = [r["eval/reward"] for r in rows if "eval/reward" in r]
        if evals:
            print(f"held-out reward {evals[0]:.3f} -> {evals[-1]:.3f}")
        print(f"run directory: {cfg.log.run_dir}")
    else:
        raise ValueError(f"gen {args.action}: unknown action")


def _cmd_convert(args) -> None:
    from vlmrl.config.easyr1 import convert_file

    result = convert_file(args.config, args.out)
    print(f"wrote {args.out}: {len(result.translated)} EasyR1 keys translated")
    if result.unmapped:
        print(f"{len(result.unmapped)} EasyR1 keys have no vlmrl equivalent (listed in the file's header):")
        for key, why in result.unmapped.items():
            print(f"  {key}: {why}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlmrl", description="RL post-training for vision-language models.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the tiny model, SFT warm-start, GRPO, evaluate (offline, CPU)")
    d.add_argument("--out", default="runs/demo", help="run directory root")
    d.add_argument("--quick", action="store_true", help="a one-minute smoke version")
    d.set_defaults(fn=_cmd_demo)

    t = sub.add_parser("make-tiny", help="build and save the tiny offline Qwen2.5-VL (model + processor)")
    t.add_argument("dir", help="output directory (loadable with from_pretrained / load_policy)")
    t.add_argument("--seed", type=int, default=0, help="initialisation seed")
    t.add_argument(
        "--arch",
        choices=["qwen2_5_vl", "qwen3_vl"],
        default="qwen2_5_vl",
        help="qwen2_5_vl (the measured default) or a small qwen3_vl (DeepStack, 16 px patches)",
    )
    t.set_defaults(fn=_cmd_make_tiny)

    pt = sub.add_parser("pretrain-tiny", help="multi-task pretraining of the tiny base (the shipped recipe)")
    pt.add_argument("--out", default="runs/tiny-base", help="output directory (a from_pretrained checkpoint)")
    pt.add_argument("--steps", type=int, default=8000)
    pt.add_argument("--batch-size", type=int, default=32)
    pt.add_argument("--lr", type=float, default=1e-3)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--stop-after", type=int, default=None, help="stop early (the schedule spans --steps)")
    pt.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    pt.add_argument("--eval-every", type=int, default=1000)
    pt.add_argument("--eval-size", type=int, default=24, help="held-out samples per task at each eval")
    pt.add_argument("--card-size", type=int, default=200, help="samples per task for the final model card")
    pt.set_defaults(fn=_cmd_pretrain_tiny)

    da = sub.add_parser("data", help="procedural tasks: list, synthesise to parquet, sample grid")
    da.add_argument("action", choices=["list", "synth", "grid"], help="what to do")
    da.add_argument("--task", default="count", help="task name (see `vlmrl data list`)")
    da.add_argument("--n", type=int, default=1000, help="number of samples")
    da.add_argument("--seed", type=int, default=0, help="seed")
    da.add_argument("--split", default="train", help="split name (train/test draw disjoint streams)")
    da.add_argument("--knob", action="append", help="task difficulty knob NAME=VALUE (repeatable)")
    da.add_argument("--out", default="data.parquet", help="output file (parquet for synth, PNG for grid)")
    da.set_defaults(fn=_cmd_data)

    cv = sub.add_parser("convert", help="translate another library's config into a vlmrl config")
    cv.add_argument("source", choices=["easyr1"], help="the library the config comes from")
    cv.add_argument("config", help="that library's YAML config")
    cv.add_argument("-o", "--out", default="vlmrl.yaml", help="the vlmrl config to write")
    cv.set_defaults(fn=_cmd_convert)

    from vlmrl.cli.doctor import add_parser as add_doctor

    add_doctor(sub)
    from vlmrl.cli.experiment import add_parser as add_experiment

    add_experiment(sub)

    v = sub.add_parser(
        "view",
        help="(re)build RUN/report.html (curves, summary, rollouts); with several runs, compare their "
        "curves in OUT/compare.html; print its path",
    )
    v.add_argument("run", nargs="+", help="run directory (holds metrics.jsonl); two or more: compare them")
    v.add_argument("--out", default=None, help="with several runs: where compare.html goes (runs/compare)")
    v.add_argument("--open", action="store_true", help="also open the report in a web browser")
    v.set_defaults(fn=_cmd_view)

    g = sub.add_parser("gen", help="visual generation: pretrain, sample, RL-train (Flow-GRPO / DDPO)")
    gsub = g.add_subparsers(dest="action", required=True)
    gp = gsub.add_parser("pretrain", help="flow-matching pretraining on rendered circles (all 18 prompts)")
    gp.add_argument("--out", default="runs/gen_base", help="output directory (model, log, samples.png)")
    gp.add_argument("--steps", type=int, default=600, help="optimiser steps")
    gp.add_argument("--batch", type=int, default=64, help="images per step")
    gp.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    gp.add_argument("--seed", type=int, default=0, help="seed (weights, data, noise)")
    gp.add_argument("--per-prompt", type=int, default=4, help="samples per prompt in samples.png")
    gp.add_argument("--sample-steps", type=int, default=20, help="Euler steps for samples.png")
    gs = gsub.add_parser("sample", help="a grid PNG of ODE samples, one row per prompt")
    gs.add_argument(
        "model_dir",
        help="a gen pretrain directory, a gen train checkpoint's model/, a diffusers pipeline dir or hub id",
    )
    gs.add_argument("--out", default="grid.png", help="output PNG")
    gs.add_argument("--steps", type=int, default=20, help="Euler steps")
    gs.add_argument("--seed", type=int, default=0, help="noise seed")
    gs.add_argument("--per-prompt", type=int, default=4, help="samples per prompt (columns)")
    gt = gsub.add_parser("train", help="Flow-GRPO / DDPO on a pretrained generator from a YAML config")
    gt.add_argument("config", nargs="?", default=None, help="YAML config (defaults if omitted)")
    gt.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.name=ddpo algo.kl_coef=0")
    gt.add_argument("--resume", action="store_true", help="continue from log.run_dir's latest checkpoint")
    gt.add_argument("--overwrite", action="store_true", help="replace the run already in log.run_dir")
    for gx in (gp, gs, gt):
        gx.set_defaults(fn=_cmd_gen)

    for name, fn, help_ in (
        ("sft", _cmd_sft, "supervised warm-start on formatted gold answers"),
        ("train", _cmd_train, "GRPO training from a YAML config"),
        ("eval", _cmd_eval, "held-out accuracy of a model; --blind: blind gap; --pope N: hallucination"),
    ):
        c = sub.add_parser(name, help=help_)
        c.add_argument("config", nargs="?", default=None, help="YAML config (defaults if omitted)")
        c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. algo.clip_high=0.28")
        if name == "train":
            c.add_argument(
                "--resume", action="store_true", help="continue from the latest checkpoint of log.run_dir"
            )
            c.add_argument(
                "--overwrite",
                action="store_true",
                help="log.run_dir holds an old run: delete its files (metrics, tb, rollouts, checkpoints, "
                "report, config.yaml; nothing else) and start afresh",
            )
        if name == "eval":
            c.add_argument("--model", default=None, help="model directory (default: model.path)")
            c.add_argument(
                "--blind", action="store_true", help="also blank / noise / shuffled images: the blind gap"
            )
            c.add_argument("--pope", type=int, default=0, metavar="N", help="N POPE probes per mode (0: off)")
            c.add_argument("--errors", action="store_true", help="wrong answers: perception/reasoning/format")
            c.add_argument("--out", default=None, help="results file (default: MODEL_DIR/eval.json)")
            c.add_argument(
                "--samples",
                type=int,
                default=0,
                metavar="N",
                help="also N sampled answers per prompt (0: off)",
            )
            c.add_argument(
                "--temperature", type=float, default=1.0, help="sampling temperature for --samples"
            )
            c.add_argument(
                "--pass-k", type=int, nargs="+", default=None, metavar="K",
                help="pass@K (unbiased, from the N samples) for each K (default: 1 and N)",
            )  # fmt: skip
        c.set_defaults(fn=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    from vlmrl.errors import UserError

    args = build_parser().parse_args(argv)
    config = getattr(args, "config", None)
    if config and "=" in config and not Path(config).exists():
        # `vlmrl train a.b=1` with no config file: the first word is an override.
        args.overrides, args.config = [config, *args.overrides], None
    try:
        rc = args.fn(args)  # None, or an exit status (doctor: 1 when a check fails)
    except UserError as e:
        # the project's user errors (ConfigError, DatasetError, UnknownRewardError, missing files):
        # their messages name the key / file / row, so one line is the whole story. Anything else is
        # a bug and keeps its traceback. Set VLMRL_DEBUG=1 for a user error's traceback too.
        if os.environ.get("VLMRL_DEBUG"):
            raise
        msg = e.args[0] if e.args else e
        print(f"vlmrl {args.command}: error: {msg}", file=sys.stderr)
        return 2
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
