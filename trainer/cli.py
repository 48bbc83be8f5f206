"""`trainer`: train, evaluate and compare blood-cell classifiers on a workstation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from edge.cli import add_command, new_parser, run_cli
from trainer.distribute import STRATEGIES
from trainer.dwell import FORMS, DwellConfig
from trainer.layouts import LAYOUTS, TASKS
from trainer.lite_weights import register_import_weights
from trainer.neardup import DEFAULT_MAX_SHIFT, DEFAULT_RUN_BLOCK, DEFAULT_THRESHOLD
from trainer.prepare import SPLIT_STRATEGIES, GroupingOptions
from trainer.splits import DEFAULT_FRACTIONS

_PREPROCESS_FLAGS = (
    "colour_normalisation",
    "artefact_mask",
    "mask_window",
    "contrast",
    "channel_mean_filter",
    "resize_policy",
    "interpolation",
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not an integer >= 1")
    return value


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="DIR", help="labelled image folder")
    p.add_argument("--layout", choices=LAYOUTS, default="auto", help="folder layout")
    p.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        help="classes: one per folder; subtypes/binary: Taleqani 4-class or ALL vs HEM",
    )


def _add_grouping_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("near-duplicate grouping (data without subject/patient ids)")
    g.add_argument(
        "--dup-threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="thumbnail correlation above which two images are one group",
    )
    g.add_argument(
        "--dup-max-shift",
        type=int,
        default=DEFAULT_MAX_SHIFT,
        help="largest shift (32x32 thumbnail pixels) searched",
    )
    g.add_argument(
        "--run-block",
        type=int,
        default=DEFAULT_RUN_BLOCK,
        help="files numbered within one block of this many are one group (0: off)",
    )


def _add_split_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("split")
    g.add_argument(
        "--split",
        choices=SPLIT_STRATEGIES,
        default="group",
        help="group: no subject/near-duplicate crosses splits; random: by image, as the "
        "papers did (leaks; warns)",
    )
    g.add_argument(
        "--split-fractions",
        type=float,
        nargs=3,
        default=list(DEFAULT_FRACTIONS),
        metavar=("TRAIN", "VAL", "TEST"),
        help="shares of each class's images",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the split, init and shuffling")
    _add_grouping_args(p)


def _grouping(args: argparse.Namespace) -> GroupingOptions:
    return GroupingOptions(args.dup_threshold, args.dup_max_shift, args.run_block)


def _add_fit(sub: argparse._SubParsersAction) -> None:
    from trainer.models import list_models

    p = add_command(
        sub, "fit", "Split the data, train a classifier and report on its test split.", _fit
    )
    _add_data_args(p, required=False)
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --out with its saved options",
    )
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        choices=list_models(),
        default="efficientnet-b3",
        metavar="NAME",
        help="backbone: " + ", ".join(list_models()),
    )
    m.add_argument(
        "--image-size", type=_positive_int, help="input side; if absent, the model's native size"
    )
    m.add_argument("--weights", default="imagenet", help="imagenet, none or a weights file")
    m.add_argument("--dropout", type=float, default=0.2, help="dropout before the head")
    t = p.add_argument_group("training")
    t.add_argument("--batch-size", type=_positive_int, default=32, help="images per step")
    t.add_argument(
        "--head-epochs",
        type=int,
        help="phase 1, base frozen; if absent, 5 with pretrained weights and 0 from scratch",
    )
    t.add_argument("--fine-tune-epochs", type=int, default=45, help="phase 2 epochs")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam LR of the first phase")
    t.add_argument(
        "--fine-tune-lr", type=float, default=1e-4, help="Adam LR of phase 2 after phase 1"
    )
    t.add_argument(
        "--fine-tune-fraction",
        type=float,
        default=0.3,
        help="top share of the base's layers trained in phase 2 (all from scratch)",
    )
    t.add_argument(
        "--balance",
        choices=("class-weights", "none"),
        default="class-weights",
        help="class weights n/(K n_c) in the loss, or none",
    )
    t.add_argument(
        "--cache",
        choices=("auto", "memory", "disk", "none"),
        default="auto",
        help="where tf.data keeps preprocessed images; auto: memory below 2 GiB, else disk",
    )
    t.add_argument("--strategy", choices=STRATEGIES, default="default", help="tf.distribute")
    t.add_argument("--bootstrap", type=_positive_int, default=1000, help="CI resamples")
    t.add_argument(
        "--allow-nondeterminism",
        action="store_true",
        help="skip TensorFlow's deterministic ops (faster on GPUs; runs no longer repeat exactly)",
    )
    d = p.add_argument_group("learning-rate schedule (DWELL)")
    defaults = DwellConfig()
    d.add_argument(
        "--lr-schedule",
        choices=("dwell", "fixed"),
        default="dwell",
        help="dwell: seed 000's dynamic LR; fixed: its Table 2 baseline",
    )
    d.add_argument(
        "--dwell-form",
        choices=FORMS,
        default=defaults.form,
        help="table1: cut when val_loss rose; lra: accuracy then val_loss, patience, stop",
    )
    d.add_argument("--dwell-factor", type=float, default=defaults.factor, help="LR cut factor")
    d.add_argument("--min-lr", type=float, default=defaults.min_lr, help="LR floor")
    d.add_argument(
        "--dwell-threshold",
        type=float,
        default=defaults.threshold,
        help="lra: training accuracy where monitoring moves to val_loss",
    )
    d.add_argument(
        "--dwell-patience",
        type=int,
        default=defaults.patience,
        help="lra: consecutive epochs without improvement before an LR cut",
    )
    d.add_argument(
        "--dwell-stop-patience",
        type=int,
        default=defaults.stop_patience,
        help="lra: LR cuts without improvement before training stops early",
    )
    d.add_argument(
        "--no-dwell-restore",
        action="store_true",
        help="cut the LR without rolling the weights back",
    )
    a = p.add_argument_group("augmentation (training images only)")
    a.add_argument("--no-flip", action="store_true", help="no horizontal/vertical flips")
    a.add_argument("--rotation", type=float, default=0.1, help="fraction of a full turn")
    a.add_argument("--zoom", type=float, default=0.1, help="zoom range")
    a.add_argument(
        "--color-jitter", type=float, default=0.0, help="stain robustness strength (0: off)"
    )
    pre = p.add_argument_group(
        "preprocessing (edge.vision.preprocessing; the device runs the same)"
    )
    pre.add_argument(
        "--colour-normalisation",
        choices=("none", "reinhard"),
        default="none",
        help="map every image's stain colour to one target (Taleqani's classes differ in colour)",
    )
    pre.add_argument("--artefact-mask", action="store_true", help="seed 000 equation 2")
    pre.add_argument(
        "--mask-window", type=int, default=15, help="artefact-mask window side (odd, pixels)"
    )
    pre.add_argument(
        "--contrast",
        choices=("none", "hist_eq", "clahe"),
        default="none",
        help="luminance contrast step",
    )
    pre.add_argument(
        "--channel-mean-filter", action="store_true", help="subtract each pixel's R,G,B mean"
    )
    pre.add_argument(
        "--resize-policy",
        choices=("pad", "center_crop", "stretch"),
        default="pad",
        help="how a non-square image reaches the square input",
    )
    pre.add_argument(
        "--interpolation",
        choices=("area", "linear", "cubic", "nearest"),
        default="area",
        help="resize interpolation",
    )
    _add_split_args(p)
    p.add_argument(
        "--split-file", metavar="SPLIT_JSON", help="reuse this split.json instead of splitting"
    )


def _fit(args: argparse.Namespace) -> int:
    from trainer.config import FitConfig, FitError
    from trainer.fit import run_fit
    from trainer.pipeline import AugmentConfig

    if args.data is None and not args.resume:
        raise FitError("--data DIR is required (except with --resume)")
    cfg = FitConfig(
        data=args.data or "",
        out=args.out,
        layout=args.layout,
        task=args.task,
        model=args.model,
        image_size=args.image_size,
        weights=args.weights,
        dropout=args.dropout,
        batch_size=args.batch_size,
        head_epochs=args.head_epochs,
        fine_tune_epochs=args.fine_tune_epochs,
        lr=args.lr,
        fine_tune_lr=args.fine_tune_lr,
        fine_tune_fraction=args.fine_tune_fraction,
        lr_schedule=args.lr_schedule,
        dwell=_dwell_config(args),
        split=args.split,
        fractions=tuple(args.split_fractions),
        split_file=args.split_file,
        seed=args.seed,
        grouping=_grouping(args),
        balance=args.balance,
        augment=AugmentConfig(not args.no_flip, args.rotation, args.zoom, args.color_jitter),
        preprocess={k: getattr(args, k) for k in _PREPROCESS_FLAGS},
        cache=args.cache,
        strategy=args.strategy,
        n_boot=args.bootstrap,
        deterministic=not args.allow_nondeterminism,
    )
    result = run_fit(cfg, resume=args.resume)
    m = result.training["metrics"]
    print(
        f"{result.run_dir}: test accuracy {m['accuracy']:.4f}, weighted F1 "
        f"{m['weighted_f1']:.4f}, n={m['n_test']} ({result.report['split_strategy']})"
    )
    return 0


def _dwell_config(args: argparse.Namespace) -> DwellConfig:
    from trainer.config import FitError

    try:
        return DwellConfig(
            form=args.dwell_form,
            factor=args.dwell_factor,
            min_lr=args.min_lr,
            dwell=not args.no_dwell_restore,
            threshold=args.dwell_threshold,
            patience=args.dwell_patience,
            stop_patience=args.dwell_stop_patience,
        )
    except ValueError as exc:
        raise FitError(str(exc)) from None


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "evaluate", "Report a trained model's metrics on a labelled folder.", _evaluate
    )
    p.add_argument("model", metavar="MODEL", help="model.keras or its run directory")
    _add_data_args(p, required=False)
    p.add_argument("--out", required=True, metavar="DIR", help="where the report goes")
    p.add_argument("--split-file", metavar="SPLIT_JSON", help="evaluate a subset of this split")
    p.add_argument(
        "--subset",
        choices=("train", "val", "test", "all"),
        default="test",
        help="with --split-file: which split to evaluate",
    )
    p.add_argument("--batch-size", type=_positive_int, default=32, help="images per batch")
    p.add_argument("--bootstrap", type=_positive_int, default=1000, help="CI resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import run_evaluate

    report = run_evaluate(
        args.model,
        args.data,
        args.out,
        args.layout,
        args.task,
        args.batch_size,
        args.split_file,
        args.subset,
        args.bootstrap,
        args.seed,
    )
    print(
        f"{args.out}: accuracy {report['accuracy']['value']:.4f}, weighted F1 "
        f"{report['weighted_f1']['value']:.4f}, n={report['n']}"
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "compare", "Runs side by side, like the seed's Tables 2 and 3.", _compare)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="directories with a report.json")
    p.add_argument("--format", choices=("md", "csv"), default="md", help="table format")
    p.add_argument("--out", metavar="FILE", help="write the table here instead of stdout")


def _compare(args: argparse.Namespace) -> int:
    from trainer.compare import load_run, render

    text = render([load_run(r) for r in args.runs], args.format)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _add_groups(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "groups", "Find near-duplicate groups in a folder without subject ids.", _groups
    )
    _add_data_args(p)
    _add_grouping_args(p)
    p.add_argument("--out", metavar="JSON", help="write the pairs and each file's group here")


def _groups(args: argparse.Namespace) -> int:
    from trainer import neardup
    from trainer.layouts import discover
    from trainer.scan import scan

    dataset = discover(args.data, args.layout, args.task)
    start = time.perf_counter()
    result = scan(dataset, neardup.signature)
    read_s = time.perf_counter() - start
    rels = [s.rel for s in result.samples]
    if result.thumbnails is None:
        from trainer.errors import DataError

        raise DataError(
            f"{dataset.root}: none of its {len(result.skipped)} image(s) can be read, e.g. "
            f"{result.skipped[0]['error'] if result.skipped else '?'}"
        )
    g = neardup.near_duplicate_groups(
        rels, result.thumbnails, args.dup_threshold, args.dup_max_shift, args.run_block
    )
    total_s = time.perf_counter() - start
    print(
        f"{dataset.root} ({dataset.layout}): {len(rels)} readable images "
        f"({len(result.skipped)} skipped), {len(g.pairs)} near-duplicate pairs, "
        f"{g.n_groups} groups (largest {g.largest}); read {read_s:.1f} s, total {total_s:.1f} s"
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "data_root": str(dataset.root),
                    "pairs": [[rels[a], rels[b], round(v, 4)] for a, b, v in g.pairs],
                    "groups": dict(zip(rels, g.groups, strict=True)),
                    "skipped": result.skipped,
                },
                indent=1,
            )
        )
    return 0


def _add_split(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "split", "Write a checked, leakage-proof split.json for a folder.", _split)
    _add_data_args(p)
    _add_split_args(p)
    p.add_argument("--out", required=True, metavar="SPLIT_JSON", help="file to write")


def _split(args: argparse.Namespace) -> int:
    from trainer.layouts import discover
    from trainer.prepare import prepare
    from trainer.run_files import write_split

    dataset = discover(args.data, args.layout, args.task)
    prepared = prepare(dataset, args.split, tuple(args.split_fractions), args.seed, _grouping(args))
    write_split(Path(args.out), dataset.root, dataset.labels, prepared.records, prepared.meta)
    counts = prepared.meta["counts"]
    print(
        f"{args.out}: "
        + ", ".join(
            f"{s} {sum(c['images'].values())} images / {c['groups']} groups"
            for s, c in counts.items()
        )
        + f"; {prepared.meta['groups_crossing_splits']} groups cross splits"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser(
        "trainer",
        "Train EfficientNet classifiers on blood-smear images with leakage-proof group splits.",
    )
    _add_fit(sub)
    _add_evaluate(sub)
    _add_compare(sub)
    _add_split(sub)
    _add_groups(sub)
    register_import_weights(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
