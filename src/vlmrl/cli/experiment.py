"""The ``experiment`` subcommand: run a challenge (baseline vs fix over seeds) and write its verdict."""

from __future__ import annotations

from vlmrl.experiments.registry import ExperimentName, check_name


def add_parser(sub) -> None:
    """The ``experiment`` subcommand."""
    e = sub.add_parser(
        "experiment", help="a challenge: failure-inducing baseline vs fix over seeds, with a verdict"
    )
    e.add_argument("name", help=f"the experiment: {', '.join(n.value for n in ExperimentName)}")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (each runs both arms)")
    e.add_argument(
        "--quick", action="store_true", help="a few steps and a tiny eval: the pipeline, not the effect"
    )
    e.add_argument(
        "--out", default="bench/results", help="folder for challenges.json, the verdict and the plot"
    )
    e.add_argument(
        "--work",
        default=None,
        help="keep the working files (warm starts; each arm's run directory with its metrics.jsonl, "
        "rollouts and report.html) in this empty or new folder; default: a temporary one, deleted",
    )
    e.set_defaults(fn=run)


def run(args) -> None:
    check_name(args.name)  # a typo's message before torch loads
    from vlmrl.experiments.runner import run_experiment

    run_experiment(args.name, args.seeds, args.quick, args.out, args.work)
    print(f"wrote {args.out}/challenges.json, challenge_{args.name}.md and .png")
    if args.work:
        print(f"kept the working files in {args.work}")
