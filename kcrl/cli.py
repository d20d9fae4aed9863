"""The ``kcrl`` command line.

    kcrl bench --list
    kcrl bench SUITE [--seed N] [--out DIR] [--quick] [--config FILE.yaml] [--backend local|ray] [--jobs N]
    kcrl bench SUITE --print-config [--quick] [--config FILE.yaml]
    kcrl train CONFIG --out DIR [--resume] [--tensorboard] [--ddp [--ddp-sampling sharded|replicated]]   (--ddp under torchrun)
    kcrl sample DIR [-n N] [--seed S]
    kcrl evaluate DIR

A suite runs at the size in ``benchmarks/suites/SUITE.yaml`` (``full``, or ``quick`` with
``--quick``); ``--config FILE.yaml`` applies a user's overrides on top (the keys of the suite's config
dataclass, nested as ``--print-config`` shows them; unknown keys are rejected before anything runs),
and ``--print-config`` prints the resolved config as YAML and exits. Every result folder holds the
resolved config as ``config.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _bench(args: argparse.Namespace) -> int:
    from kcrl.benchmarks import SUITES, get_suite, suite_config, suite_schema
    from kcrl.errors import ConfigError

    if args.list or args.suite is None:
        if args.print_config or args.config:
            raise ConfigError("--print-config and --config need a SUITE: kcrl bench SUITE --print-config (see kcrl bench --list).")
        width = max(len(n) for n in SUITES)
        for name, (description, _) in SUITES.items():
            print(f"{name:<{width}}  {description}")
        return 0
    from kcrl.benchmarks.runner import run_suite

    get_suite(args.suite)  # unknown names fail before anything runs
    config = None  # unknown config keys and values of the wrong type fail before anything runs, too
    if args.config or args.print_config or suite_schema(args.suite) is not None:
        config = suite_config(args.suite, quick=args.quick, path=args.config)
    if args.print_config:
        from kcrl.config import dump_yaml

        command = f"kcrl bench {args.suite}" + (" --quick" if args.quick else "") + (f" --config {args.config}" if args.config else "")
        print(f"# {command}: the resolved {type(config).__name__}")
        print(dump_yaml(config, comments=True), end="")
        return 0
    out = Path(args.out) if args.out else Path("runs") / f"{args.suite}-seed{args.seed}"
    # run_suite checks and locks --out before anything runs (a file, read-only, earlier results without --force)
    result = run_suite(args.suite, seed=args.seed, out=out, quick=args.quick, show_progress=not args.no_progress,
                       backend=args.backend, jobs=args.jobs, ray_address=args.ray_address, config=config,
                       force=getattr(args, "force", False))
    print(result["table"])
    written = [str(out / name) for name in ("results.json", "config.yaml", "results.md") if (out / name).exists()]
    print(f"\nwrote {', '.join(written)}")
    if result["metrics"].get("passed") is False:
        print("FAILED: a metric missed its target (see the table).", file=sys.stderr)
        return 1
    return 0


def _train(args: argparse.Namespace) -> int:
    from kcrl.benchmarks.train import TrainConfig, train
    from kcrl.checkpoint import json_text
    from kcrl.errors import RunInterrupted

    config = TrainConfig.from_yaml(args.config)
    force = getattr(args, "force", False)
    if args.ddp:  # one rank of a torchrun job (kcrl.distributed); rank 0 prints
        from kcrl.benchmarks.train import train_distributed

        metrics = train_distributed(config, args.out, resume=args.resume, show_progress=not args.no_progress,
                                    sampling=args.ddp_sampling, tensorboard=args.tensorboard, force=force)
        if int(os.environ.get("RANK", 0)) != 0:
            return 0
    else:
        try:
            metrics = train(config, args.out, resume=args.resume, show_progress=not args.no_progress,
                            tensorboard=args.tensorboard, force=force)
        except RunInterrupted as exc:  # SIGINT/SIGTERM/SIGHUP: checkpoint written, 128 + signum
            print(f"kcrl: {exc}", file=sys.stderr)
            return exc.exit_code
    written = Path(args.out) / "metrics.json"  # what the run wrote, with its SHA-256
    print(written.read_text(encoding="utf-8").rstrip("\n") if written.is_file() else json_text(metrics, "the run's metrics"))
    return 0


def _sample(args: argparse.Namespace) -> int:
    from kcrl.benchmarks.train import sample
    from kcrl.checkpoint import json_text

    for row in sample(args.run, args.n, args.seed):
        print(json_text(row, "a sample", indent=None))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from kcrl.benchmarks.train import METRIC_DESCRIPTIONS, evaluate
    from kcrl.checkpoint import json_text

    metrics = evaluate(args.run)
    print(json_text(metrics, "the run's metrics"))
    for key in metrics:  # what each number means, on stderr so that stdout stays JSON
        print(f"{key}: {METRIC_DESCRIPTIONS.get(key, 'see kcrl.benchmarks.train.evaluate')}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from kcrl import __version__

    parser = argparse.ArgumentParser(prog="kcrl", description="Learnable knowledge constraints as RL.")
    parser.add_argument("--version", action="version", version=f"kcrl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="run a benchmark suite and print its table")
    bench.add_argument("suite", nargs="?", help="suite name (see --list)")
    bench.add_argument("--list", action="store_true", help="list the suites")
    bench.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    bench.add_argument("--out", help="output folder (default runs/SUITE-seedN)")
    bench.add_argument("--quick", action="store_true", help="the small size that finishes in minutes")
    bench.add_argument("--config", metavar="FILE.yaml",
                       help="YAML overrides of the suite's config (keys as --print-config shows them; unknown keys are rejected)")
    bench.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    bench.add_argument("--backend", choices=["local", "ray"], default="local", help="where a suite's runs execute")
    bench.add_argument("--jobs", type=int, default=1, help="parallel runs (local processes or Ray CPUs)")
    bench.add_argument("--ray-address", help="address of an existing Ray cluster (default: start a local one)")
    bench.add_argument("--force", action="store_true", help="replace the results already in --out")
    bench.set_defaults(func=_bench)
    train = sub.add_parser("train", help="one Algorithm 1 run from a YAML config")
    train.add_argument("config", help="YAML config (see kcrl.benchmarks.train.TrainConfig)")
    train.add_argument("--out", required=True, help="output folder (config, checkpoint, metrics)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--force", action="store_true",
                       help="start over in an --out that holds a run (or, with --resume, resume what cannot be verified)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to OUT/tensorboard")
    train.add_argument("--ddp", action="store_true",
                       help="data-parallel over the processes of a torchrun job (see kcrl.distributed)")
    train.add_argument("--ddp-sampling", choices=["sharded", "replicated"], default="sharded",
                       help="with --ddp: each rank draws its shard (sharded) or all draw the global batch (replicated)")
    train.set_defaults(func=_train)
    sample = sub.add_parser("sample", help="print samples of a trained run's generator")
    sample.add_argument("run", help="the --out folder of a kcrl train run")
    sample.add_argument("-n", type=int, default=10, help="number of samples (default 10)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed")
    sample.set_defaults(func=_sample)
    evaluate = sub.add_parser("evaluate", help="print the exact metrics of a trained run")
    evaluate.add_argument("run", help="the --out folder of a kcrl train run")
    evaluate.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)  # --help, --version and usage errors exit here, before torch loads
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from kcrl.errors import KcrlError

    try:
        return args.func(args)
    except KcrlError as exc:
        print(f"kcrl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
