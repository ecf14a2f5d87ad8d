"""How the notebooks show things: one colour per method across the course, the library's own source
under the equation it implements, the accuracy-against-MACs figure, and words that agree in number."""
from __future__ import annotations

import inspect

import pandas as pd

from dyninf.measure.frontier import ACCURACY, MACS, static_frontier
from dyninf.utils.paths import shown_path

# One colour per method in every figure of the course (seaborn's colour-blind palette).
METHOD_COLOURS = {"plain": "#333333", "SD": "#0173b2", "AIG": "#029e73", "GaterNet": "#de8f05",
                  "BlockDrop": "#cc78bc", "ResNet-Wider": "#ca9161"}
METHOD_MARKERS = {"plain": "o", "SD": "P", "AIG": "^", "GaterNet": "s", "BlockDrop": "D", "ResNet-Wider": "X"}


def method_shades(method: str, count: int) -> list:
    """``count`` shades of ``method``'s colour, light to dark: the variants of one method (target
    rates, L1 weights) in one figure, recognisably that method's."""
    import seaborn as sns

    return sns.light_palette(METHOD_COLOURS[method], count + 2)[2:]


def plural(count: float, word: str, plural_form: str | None = None) -> str:
    """'1 image', '3 images', '2.5 blocks'."""
    return f"{count:g} {word if count == 1 else plural_form or word + 's'}"


def source_markdown(*objects) -> str:
    """The source of library functions or methods as a Markdown code block, headed by where it lives,
    so that a notebook shows the tested code itself and cannot drift from it."""
    blocks = []
    for obj in objects:
        qualified = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
        blocks.append(f"`{qualified}` in `{shown_path(inspect.getsourcefile(obj))}`:\n\n"
                      f"```python\n{inspect.getsource(obj).rstrip()}\n```")
    return "\n\n".join(blocks)


def show_source(*objects) -> None:
    """Display ``source_markdown(*objects)`` in a notebook."""
    from IPython.display import Markdown, display

    display(Markdown(source_markdown(*objects)))


def _label_heights(points: pd.DataFrame, x_span: float, gap: float) -> list[float]:
    """Label heights near each point's accuracy, pushed apart where labels of points close in x
    would overlap (a few lines instead of another dependency)."""
    placed: list[tuple[float, float]] = []
    heights = {}
    for index, row in points.sort_values(ACCURACY).iterrows():
        height = row[ACCURACY]
        for x, y in sorted(placed, key=lambda p: p[1]):
            if abs(x - row[MACS]) < 0.2 * x_span and abs(y - height) < gap:
                height = y + gap
        placed.append((row[MACS], height))
        heights[index] = height
    return [heights[i] for i in points.index]


def plot_accuracy_against_macs(points: pd.DataFrame, ax, title: str = "accuracy against mean MACs per image"):
    """Each network of ``points`` (``dyninf.measure.frontier.COLUMNS``) at its mean MACs and accuracy, with
    ± 1 standard error bars, one colour per method, labelled; the static frontier dashed where at
    least two plain networks draw one."""
    for method, rows in points.groupby("method", sort=False):
        ax.errorbar(rows[MACS], rows[ACCURACY], yerr=rows["standard error (points)"], fmt=METHOD_MARKERS.get(method, "o"),
                    color=METHOD_COLOURS.get(method), markersize=8, capsize=3, label=method, linestyle="none")
    frontier = static_frontier(points)
    if len(frontier) >= 2:
        ax.plot([*frontier[MACS], points[MACS].max()], [*frontier[ACCURACY], frontier[ACCURACY].iloc[-1]],
                "k--", lw=1, label="static frontier")
    low, high = points[ACCURACY].min(), points[ACCURACY].max()
    gap = max(high - low, 1.0) * 0.06
    heights = _label_heights(points, points[MACS].max(), gap)
    x_offset = 0.03 * points[MACS].max()
    for (_, row), height in zip(points.iterrows(), heights):
        moved = abs(height - row[ACCURACY]) > 1e-9
        ax.annotate(row.network.replace("plain ", ""), xy=(row[MACS], row[ACCURACY]),
                    xytext=(row[MACS] + x_offset, height), fontsize=7, va="center", annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", color="0.6", lw=0.5) if moved else None)
    bottom = low - points["standard error (points)"].max() - gap
    ax.set(xlabel="mean MACs per image (M)", ylabel="test accuracy (%)", title=title,
           xlim=(0, points[MACS].max() * 1.45),
           ylim=(bottom, max(max(heights), high + points["standard error (points)"].max()) + gap))
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    return ax


def plot_speedups(table: pd.DataFrame, title: str):
    """`make bench`'s figure, one panel per batch size: each case's ideal speed-up (MACs) and the
    one measured in skipped mode, as horizontal bars over the eager plain network (the measured one
    with its range over the timing rounds as an error bar, where the table has it), realized / ideal
    written beside them; on a GPU a dashed line marks the plain network replayed as a CUDA graph
    (the best static time there). Returns the figure."""
    import matplotlib.pyplot as plt

    batch_sizes = sorted(table.batch.unique())
    cases = list(dict.fromkeys(table.case))
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(6 * len(batch_sizes), 0.5 * len(cases) + 1.5),
                             sharey=True, squeeze=False)
    for ax, batch_size in zip(axes[0], batch_sizes):
        rows = table[table.batch == batch_size].set_index("case").reindex(cases)
        y = range(len(cases))
        ax.barh([i + 0.2 for i in y], rows["ideal speed-up"], height=0.4, color="lightgray", label="ideal (MACs)")
        low, high = rows.get("skipped speed-up low"), rows.get("skipped speed-up high")
        spread = None if low is None or high is None else [rows["skipped speed-up"] - low, high - rows["skipped speed-up"]]
        ax.barh([i - 0.2 for i in y], rows["skipped speed-up"], height=0.4, color="tab:purple",
                xerr=spread, error_kw=dict(ecolor="k", capsize=2, lw=1), label="skipped, measured")
        right = rows["skipped speed-up"] if high is None else high   # the label clears the error bar
        for i, (end, ratio) in enumerate(zip(right, rows["realized / ideal"])):
            ax.text(end + 0.05, i - 0.2, f"{ratio:.2f}", va="center", fontsize=8)
        ax.axvline(1, color="k", lw=1, label="plain, eager")
        graph = rows.get("plain CUDA graph ms")
        if graph is not None and graph.notna().any():
            ax.axvline((rows["plain ms"] / graph).median(), color="tab:green", ls="--", lw=1.5,
                       label="plain as a CUDA graph")
        ax.set(title=f"batch {batch_size} (numbers: realized / ideal)", xlabel="speed-up over the eager plain network")
        ax.set_yticks(list(y), cases)
    axes[0][0].invert_yaxis()   # the axes share y: inverting one inverts all
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
