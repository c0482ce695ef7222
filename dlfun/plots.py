"""Plots saved as PNG files (matplotlib's Agg backend: no screen needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` via a temporary file (never a half-written PNG), then close."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    _pyplot().close(fig)
    return path


def plot_curves(records: Sequence[dict], path: str | Path, panels: Sequence[Sequence[str]],
                x: str = "epoch", title: str = "", group: str | None = "model",
                log_scale: Sequence[str] = ()) -> Path:
    """One panel per group of metric names (e.g. ``[("train_loss", "val_loss")]``), each a line
    over ``x``; with ``group``, one line per distinct value of that field. Panels whose first
    metric name contains one of ``log_scale`` (e.g. ``("loss",)``) get a logarithmic y axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    groups = sorted({r.get(group) for r in records}, key=str) if group else [None]
    for ax, names in zip(axes[0], panels):
        for g in groups:
            rows = [r for r in records if group is None or r.get(group) == g]
            for name in names:
                pts = [(r[x], r[name]) for r in rows if name in r and x in r]
                if pts:
                    label = name if len(groups) == 1 else f"{g}: {name}"
                    ax.plot(*zip(*pts), label=label)
        ax.set_xlabel(x)
        if any(part in names[0] for part in log_scale):
            ax.set_yscale("log")
        ax.set_ylabel(" / ".join(names))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | Path,
                   title: str = "Confusion matrix") -> Path:
    """Heat map of a confusion matrix (rows: true class, columns: predicted), with counts."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * k, 0.8 + 0.5 * k))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save_figure(fig, path)


def plot_per_class(values: dict[str, np.ndarray], class_names: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """Grouped bars per class, e.g. ``{"precision": p, "recall": r}``."""
    plt = _pyplot()
    k, m = len(class_names), len(values)
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * k), 3.6))
    width = 0.8 / m
    for i, (name, v) in enumerate(values.items()):
        ax.bar(np.arange(k) + i * width, v, width, label=name)
    ax.set_xticks(np.arange(k) + 0.4 - width / 2, class_names, rotation=45, ha="right")
    lo = min(float(np.min(v)) for v in values.values())
    # values near 1 (precision, recall) on a 0-1 axis would all look alike: zoom in on them
    ax.set_ylim((max(0.0, lo - 0.25 * (1.0 - lo) - 0.01), 1.0) if lo > 0.5 else (min(0.0, lo), 1.05))
    ax.legend()
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_image_grid(images: np.ndarray, path: str | Path, titles: Sequence[str] | None = None,
                    cols: int = 8, cmap: str = "gray", title: str = "",
                    value_range: tuple[float, float] | None = None) -> Path:
    """Images ``(N, H, W)`` or ``(N, H, W, C)`` in a grid.

    Values are scaled per image to its own min..max, or, with ``value_range=(lo, hi)``, all
    with the same fixed scale (so faint or saturated images look as they are). Without
    ``titles`` the grid is one mosaic (one ``imshow``, white gaps between the images): a
    hundred separate axes cost matplotlib seconds per figure.
    """
    plt = _pyplot()
    n = len(images)
    rows = -(-n // cols)
    if titles is None:
        fig, ax = plt.subplots(figsize=(1.1 * cols, 1.1 * rows + (0.3 if title else 0.0)))
        ax.axis("off")
        mosaic = _mosaic([_scaled(img, value_range) for img in images], rows, cols)
        ax.imshow(mosaic, cmap=_white_gaps(plt, cmap) if mosaic.ndim == 2 else None,
                  vmin=0.0, vmax=1.0, interpolation="nearest")
        if title:
            ax.set_title(title)
        return save_figure(fig, path)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            _show_image(ax, images[i], cmap, value_range)
            ax.set_title(titles[i], fontsize=7)
    if title:  # above the first row's titles (the figure is short when there are few rows)
        fig.suptitle(title, y=1.0 + 0.12 / rows)
    return save_figure(fig, path)


def _scaled(img: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """One image as float32 in [0, 1] (its own min..max, or ``value_range``); ``(H, W)`` for
    one channel."""
    img = np.asarray(img, np.float32)
    img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
    lo, hi = value_range or (float(img.min()), float(img.max()))
    return np.clip((img - lo) / (hi - lo + 1e-12), 0.0, 1.0)


def _mosaic(images: Sequence[np.ndarray], rows: int, cols: int, gap: int = 1) -> np.ndarray:
    """Scaled images of one shape tiled row by row, ``gap`` pixels apart. Grey mosaics are
    masked arrays (gaps and empty cells masked, drawn white); colour ones are white there."""
    h, w = images[0].shape[:2]
    shape = (rows * (h + gap) - gap, cols * (w + gap) - gap) + images[0].shape[2:]
    canvas = np.ones(shape, np.float32)
    filled = np.zeros(shape[:2], bool)
    for i, img in enumerate(images):
        top, left = (h + gap) * (i // cols), (w + gap) * (i % cols)
        cell = (slice(top, top + h), slice(left, left + w))
        canvas[cell], filled[cell] = img, True
    return np.ma.masked_array(canvas, ~filled) if canvas.ndim == 2 else canvas


def _white_gaps(plt, cmap: str):
    """``cmap`` drawing masked pixels white."""
    return plt.get_cmap(cmap).with_extremes(bad="white")


def _show_image(ax, img: np.ndarray, cmap: str = "gray",
                value_range: tuple[float, float] | None = None) -> None:
    """One image, its values scaled to [0, 1] (its own min..max, or ``value_range``); grey for
    one channel."""
    img = _scaled(img, value_range)
    ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0.0, vmax=1.0)


def plot_image_rows(rows: Sequence[tuple[str, np.ndarray]], path: str | Path,
                    max_cols: int = 16, title: str = "", cmap: str = "viridis") -> Path:
    """One row per named stack of maps ``(n, H, W)`` (e.g. a layer's channels), at most
    ``max_cols`` per row; each map scaled on its own."""
    plt = _pyplot()
    cols = min(max_cols, max(len(maps) for _, maps in rows))
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.0 * cols + 1.0, 1.1 * len(rows)),
                             squeeze=False)
    for (name, maps), row in zip(rows, axes):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if j < len(maps):
                _show_image(ax, maps[j], cmap)
        row[0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, y=1.0 + 0.05 / len(rows))
    return save_figure(fig, path)


def plot_heatmap_overlays(images: np.ndarray, heatmaps: np.ndarray, path: str | Path,
                          titles: Sequence[Sequence[str]] | None = None,
                          row_labels: Sequence[str] | None = None, title: str = "",
                          alpha: float = 0.5) -> Path:
    """Images with heat maps laid over them: row i shows ``images[i]`` alone, then each of
    ``heatmaps[i] (n_maps, H, W)`` over it (maps scaled to [0, 1] per image across its maps,
    so their strengths compare within a row; negative values show as 0)."""
    plt = _pyplot()
    n, m = len(images), heatmaps.shape[1]
    fig, axes = plt.subplots(n, m + 1, figsize=(1.2 * (m + 1), 1.3 * n), squeeze=False)
    for i in range(n):
        pos = np.maximum(np.asarray(heatmaps[i], np.float32), 0.0)
        pos = pos / (pos.max() + 1e-12)
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            _show_image(ax, images[i])
            if j:
                ax.imshow(pos[j - 1], cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
            if titles is not None:
                ax.set_title(titles[i][j], fontsize=6)
        if row_labels is not None:
            axes[i][0].text(-0.1, 0.5, row_labels[i], transform=axes[i][0].transAxes,
                            ha="right", va="center", fontsize=7)
    if title:  # above the first row's titles
        fig.suptitle(title, y=1.0 + 0.12 / n)
    return save_figure(fig, path)


Series = dict[str, tuple[Sequence[float], Sequence[float]]]


def plot_series(panels: dict[str, Series], path: str | Path, xlabel: str, ylabel: str,
                log_y: bool = False, hlines: dict[str, float] | None = None,
                title: str = "", log_x: bool = False, columns: int | None = None) -> Path:
    """Line plots side by side (``columns`` per row; default all in one row): ``panels`` maps
    a panel title to ``{label: (xs, ys)}``; ``hlines`` adds dashed reference lines
    (``{label: y}``) to every panel."""
    plt = _pyplot()
    cols = min(columns or len(panels), len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    if rows > 1:
        fig.subplots_adjust(hspace=0.4)  # room for the titles under the x labels above them
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, series) in zip(axes.flat, panels.items()):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) <= 12 else None, label=label)
        for label, y in (hlines or {}).items():
            ax.axhline(y, linestyle="--", color="gray", linewidth=1)
            ax.annotate(label, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7,
                        color="gray", va="bottom")
        if log_y:
            ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_bars(values: dict[str, float], path: str | Path, ylabel: str, title: str = "",
              fmt: str = "{:.4f}") -> Path:
    """One labelled bar per entry, its value written on top; the y axis starts near the
    smallest value so that close results stay distinguishable."""
    plt = _pyplot()
    names, heights = list(values), np.array(list(values.values()), np.float64)
    fig, ax = plt.subplots(figsize=(max(3.5, 1.1 * len(names)), 3.4))
    bars = ax.bar(names, heights, color="tab:blue")
    for bar, v in zip(bars, heights):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=8)
    span = max(float(heights.max() - heights.min()), 0.05 * abs(float(heights.max())), 1e-6)
    ax.set_ylim(max(0.0, float(heights.min()) - span), float(heights.max()) + 0.3 * span)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_bar_panels(panels: dict[str, dict[str, tuple[float, float]]], path: str | Path,
                    title: str = "", fmt: str = "{:.3f}") -> Path:
    """Bar charts side by side: ``panels`` maps a panel title to ``{label: (value, error)}``
    (the error, e.g. a std over seeds, drawn as an error bar; 0 draws none). Each bar has
    its value written on it. The y axis includes 0 (negative values read as such), except in
    a panel whose bars all lie above 0.5 (accuracies), which zooms in on them."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), squeeze=False,
                             figsize=(max(4.0, 0.75 * max(map(len, panels.values()))) * len(panels),
                                      3.8))
    for ax, (name, bars) in zip(axes[0], panels.items()):
        labels = list(bars)
        values = np.array([v for v, _ in bars.values()], np.float64)
        errors = np.array([e for _, e in bars.values()], np.float64)
        drawn = ax.bar(labels, values, yerr=errors, capsize=3, color="tab:blue")
        for bar, v in zip(drawn, values):
            ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, v), ha="center",
                        va="bottom" if v >= 0 else "top", fontsize=7)
        lo, hi = float(np.min(values - errors)), float(np.max(values + errors))
        if lo > 0.5:  # close values near 1 would all look alike from 0
            ax.set_ylim(lo - 0.5 * (hi - lo) - 0.005, hi + 0.25 * (hi - lo) + 0.005)
        else:
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(name, fontsize=10)
        ax.tick_params(axis="x", labelrotation=45)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_seed_bands(x: np.ndarray, panels: dict[str, np.ndarray], path: str | Path,
                    xlabel: str = "env steps", title: str = "",
                    references: dict[str, list[tuple[float, str]]] | None = None) -> Path:
    """Curves over several seeds: one panel per metric, the mean over seeds as a thick line,
    the min-max range over seeds shaded, and each seed as a thin line.

    Args:
      x: ``(P,)`` x values shared by the seeds (e.g. environment steps).
      panels: ``{metric name: (K, P) values}`` for K seeds (NaN entries are skipped).
      path: PNG file.
      xlabel: x-axis label.
      title: figure title.
      references: ``{metric name: [(y, label), ...]}`` horizontal reference lines (e.g. a
        random policy's return, the "solved" threshold).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    x = np.asarray(x)
    for ax, (name, ys) in zip(axes[0], panels.items()):
        ys = np.asarray(ys, np.float64).reshape(-1, len(x))  # (K, P)
        for y in ys:
            ax.plot(x, y, lw=0.7, alpha=0.45)
        with np.errstate(all="ignore"):  # all-NaN columns (no episode ended) stay NaN
            ax.fill_between(x, np.nanmin(ys, 0), np.nanmax(ys, 0), alpha=0.2, color="C0",
                            label=f"min-max over {len(ys)} seeds" if len(ys) > 1 else None)
            ax.plot(x, np.nanmean(ys, 0), lw=2.0, color="C0", label="mean")
        for i, (y, label) in enumerate((references or {}).get(name, [])):
            ax.axhline(y, ls="--", color=f"C{i + 1}", lw=1.0, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_frames(frames: np.ndarray, path: str | Path, titles: Sequence[str] | None = None,
                cols: int = 8, title: str = "") -> Path:
    """RGB frames ``(N, H, W, 3)`` uint8 as a grid of pictures, shown as they are (no scaling)."""
    plt = _pyplot()
    n = len(frames)
    rows = -(-n // cols)
    h, w = frames.shape[1:3]
    size = 1.8
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows * h / w + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(frames[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def save_gif(frames: np.ndarray, path: str | Path, fps: int = 25) -> Path:
    """An animated GIF of RGB frames ``(N, H, W, 3)`` uint8 (matplotlib's PillowWriter)."""
    plt = _pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    path = Path(path)
    h, w = frames.shape[1:3]
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    image = ax.imshow(frames[0])
    anim = FuncAnimation(fig, lambda i: [image.set_data(frames[i])], frames=len(frames))
    tmp = path.with_name(f".{path.stem}.tmp.gif")
    anim.save(tmp, writer=PillowWriter(fps=fps))
    os.replace(tmp, path)
    plt.close(fig)
    return path


def plot_reliability(diagrams: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     path: str | Path, title: str = "") -> Path:
    """Reliability diagrams side by side: ``diagrams`` maps a panel title to ``(confidence,
    accuracy, count)`` per bin ``(B,)`` (see :func:`dlfun.train.calibration.reliability_bins`);
    bars show each bin's accuracy at its confidence range, the diagonal is perfect
    calibration, and the gap to it is shaded red. Empty bins are left out."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(diagrams), figsize=(3.6 * len(diagrams), 3.6),
                             squeeze=False)
    for ax, (name, (conf, acc, count)) in zip(axes[0], diagrams.items()):
        bins = len(conf)
        lefts = np.arange(bins) / bins
        full = np.asarray(count) > 0
        acc, conf = np.asarray(acc)[full], np.asarray(conf)[full]
        ax.bar(lefts[full], acc, width=1.0 / bins, align="edge", edgecolor="black",
               linewidth=0.5, label="accuracy")
        ax.bar(lefts[full], np.abs(conf - acc), width=1.0 / bins, bottom=np.minimum(acc, conf),
               align="edge", facecolor="none", edgecolor="red", hatch="///", linewidth=0.5,
               label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (max probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_histograms(panels: dict[str, dict[str, np.ndarray]], path: str | Path, xlabel: str,
                    bins: int = 30, value_range: tuple[float, float] | None = None,
                    title: str = "") -> Path:
    """Overlaid density histograms, one panel per entry of ``panels`` (``{title: {label:
    values (N,)}}``), all with the same bin edges so they compare."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, values in series.items():
            ax.hist(np.asarray(values), bins=bins, range=value_range, density=True,
                    histtype="step", linewidth=1.5, label=label)
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_embeddings(panels: dict[str, np.ndarray], labels: np.ndarray, path: str | Path,
                    class_names: Sequence[str], xlabel: str = "dimension 1",
                    ylabel: str = "dimension 2", title: str = "") -> Path:
    """Scatter plots side by side: ``panels`` maps a panel title to points ``(N, 2)`` of the
    same N examples, coloured by their integer ``labels (N,)`` (one colour per class)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (name, points) in zip(axes[0], panels.items()):
        points = np.asarray(points)
        for c, cname in enumerate(class_names):
            sel = labels == c
            ax.scatter(points[sel, 0], points[sel, 1], s=6, color=cmap(c % cmap.N), label=cname)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_attention_maps(maps: np.ndarray, tokens: Sequence[str], path: str | Path,
                        titles: Sequence[str] | None = None, cols: int = 4,
                        title: str = "") -> Path:
    """Attention weights ``(N, T, T)`` (row: query position, column: key position) as heat
    maps in a grid, each axis labelled with the ``T`` tokens (whitespace made visible)."""
    plt = _pyplot()
    n, steps = len(maps), len(tokens)
    rows = -(-n // cols)
    side = max(2.5, 0.11 * steps)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    shown = [{"\n": "⏎", " ": "·", "\t": "→"}.get(t, t) for t in tokens]
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(np.asarray(maps[i], np.float32), cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(steps), shown, fontsize=5, family="monospace")
        ax.set_yticks(range(steps), shown, fontsize=5, family="monospace")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
