"""Pictures: the order in which a decode commits tokens, and accuracy against speed."""

import os
from pathlib import Path

import numpy as np

__all__ = ["color_text", "decode_order_plot", "pareto_front", "pareto_plot", "use_colour"]


def use_colour(stream) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def decode_order_plot(tokens: list[str], steps: list[int], path: str | Path, title: str = ""):
    """Position x step grid: a cell is coloured from the step its token was committed on.

    Spatial stability shows as committed runs growing from decoded neighbours, temporal
    stability as tokens committed together late in a block.
    """
    plt = _pyplot()
    steps_arr = np.asarray(steps)
    n_steps = max(int(steps_arr.max()), 1)
    grid = np.full((n_steps, len(steps_arr)), np.nan)
    for pos, step in enumerate(steps_arr):
        if step >= 1:
            grid[step - 1 :, pos] = step  # decoded from that step on
    width = min(max(6.0, 0.22 * len(steps_arr)), 30.0)
    fig, ax = plt.subplots(figsize=(width, max(3.0, min(0.12 * n_steps + 1.5, 12.0))))
    # rows are steps 1..n, top to bottom
    image = ax.imshow(grid, aspect="auto", cmap="viridis", interpolation="nearest",
                      extent=(-0.5, len(steps_arr) - 0.5, n_steps + 0.5, 0.5))
    ax.set_xlabel("generated position")
    ax.set_ylabel("step (forward pass)")
    if len(tokens) <= 80:
        ax.set_xticks(range(len(tokens)))
        ax.set_xticklabels([t.replace("\n", "\\n") for t in tokens], rotation=90, fontsize=7)
    fig.colorbar(image, ax=ax, label="commit step")
    ax.set_title(title or "decode order")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def color_text(tokens: list[str], steps: list[int]) -> str:
    """The text with each token coloured by its commit step (ANSI 256 colours, blue early
    to red late)."""
    palette = [21, 27, 33, 39, 45, 51, 50, 49, 48, 46, 82, 118, 154, 190, 226, 220, 214, 208,
               202, 196]
    last = max(max(steps), 1)
    parts = []
    for tok, step in zip(tokens, steps, strict=True):
        colour = palette[min(len(palette) - 1, (max(step, 1) - 1) * len(palette) // last)]
        parts.append(f"\033[38;5;{colour}m{tok}\033[0m")
    return "".join(parts)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (higher is better),
    sorted by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any(x2 >= x and y2 >= y and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def pareto_plot(records: list[dict], path: str | Path):
    """Accuracy against tokens/s and against TPF, a row per task (and length), one marker
    per policy setting and cache mode, the front drawn. EOS stop on when it was run."""
    plt = _pyplot()
    eos = any(r["stop_at_eos"] for r in records)
    rows = sorted({(r["task"], r["length"]) for r in records})
    fig, axes = plt.subplots(len(rows), 2, figsize=(14, 3.6 * len(rows)), squeeze=False)
    labels = sorted({f"{r['label']} ({r['cache']})" for r in records})
    markers = "osD^v<>pP*hX"
    colours = plt.get_cmap("tab20")
    style = {lab: (markers[i % len(markers)], colours(i % 20)) for i, lab in enumerate(labels)}
    for (task, length), pair in zip(rows, axes, strict=True):
        cell = [r for r in records
                if r["task"] == task and r["length"] == length and r["stop_at_eos"] == eos]
        for ax, key, name in ((pair[0], "tokens_per_s", "tokens/s"), (pair[1], "tpf", "TPF")):
            pts = [(r[key], 100 * r["accuracy"]) for r in cell]
            for r, (x, y) in zip(cell, pts, strict=True):
                marker, colour = style[f"{r['label']} ({r['cache']})"]
                ax.scatter(x, y, marker=marker, color=colour, s=50,
                           label=f"{r['label']} ({r['cache']})")
            front = pareto_front(pts)
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1,
                    alpha=0.6)
            flagged = key == "tokens_per_s" and any(r.get("timing_flag") for r in cell)
            ax.set_xlabel(f"{name} (! timing flagged: see results.md)" if flagged else name)
            ax.set_ylabel("accuracy %")
            ax.set_ylim(-3, 103)
            ax.set_title(f"{task}, {length} length")
            ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    # the legend beside the plots (right), level with them, not below the last row
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(0.78, 0.5), fontsize=8,
               title="policy (cache)", frameon=False)
    fig.savefig(path, dpi=110)
    plt.close(fig)
