"""Paper-style matplotlib figures: attention heatmaps, dynamics on a log-step axis, bar charts."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

# The figures' style, applied inside `style()` only: importing this module changes neither the
# matplotlib backend nor the global rcParams (a notebook keeps its own). Without a display,
# matplotlib picks a non-interactive backend by itself; nothing here calls `plt.show`.
STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.bbox": "tight",
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    """The paper style for the figures made inside the block (the CLI wraps every run in it)."""
    with plt.rc_context(STYLE):  # type: ignore[arg-type]  # the stubs type keys as Literals
        yield


def save(fig: plt.Figure, out_dir: Path, name: str, pdf: bool = False) -> list[str]:
    """Save `name.png` (and `name.pdf` with `pdf=True`) under `out_dir`, each atomically;
    returns the file names."""
    from sinks_jax.run_dir import atomic_write

    names = [f"{name}.png"] + ([f"{name}.pdf"] if pdf else [])
    for n in names:
        fmt = n.rsplit(".")[1]
        atomic_write(
            out_dir / n, functools.partial(fig.savefig, dpi=200, format=fmt, bbox_inches="tight")
        )
    plt.close(fig)
    return names


def token_label(text: str) -> str:
    """Printable tick label for a character token (space as ␣, newline as \\n)."""
    return {" ": "␣", "\n": "\\n", "\t": "\\t"}.get(text, text)


def attention_grid(
    att_LxHxTxT: np.ndarray,
    labels: Sequence[str] | None = None,
    title: str = "",
    cell: float = 2.6,
    highlight: Sequence[bool] | None = None,
) -> plt.Figure:
    """Layer × head grid of attention heatmaps (rows: queries, columns: keys). Tokens flagged in
    `highlight` (e.g. triggers) get red tick labels."""
    att = np.asarray(att_LxHxTxT)
    n_layers, n_heads, t, _ = att.shape
    fig, axes = plt.subplots(
        n_layers, n_heads, figsize=(cell * n_heads + 0.6, cell * n_layers), squeeze=False
    )
    for l in range(n_layers):
        for h in range(n_heads):
            ax = axes[l, h]
            im = ax.imshow(att[l, h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {l}, head {h}")
            if labels is not None and t <= 40:
                shown = [token_label(x) for x in labels]
                ax.set_xticks(range(t), shown, fontsize=5, rotation=90)
                ax.set_yticks(range(t), shown, fontsize=5)
                for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
                    for tick, flag in zip(ticks, highlight or [False] * t, strict=True):
                        if flag:
                            tick.set_color("red")
            ax.set_xlabel("key")
            ax.set_ylabel("query")
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention")
    if title:
        fig.suptitle(title, y=1.0 + 0.06 / n_layers)
    return fig


def dynamics(
    steps: Sequence[int],
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    marks: Mapping[str, float] | None = None,
    ncols: int = 3,
) -> plt.Figure:
    """One panel per entry of `panels` ({panel title: {curve label: values}}), log-step x axis.
    `marks` draws labelled vertical lines (e.g. the step a sink forms)."""
    n = len(panels)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
    x = np.asarray(steps, float)
    for ax, (title, curves) in zip(axes.flat, panels.items(), strict=False):
        for label, values in curves.items():
            ax.plot(x, np.asarray(values, float), marker=".", markersize=3, label=label)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlabel("training step")
        ax.set_title(title)
        for name, at in (marks or {}).items():
            if at is not None:
                ax.axvline(at, color="gray", ls="--", lw=0.8, label=name)
        if len(curves) > 1 or marks:
            ax.legend(frameon=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def bars(
    labels: Sequence[str],
    groups: Mapping[str, Sequence[float]],
    title: str = "",
    ylabel: str = "",
    highlight: int | None = None,
) -> plt.Figure:
    """Grouped bar chart: one bar group per label, one colour per entry of `groups`."""
    n, k = len(labels), len(groups)
    fig, ax = plt.subplots(figsize=(max(3.2, 0.18 * n * k + 1.5), 2.6))
    width = 0.8 / k
    for i, (name, values) in enumerate(groups.items()):
        pos = np.arange(n) + (i - (k - 1) / 2) * width
        rects = ax.bar(pos, values, width, label=name)
        if highlight is not None:
            rects[highlight].set_edgecolor("black")
            rects[highlight].set_linewidth(1.2)
    shown = [token_label(x) for x in labels]
    ax.set_xticks(range(n), shown, fontsize=6 if n > 20 else 8, rotation=90 if n > 12 else 0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if k > 1:
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig
