"""The figures as PNG bytes: the report's (per-label F1 by system, micro-F1 against cost, precision-recall) and the
data statistics' of `llmcls data stats --plot` (label frequency, abstract length).

matplotlib is imported inside the functions (the CLI starts without it) and drawn through a bare `Figure` on the
Agg canvas: no pyplot, so no global backend switch and no figure left open between reports. Each function takes
plain numbers, already computed from the runs or the data, and returns the PNG file's bytes. Run names longer than
NAME_WIDTH characters are shortened in the middle (`short_names`, still distinct), so that legends and point labels
fit.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence

import numpy as np

DPI = 110
MARKERS = "osD^v<>pPX*h"
NAME_WIDTH = 40  # run names longer than this are shortened in the figures (legends, point labels)


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kwargs):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False, **kwargs)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})  # no version string: stable bytes
    return buffer.getvalue()


def color(i: int):
    """One colour per run, the same in every figure."""
    from matplotlib import colormaps

    return colormaps["tab10"](i % 10)


def short_names(names: Sequence[str], width: int = NAME_WIDTH) -> list[str]:
    """The run names as the figures print them: at most `width` characters, a longer one cut in the middle ("…"
    for the cut: both ends tell runs apart, e.g. a folder and a seed). Names that would still read the same get
    their position in the report appended ("#2"), so that every run stays distinct."""
    short = [_middle_ellipsis(name, width) for name in names]
    for attempt in range(2):  # the duplicates first; if that is not enough (a name that looks like a tag), all
        if len(set(short)) == len(short):
            break
        counts = Counter(short)
        short = [_middle_ellipsis(name, width - len(f" #{i}")) + f" #{i}" if attempt or counts[s] > 1 else s
                 for i, (name, s) in enumerate(zip(names, short, strict=True), start=1)]
    return short


def _middle_ellipsis(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = width // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def per_label_f1(labels: Sequence[str], support: Sequence[int], series: dict[str, Sequence[float | None]]) -> bytes:
    """F1 of each label (x, by support, most frequent first) for each run (one line each; `series` holds every run
    in report order, so colours match the other figures), support below.

    Lines rather than grouped bars: with tens of labels and several systems, crossings (an LLM ahead on the rare
    labels at the right, behind on the head) stay readable.
    """
    n = len(labels)
    fig, axes = _figure(min(30.0, max(8.0, 0.22 * n)), 6.0, 2, 1, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1]})
    top, bottom = axes[0, 0], axes[1, 0]
    x = np.arange(n)
    names = short_names(list(series))  # a long run name would stretch the legend past the figure
    for i, (name, values) in enumerate(zip(names, series.values(), strict=True)):
        if all(v is None for v in values):  # a run without predictions: no line, but its colour stays reserved
            continue
        y = np.array([np.nan if v is None else v for v in values], dtype=float)
        top.plot(x, y, marker=MARKERS[i % len(MARKERS)], markersize=4, linewidth=1.2, color=color(i), label=name)
    absent = [i for i, count in enumerate(support) if count == 0]
    if absent:  # F1 is 0 there by convention (nothing to find): shade it so it does not read as a failure
        top.axvspan(min(absent) - 0.5, max(absent) + 0.5, color="0.92", zorder=0)
        top.text((min(absent) + max(absent)) / 2, 0.5, "no example\nin this split", ha="center", va="center",
                 fontsize=8, color="0.4")
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("F1")
    top.set_title("Per-label F1 (labels by support in the evaluated split, most frequent first)")
    top.grid(axis="y", alpha=0.3)
    if top.get_lines():
        top.legend(fontsize=8, loc="upper right")
    bottom.bar(x, support, color="0.6")
    bottom.set_yscale("log")
    bottom.set_ylabel("support")
    step = max(1, n // 80)  # beyond ~80 labels the names overlap: label every step-th tick
    bottom.set_xticks(x[::step])
    bottom.set_xticklabels([labels[i] for i in range(0, n, step)], rotation=90, fontsize=7)
    return _png(fig)


def f1_vs_cost(names: Sequence[str], f1: Sequence[float | None], speed: Sequence[float | None],
               train_s: Sequence[float | None]) -> bytes:
    """Micro-F1 against prediction throughput and against training time (log axes), one point per run; the names
    (shortened) beside the points, on the left of those in the right half so that they stay inside the figure."""
    fig, axes = _figure(11.0, 4.5, 1, 2)
    names = short_names(names)
    panels = ((axes[0, 0], speed, "examples per second (prediction, log)"),
              (axes[0, 1], train_s, "training time, seconds (log)"))
    for ax, cost, xlabel in panels:
        points = [(i, name, x, y) for i, (name, y, x) in enumerate(zip(names, f1, cost, strict=True))
                  if y is not None and x is not None and x > 0]  # log axis: a run without the value has no place
        for i, _, x, y in points:
            ax.scatter([x], [y], color=color(i), marker=MARKERS[i % len(MARKERS)], s=50, zorder=3)
        logs = [np.log10(x) for _, _, x, _ in points]
        middle = (min(logs) + max(logs)) / 2 if logs else 0.0
        for x, y, label in _clustered_labels(points):
            left = np.log10(x) > middle  # labels of the right half go left of their point: not cut at the edge
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(-5 if left else 5, 4), fontsize=8,
                        va="bottom", ha="right" if left else "left")
        if points:
            ax.set_xscale("log")
        else:
            ax.text(0.5, 0.5, "no run recorded this", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("micro-F1")
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Micro-F1 against cost")
    return _png(fig)


def _clustered_labels(points: list[tuple[int, str, float, float]]) -> list[tuple[float, float, str]]:
    """One label per group of points that sit together (within 0.15 decades and 2% of the F1 range), the names
    stacked, so that runs with the same cost and score do not print their names over each other."""
    if not points:
        return []
    ys = [y for *_, y in points]
    near_y = 0.02 * max(max(ys) - min(ys), 0.05)
    groups: list[list[tuple[int, str, float, float]]] = []
    for point in sorted(points, key=lambda p: (p[3], p[2])):
        group = next((g for g in groups if abs(np.log10(g[0][2]) - np.log10(point[2])) < 0.15
                      and abs(g[0][3] - point[3]) < near_y), None)
        if group is None:
            groups.append([point])
        else:
            group.append(point)
    return [(g[0][2], max(p[3] for p in g), "\n".join(p[1] for p in g)) for g in groups]


def precision_recall(names: Sequence[str], points: Sequence[tuple[float, float] | None],
                     curves: dict[int, list[dict[str, float]]]) -> bytes:
    """Each run's operating point (micro recall, micro precision) and, for runs with scores, the curve of one
    global threshold swept over the scores; grey iso-F1 lines for reading F1 off the plot."""
    fig, axes = _figure(7.0, 6.0)
    ax = axes[0, 0]
    names = short_names(names)
    recall = np.linspace(0.01, 1.0, 200)
    for level in (0.2, 0.4, 0.6, 0.8):
        precision = level * recall / (2 * recall - level)
        keep = (precision > 0) & (precision <= 1)
        ax.plot(recall[keep], precision[keep], color="0.85", linewidth=0.8, zorder=1)
        ax.annotate(f"F1={level}", (recall[keep][-1], precision[keep][-1]), fontsize=7, color="0.6")
    for i, name in enumerate(names):
        curve = curves.get(i)
        if curve:
            ax.plot([p["recall"] for p in curve], [p["precision"] for p in curve], color=color(i), linewidth=1.2,
                    alpha=0.8, zorder=2)
        if points[i] is not None:
            ax.scatter([points[i][1]], [points[i][0]], color=color(i), marker=MARKERS[i % len(MARKERS)], s=60,
                       edgecolors="black", linewidths=0.6, zorder=3, label=name)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("micro recall")
    ax.set_ylabel("micro precision")
    ax.set_title("Precision and recall (curves: a global threshold swept over the scores)")
    if any(p is not None for p in points):
        ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    return _png(fig)


def data_stats(label_counts: Sequence[int], length_edges: Sequence[float], length_counts: Sequence[int],
               median_words: float) -> bytes:
    """Examples per label (by rank, log scale) beside the histogram of abstract lengths in words (`length_edges`
    holds one more value than `length_counts`; both empty for an empty file)."""
    fig, axes = _figure(12.0, 4.5, 1, 2)
    freq, length = axes[0, 0], axes[0, 1]
    from matplotlib.ticker import MaxNLocator

    freq.bar(range(1, len(label_counts) + 1), label_counts, width=1.0)  # rank 1: the most frequent label
    freq.xaxis.set_major_locator(MaxNLocator(integer=True))  # a rank has no fractions (5 labels showed 0.5, 1.5, ...)
    freq.set_yscale("log")
    freq.set_xlabel(f"label rank ({len(label_counts)} labels)")
    freq.set_ylabel("examples (log)")
    freq.set_title("Label frequency")
    if len(length_counts):
        edges = np.asarray(length_edges)
        length.bar(edges[:-1], length_counts, width=np.diff(edges), align="edge")
    length.set_title(f"Abstract length (words): median {median_words:.0f}")
    length.set_xlabel("words")
    return _png(fig)
