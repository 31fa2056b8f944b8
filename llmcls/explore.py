"""`llmcls data list` and `llmcls data stats PATH`: what the data looks like, in one command.

    llmcls data list
    llmcls data stats arxiv-metadata-oai-snapshot.json --categories cs --plot stats.png
    llmcls data stats aapd-train --json

Stats: counts, label cardinality and density, the label frequency table (head and tail), abstract length
(words) distribution, co-occurrence of the most frequent labels. Computed in Arrow over the whole file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

import numpy as np

from llmcls.config import DataArguments, build_parser, parse
from llmcls.corpus import label_counts, load_corpus
from llmcls.data import SAMPLE_DESCRIPTIONS, arrow_rows, bundled_samples
from llmcls.errors import LlmclsError
from llmcls.labels import LabelSpace
from llmcls.progress import console, results
from llmcls.runs import atomic_write

SUBCOMMANDS = {"list": "List the bundled sample data sets.", "stats": "Statistics (and plots) of one data file."}


@dataclass
class StatsArguments:
    top: int = field(default=15, metadata={"help": "Rows in the head and tail of the label frequency table."})
    cooccurrence: int = field(default=10, metadata={"help": "Co-occurrence matrix over this many top labels."})
    plot: str | None = field(default=None, metadata={"help": "Write label-frequency and length plots (PNG)."})
    json: bool = field(default=False, metadata={"help": "Print the statistics as JSON on stdout."})


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = ["usage: llmcls data {list,stats} ...", ""] + [f"  {k:<6} {v}" for k, v in SUBCOMMANDS.items()]
        print("\n".join(lines), file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return list_samples(argv[1:]) if argv[0] == "list" else stats_main(argv[1:])


def list_samples(argv: list[str]) -> int:
    parse(build_parser([], prog="llmcls data list", description=SUBCOMMANDS["list"]), argv)
    from llmcls.report_formats import rich_table

    rows = []
    for name, path in bundled_samples().items():
        with open(path, encoding="utf-8") as handle:
            n_rows = sum(1 for line in handle if line.strip())
        rows.append([name, str(n_rows), SAMPLE_DESCRIPTIONS[name]])
    results.print(rich_table(["name", "rows", "description"], rows, title="Bundled samples (use as --train NAME)"))
    return 0


def make_parser():
    """The parser of `llmcls data stats`."""
    return build_parser([DataArguments, StatsArguments], prog="llmcls data stats", description=SUBCOMMANDS["stats"],
                        positional=("path", {"help": "A data file or bundled sample name (read as --train)."}))


def stats_main(argv: list[str]) -> int:
    data_args, args, extra = parse(make_parser(), argv)
    for option in ("top", "cooccurrence"):
        if getattr(args, option) < 1:
            raise LlmclsError(f"--{option} must be at least 1, got {getattr(args, option)}")
    if args.plot and not args.plot.lower().endswith(".png"):  # checked first: a typo must not overwrite another file
        raise LlmclsError(f"--plot {args.plot}: the plot is a PNG image; give a file name ending in .png "
                          "(e.g. stats.png)")
    given = [option for option in ("validation", "test", "split_ratios", "max_eval_examples")
             if getattr(data_args, option) is not None]
    if given:  # the statistics describe PATH alone: these were read (or split off) and then described nowhere
        raise LlmclsError(f"--{given[0]}: data stats describes the one file given as PATH (llmcls data stats FILE) "
                          "and takes no split options; run it once per file")
    if not extra.path.strip():
        raise LlmclsError("data stats needs a data file or bundled sample name as PATH, got an empty one")
    data_args.train = extra.path
    corpus = load_corpus(data_args, required=("train",), called={"train": extra.path})
    stats = compute_stats(corpus.get("train"), args)
    stats["notes"] = corpus.notes
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print_stats(stats, extra.path)
    if args.plot:
        plot_stats(stats, args.plot)
        console.print(f"Wrote {args.plot}")
    return 0


def compute_stats(ds, args: StatsArguments) -> dict:
    """Everything from Arrow columns; no Python loop over rows."""
    import pyarrow.compute as pc

    table = arrow_rows(ds)
    labels = table.column("labels")
    per_row = pc.list_value_length(labels).to_numpy(zero_copy_only=False)
    words = (pc.count_substring(table.column("abstract"), " ").to_numpy(zero_copy_only=False) + 1)
    counts = label_counts(ds)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    n = len(ds)
    has_title = int(pc.sum(pc.greater(pc.utf8_length(table.column("title")), 0)).as_py() or 0)
    cardinality = float(per_row.mean()) if n else 0.0
    return {
        "n_examples": n,
        "n_labels": len(counts),
        "label_cardinality": cardinality,
        "label_density": cardinality / max(len(counts), 1),
        "labels_per_example": _distribution(per_row),
        "single_label_fraction": float((per_row == 1).mean()) if n else 0.0,
        "with_title_fraction": has_title / max(n, 1),
        "abstract_words": _distribution(words),
        "abstract_words_histogram": _histogram(words),
        "label_frequency": [{"label": lab, "count": c, "fraction": c / max(n, 1)} for lab, c in ranked],
        "cooccurrence": _cooccurrence(labels, [lab for lab, _ in ranked[: args.cooccurrence]]),
        "top": args.top,
    }


def _distribution(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {}
    qs = np.percentile(values, [0, 5, 25, 50, 75, 95, 100])
    keys = ("min", "p5", "p25", "median", "p75", "p95", "max")
    return {"mean": float(values.mean()), **{k: float(q) for k, q in zip(keys, qs, strict=True)}}


def _histogram(values: np.ndarray, bins: int = 40) -> dict:
    if len(values) == 0:
        return {"edges": [], "counts": []}
    upper = float(np.percentile(values, 99.5))  # a few very long abstracts would squash the plot
    counts, edges = np.histogram(np.minimum(values, upper), bins=bins)
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _cooccurrence(labels, top: list[str]) -> dict:
    """Counts of examples carrying both labels, for the most frequent labels (diagonal: the label's count)."""
    import pyarrow.compute as pc

    if not top:
        return {"labels": [], "counts": []}
    space = LabelSpace(top)
    flat = pc.list_flatten(labels)
    rows = pc.list_parent_indices(labels).to_numpy(zero_copy_only=False)
    column = pc.index_in(flat, value_set=pc.cast(np.array(top, dtype=object), flat.type))
    column = column.to_numpy(zero_copy_only=False)
    keep = ~np.isnan(column.astype(float))
    matrix = np.zeros((len(labels), len(space)), dtype=np.float32)
    matrix[rows[keep], column[keep].astype(np.int64)] = 1.0
    return {"labels": top, "counts": (matrix.T @ matrix).astype(np.int64).tolist()}


def print_stats(stats: dict, name: str) -> None:
    from llmcls.report_formats import rich_table

    words, card = stats["abstract_words"], stats["labels_per_example"]
    summary = [
        ["examples", f"{stats['n_examples']:,}"], ["labels", f"{stats['n_labels']:,}"],
        ["label cardinality (labels/example)", f"{stats['label_cardinality']:.3f}"],
        ["label density (cardinality/labels)", f"{stats['label_density']:.4f}"],
        ["labels per example (min/median/max)", f"{card.get('min', 0):.0f} / {card.get('median', 0):.0f} / "
                                               f"{card.get('max', 0):.0f}"],
        ["single-label examples", f"{stats['single_label_fraction']:.1%}"],
        ["examples with a title", f"{stats['with_title_fraction']:.1%}"],
        ["abstract words (mean, p5/median/p95)", f"{words.get('mean', 0):.1f}, {words.get('p5', 0):.0f} / "
                                                 f"{words.get('median', 0):.0f} / {words.get('p95', 0):.0f}"],
    ]
    results.print(rich_table(["statistic", "value"], summary, title=f"Data statistics: {name}"))
    freq, top = stats["label_frequency"], stats["top"]
    shown = freq if len(freq) <= 2 * top else freq[:top] + [None] + freq[-top:]
    rows = [["...", "", ""] if item is None else
            [item["label"], f"{item['count']:,}", f"{item['fraction']:.2%}"] for item in shown]
    results.print(rich_table(["label", "examples", "share"], rows, title="Label frequency (head and tail)"))
    co = stats["cooccurrence"]
    if co["labels"]:
        header = ["label", *(str(i) for i in range(1, len(co["labels"]) + 1))]  # numbered: narrow terminals
        rows = [[f"{i} {lab}", *(f"{v:,}" for v in row)]
                for i, (lab, row) in enumerate(zip(co["labels"], co["counts"], strict=True), start=1)]
        results.print(rich_table(header, rows, title="Co-occurrence of the most frequent labels (examples)"))


def plot_stats(stats: dict, path: str) -> None:
    """The label-frequency and abstract-length figure (plots.data_stats), written atomically to `path`."""
    from llmcls import plots

    hist = stats["abstract_words_histogram"]
    png = plots.data_stats([item["count"] for item in stats["label_frequency"]], hist["edges"], hist["counts"],
                           stats["abstract_words"].get("median", 0))
    atomic_write(path, png)
