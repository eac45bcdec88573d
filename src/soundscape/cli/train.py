"""``soundscape train``, ``classifiers list``, ``evaluate`` and ``review``: few-shot classifiers
and review batches (the library is soundscape.classifiers and soundscape.review)."""

from __future__ import annotations

from pathlib import Path

import click

from soundscape.cli.base import (
    Number,
    PathParam,
    cli,
    database_option,
    echo_err,
    format_options,
    open_db,
)
from soundscape.cli.filters import filter_options
from soundscape.output import emit

METRIC_COLUMNS = [
    "name", "version", "space", "label", "n_pos", "n_neg", "threshold", "precision", "recall",
    "average_precision", "roc_auc", "note",
]  # fmt: skip


def _split_labels(text: str | None) -> list[str] | None:
    if text is None:
        return None
    labels = [x.strip() for x in text.split(",") if x.strip()]
    if not labels:
        raise click.BadParameter("give at least one label", param_hint="--labels")
    return labels


def _parse_thresholds(values: tuple[str, ...]) -> dict[str, float]:
    out = {}
    for v in values:
        label, sep, num = v.rpartition("=")
        try:
            if not sep or not label.strip():
                raise ValueError
            out[label.strip()] = float(num)
        except ValueError as exc:
            raise click.BadParameter(
                f"{v!r} is not LABEL=PROBABILITY (e.g. saw=0.7)", param_hint="--threshold"
            ) from exc
    return out


@cli.command()
@click.argument("name")
@click.option("--space", "--model", "space_name", required=True, help="Space to train on.")
@click.option("--labels", help="Comma-separated labels (default: every label with 'yes' examples).")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed (weak negatives, folds)."
)
@click.option(
    "--weak-negatives",
    type=click.IntRange(min=0),
    help="How many unannotated windows to sample as background negatives "
    "[default: 1000, at most a quarter of the unannotated windows].",
)
@click.option("--no-weak-negatives", is_flag=True, help="Use no unannotated windows.")
@click.option(
    "--no-other-labels",
    is_flag=True,
    help="Do not use other labels' 'yes' windows as negatives of a label.",
)
@click.option(
    "--target-precision",
    type=Number(0, 1, min_open=True, max_open=True),
    default=0.9,
    show_default=True,
    help="Each label's threshold is the lowest cross-validated score reaching this precision.",
)
@click.option(
    "--threshold",
    "threshold_overrides",
    multiple=True,
    metavar="LABEL=P",
    help="Set a label's threshold (a probability) instead (repeatable).",
)
@click.option(
    "-C",
    "--regularization",
    "C",
    type=Number(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Inverse L2 strength of the logistic regression.",
)
@database_option
@format_options
def train(
    name,
    space_name,
    labels,
    seed,
    weak_negatives,
    no_weak_negatives,
    no_other_labels,
    target_precision,
    threshold_overrides,
    C,
    database,
    fmt,
) -> None:
    """Train a classifier NAME (one linear model per label) from annotations.

    Positives: windows overlapping 'yes' annotations of a label; negatives: its 'no'
    annotations, other labels' 'yes' windows and a seeded sample of unannotated windows.
    Retraining under the same NAME stores a new version and keeps the old ones.

    \b
    Examples:
      soundscape train saws --space birdnet --labels saw,fireworks
      soundscape train saws --space birdnet --threshold saw=0.7 --json
    """
    from soundscape import classifiers

    with open_db(database).engine.begin() as conn:
        clf = classifiers.train(
            conn,
            name,
            space_name,
            _split_labels(labels),
            seed=seed,
            weak_negatives=0 if no_weak_negatives else weak_negatives,
            other_labels=not no_other_labels,
            target_precision=target_precision,
            thresholds=_parse_thresholds(threshold_overrides),
            C=C,
        )
    echo_err(
        f"trained {clf.name} v{clf.version} on space {clf.space.name}: "
        f"{len(clf.labels)} label(s), {len(clf.annotation_ids)} annotation(s), "
        f"{clf.params['weak_negatives_used']} weak negative(s); metrics are cross-validated"
    )
    emit(clf.rows(), fmt, METRIC_COLUMNS)


@cli.group()
def classifiers() -> None:
    """Trained classifiers (soundscape train)."""


@classifiers.command("list")
@click.argument("name", required=False)
@database_option
@format_options
def classifiers_list(name, database, fmt) -> None:
    """Every classifier version and label with its space, threshold and metrics."""
    from soundscape.classifiers import list_classifiers

    with open_db(database).engine.connect() as conn:
        rows = list_classifiers(conn, name)
    if not rows:
        echo_err("no classifiers yet (soundscape train)")
    emit(rows, fmt, [*METRIC_COLUMNS[:-1], "detections", "created_at"])


@cli.command()
@click.option("--classifier", "name", required=True, help="Classifier name.")
@click.option("--version", type=click.IntRange(min=1), help="Version (default: the latest).")
@database_option
@format_options
def evaluate(name, version, database, fmt) -> None:
    """Precision, recall and average precision on annotations not used in training."""
    from soundscape.classifiers import evaluate as run_evaluate
    from soundscape.classifiers import get_classifier

    with open_db(database).engine.connect() as conn:
        clf = get_classifier(conn, name, version)
        rows = run_evaluate(conn, clf)
    echo_err(
        f"{clf.name} v{clf.version}: evaluated on annotations made or not used since training "
        f"({len(clf.annotation_ids)} were used)"
    )
    emit(
        rows,
        fmt,
        [
            "name",
            "version",
            "label",
            "n_annotations",
            "n_pos",
            "n_neg",
            "threshold",
            "precision",
            "recall",
            "average_precision",
            "note",
        ],  # fmt: skip
    )


@cli.command()
@click.option("--classifier", help="Review a classifier's windows (with --label).")
@click.option("--label", help="The classifier label under review.")
@click.option("--version", type=click.IntRange(min=1), help="Classifier version (latest).")
@click.option("--concept", help="Instead: review a stored concept's best unannotated windows.")
@click.option(
    "--strategy",
    type=click.Choice(["top", "margin", "random"], case_sensitive=False),
    default="margin",
    show_default=True,
    help="top: highest scores; margin: nearest the threshold; random: a calibration sample.",
)
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --strategy random.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=PathParam(file_okay=False, path_type=Path),
    help="Folder for the clips, spectrograms and review.txt.",
)
@filter_options
@database_option
@format_options
def review(
    classifier,
    label,
    version,
    concept,
    strategy,
    limit,
    seed,
    out_dir,
    filters,
    database,
    fmt,
) -> None:
    """Write a review batch: a clip + spectrogram per window and a Raven table (review.txt)
    with an empty Verdict column; fill it in and run `soundscape annotate import
    DIR/review.txt`. Only windows that overlap no annotation of the label are picked.

    \b
    Examples:
      soundscape review --classifier saws --label saw --strategy margin -n 20 --out batch1/
      soundscape review --concept siren --out batch2/
    """
    from soundscape import classifiers as clfs
    from soundscape import review as rv
    from soundscape import search as s
    from soundscape.formats.guano import clip_context
    from soundscape.media_files import stored_files

    if (classifier is None) == (concept is None):
        raise click.UsageError("give either --classifier NAME --label L or --concept NAME")
    if classifier is not None and label is None:
        raise click.UsageError("--classifier needs --label")
    if concept is not None and (label or version):
        raise click.UsageError("--label/--version go with --classifier")
    strategy = strategy.lower()
    if concept is not None and strategy != "top":
        if (
            strategy == "margin"
            and click.get_current_context().get_parameter_source("strategy")
            == click.core.ParameterSource.DEFAULT
        ):
            strategy = "top"
        else:
            raise click.UsageError("a concept review picks its best windows: --strategy top")
    filters = filters.build()
    with open_db(database).engine.connect() as conn:
        s.check_filter_names(conn, filters)
        if classifier is not None:
            clf = clfs.get_classifier(conn, classifier, version)
            hits = rv.classifier_batch_hits(conn, clf, label, strategy, limit, filters, seed)
            what = f"{clf.name} v{clf.version} label {label!r}"
        else:
            hits = rv.concept_batch_hits(conn, concept, limit, filters)
            label, what = concept, f"concept {concept!r}"
        stored = stored_files(conn, [h.recording_id for h in hits])
        context = clip_context(conn, [h.recording_id for h in hits])  # the clips' GUANO
    if not hits:
        echo_err("no unannotated windows to review")
        return
    batch = rv.write_batch(hits, out_dir, label, strategy, stored, context)
    for err in batch.errors:
        echo_err(f"warning: {err}")
    echo_err(
        f"review batch of {len(hits)} window(s) ({what}, strategy {strategy}) in {out_dir}; "
        f"fill the Verdict column of {batch.table} (yes/no/unsure), then "
        f"`soundscape annotate import {batch.table}`"
    )
    rows = [{"rank": k, **h.as_row()} for k, h in enumerate(hits, start=1)]
    emit(rows, fmt, ["rank", "score", "label", "sensor", "local", "start_s", "end_s", "path"])
