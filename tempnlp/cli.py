"""Command line: ``tempnlp train``, ``tempnlp losses``, ``tempnlp eval sts|mteb|retrieval|diagnostics``."""

from __future__ import annotations

import argparse
import os
import sys


def _losses(_: argparse.Namespace) -> int:
    from tempnlp.catalog import describe

    print(describe())
    return 0


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tempnlp.train.recipe import load_recipe

    recipe, _ = load_recipe(args.recipe, args.set or [], args.variant)
    stem = Path(args.recipe).stem + (f"-{args.variant}" if args.variant else "")
    output_dir = Path(args.output_dir) if args.output_dir else Path("runs") / stem
    if args.dry_run:
        from tempnlp.data.sources import locate
        from tempnlp.train.run import training_arguments

        training_arguments(recipe, output_dir)  # the trainer's own checks of the training values
        print(recipe.to_yaml(), end="")
        for name, task in recipe.tasks.items():
            spec = task.data
            located = locate(spec.dataset, spec.format, spec.split, file=spec.file, subset=spec.subset)
            print(f"# data{f' {name}' if name else ''}: {located.describe()}")
        return 0
    from tempnlp.train.run import run_recipe

    run_recipe(recipe, output_dir, resume=args.resume)
    return 0


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [item.strip() for item in value.split(",") if item.strip()]


def _eval_sts(args: argparse.Namespace) -> int:
    from tempnlp.evaluation.sts import evaluate_sts, resolve_tasks
    from tempnlp.models import load_model

    tasks = _split(args.tasks)
    resolve_tasks(tasks)  # unknown names fail before the model loads
    model = load_model(args.model)
    result = evaluate_sts(
        model,
        model_name=args.model,
        tasks=tasks,
        protocol=args.protocol,
        batch_size=args.batch_size,
        output_dir=args.output_dir,
    )
    print(result.table())
    print(f"\n{sum(result.pairs.values())} pairs in {result.seconds:.0f} s; written to {args.output_dir}/sts.json")
    return 0


def _eval_mteb(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tempnlp.data.hub import resolve_model
    from tempnlp.evaluation.mteb_runner import (
        build_model_meta,
        get_tasks,
        local_model_name,
        registry_revision,
        run_mteb,
        training_losses,
    )
    from tempnlp.models import load_model

    tasks = get_tasks(_split(args.tasks), args.benchmark)
    local = Path(args.model).expanduser()
    model_path = local if local.exists() else None
    name = args.model_name or (args.model if model_path is None else local_model_name(local))
    source = resolve_model(args.model)
    load_revision, described_from = None, model_path
    if model_path is None and source != args.model:  # a Hub id read from the mirror's copy
        known = registry_revision(name)
        if known is None:  # not in mteb's registry: described from the copy, as a local folder is
            described_from = Path(source)
        elif args.revision not in (None, known):
            raise ValueError(
                f"--revision {args.revision}: the mirror holds one copy of {args.model} and records no revision, so "
                "it cannot load another one. Unset TEMPNLP_MIRROR to load that revision from the Hub."
            )
        weights = f"the mirror's copy ({source})" + (f", taken to be mteb's registry revision {known}" if known else "")
    elif model_path is None:
        load_revision = args.revision or registry_revision(name)
        weights = f"the Hugging Face Hub, revision {load_revision or 'main'}"
    else:
        weights = f"the local folder {local.resolve()}"
    model = load_model(args.model, revision=load_revision)
    meta = build_model_meta(
        model,
        name=name,
        model_path=described_from,
        revision=args.revision,
        training_datasets=_split(args.training_datasets),
        adapted_from=args.adapted_from,
    )
    run_info = {"weights": weights, "training_losses": training_losses(model_path)}
    scores = run_mteb(model, meta, tasks, output_dir=args.output_dir, batch_size=args.batch_size, run_info=run_info)
    for task, score in scores.items():
        print(f"{task:<24} {score:7.2f}")
    print(f"results: {args.output_dir}/results/{meta.model_name_as_path()}/{meta.revision}/")
    return 0


def _eval_retrieval(args: argparse.Namespace) -> int:
    from tempnlp.data.beir import load_beir
    from tempnlp.evaluation.retrieval import evaluate_retrieval
    from tempnlp.models import load_model

    load_beir(args.data, args.split)  # a broken folder fails before the model loads
    model = load_model(args.model)
    scores = evaluate_retrieval(
        model,
        args.data,
        model_name=args.model,
        split=args.split,
        batch_size=args.batch_size,
        ignore_identical_ids=args.ignore_identical_ids,
        output_dir=args.output_dir,
    )
    for metric, value in scores.items():
        print(f"{metric:<12} {value:7.2f}")
    return 0


def _eval_diagnostics(args: argparse.Namespace) -> int:
    from tempnlp.evaluation.diagnostics import diagnose, load_temperatures
    from tempnlp.models import load_model

    if args.loss_state:
        load_temperatures(args.loss_state)
    model = load_model(args.model)
    report = diagnose(model, model_name=args.model, output_dir=args.output_dir, loss_state=args.loss_state)
    print(f"alignment {report['alignment']:.4f}  uniformity {report['uniformity']:.4f}")
    print(f"written to {args.output_dir}: diagnostics.json, " + ", ".join(report["plots"]))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tempnlp",
        description=__doc__,
        epilog=f"Errors in your input end in a one-paragraph message (exit code 2); add --debug anywhere, or set "
        f"{DEBUG_ENV}=1, to see their traceback.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train and evaluate as a recipe says (see recipes/)")
    train.add_argument("recipe", help="a recipe YAML file, e.g. recipes/quickstart.yaml")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set training.max_steps=100 --set loss.temperature=macl (repeatable; "
        "values are read as YAML scalars)",
    )
    train.add_argument("--variant", help="apply one of the recipe's variants (e.g. cpu)")
    train.add_argument("--output-dir", help="where to write the run (default: runs/<recipe>[-<variant>])")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    train.add_argument("--dry-run", action="store_true", help="validate, locate the data, print the resolved recipe")
    train.set_defaults(handler=_train)

    losses = commands.add_parser("losses", help="list the losses and temperature policies with their papers")
    losses.set_defaults(handler=_losses)

    evaluation = commands.add_parser("eval", help="evaluate a model").add_subparsers(dest="evaluation", required=True)
    sts = evaluation.add_parser("sts", help="STS12-16, STS-B, SICK-R: cosine Spearman x 100")
    sts.add_argument("model", help="a model folder or a Hub id (resolved through TEMPNLP_MIRROR when set)")
    sts.add_argument("--output-dir", required=True)
    sts.add_argument("--protocol", choices=["mteb", "senteval"], default="mteb")
    sts.add_argument("--tasks", help="comma-separated subset, e.g. STS12,STSBenchmark (default: all seven)")
    sts.add_argument("--batch-size", type=int, default=64)
    sts.set_defaults(handler=_eval_sts)

    run = evaluation.add_parser("mteb", help="run mteb tasks; results in mteb's result-cache layout")
    run.add_argument("model")
    which = run.add_mutually_exclusive_group(required=True)
    which.add_argument("--tasks", help="comma-separated MTEB task names")
    which.add_argument("--benchmark", help="an MTEB benchmark name")
    run.add_argument("--output-dir", required=True)
    run.add_argument(
        "--model-name", help="organisation/name for the results (default: the Hub id; a local folder: local/<name>)"
    )
    run.add_argument(
        "--revision", help="model revision (default: mteb's for known models, a local folder's content hash)"
    )
    run.add_argument(
        "--training-datasets",
        help="comma-separated MTEB names of the datasets trained on (a tempnlp model adds its recipe's own)",
    )
    run.add_argument("--adapted-from", help="Hub id of the base model (a tempnlp model: its recipe's model)")
    run.add_argument("--batch-size", type=int, default=32)
    run.set_defaults(handler=_eval_mteb)

    retrieval = evaluation.add_parser("retrieval", help="nDCG@10, MRR@10, Recall@100 on a BEIR-layout folder")
    retrieval.add_argument("model")
    retrieval.add_argument("--data", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    retrieval.add_argument("--split", default="test")
    retrieval.add_argument("--output-dir")
    retrieval.add_argument("--batch-size", type=int, default=64)
    retrieval.add_argument(
        "--ignore-identical-ids",
        action="store_true",
        help="leave a query's own id out of its ranking, as mteb does for ArguAna, Quora and FiQA",
    )
    retrieval.set_defaults(handler=_eval_retrieval)

    diagnostics = evaluation.add_parser("diagnostics", help="alignment, uniformity, similarity and tau plots")
    diagnostics.add_argument("model")
    diagnostics.add_argument("--output-dir", required=True)
    diagnostics.add_argument("--loss-state", help="a saved loss state with per-sample temperatures")
    diagnostics.set_defaults(handler=_eval_diagnostics)
    return parser


DEBUG_ENV = "TEMPNLP_DEBUG"


OUT_OF_MEMORY = (
    "the GPU ran out of memory. Lower training.per_device_train_batch_size, set loss.mini_batch_size (GradCache "
    "keeps the contrastive batch while embedding it in slices), or lower model.max_seq_length."
)


def _message(error: BaseException) -> str:
    """One paragraph: what failed, on which input, and what to do."""
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in str(error.args[-1]):
        text = f"{error.strerror or error}: {error.filename}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Errors in the user's input or environment end in one paragraph and exit code 2; ``--debug`` (or
    ``TEMPNLP_DEBUG=1``) shows their traceback. Anything else is a bug in tempnlp and keeps its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")  # anywhere on the command line
    args = build_parser().parse_args([item for item in argv if item != "--debug"])
    command = " ".join(filter(None, [args.command, getattr(args, "evaluation", None)]))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        if debug:
            raise
        hint = " Continue with the same command and --resume." if args.command == "train" else ""
        print(f"tempnlp {command}: interrupted.{hint}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, EOFError, RuntimeError) as error:
        import torch

        out_of_memory = isinstance(error, torch.cuda.OutOfMemoryError)
        if debug or (isinstance(error, RuntimeError) and not out_of_memory):
            raise  # a RuntimeError other than running out of memory comes from torch or tempnlp: a bug to report
        print(f"tempnlp {command}: error: {OUT_OF_MEMORY if out_of_memory else _message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
