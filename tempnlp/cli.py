"""Command line: ``tempnlp quickstart``, ``tempnlp losses``."""

from __future__ import annotations

import argparse
import sys


def _losses(_: argparse.Namespace) -> int:
    from tempnlp.catalog import describe

    print(describe())
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from tempnlp.quickstart import run_quickstart

    run_quickstart(
        model_id=args.model,
        temperature=args.temperature,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        output_dir=args.output_dir,
        seed=args.seed,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tempnlp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser("quickstart", help="short MiniLM fine-tuning on SNLI with an adaptive temperature")
    quick.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    quick.add_argument("--temperature", default="macl", help="fixed, learnable, macl or dystress (default: macl)")
    quick.add_argument("--steps", type=int, default=60)
    quick.add_argument("--batch-size", type=int, default=32)
    quick.add_argument("--learning-rate", type=float, default=5e-5)
    quick.add_argument("--output-dir", default="runs/quickstart")
    quick.add_argument("--seed", type=int, default=42)
    quick.set_defaults(handler=_quickstart)

    losses = commands.add_parser("losses", help="list the losses and temperature policies with their papers")
    losses.set_defaults(handler=_losses)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"tempnlp {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
