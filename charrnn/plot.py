"""``charrnn plot``: loss, learning-rate and update-ratio charts that compare runs.

matplotlib is an optional extra (``pip install 'charrnn[plot]'``), imported only here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint.names import CheckpointName, newest_checkpoint
from .errors import CharRNNError, InvalidInput, Unsupported
from .fileio import atomic_path


@dataclass
class Run:
    name: str
    info: dict

    @property
    def learning_rate(self) -> float | None:
        return (self.info.get("opt") or {}).get("learning_rate")

    @property
    def label(self) -> str:
        lr = self.learning_rate
        return f"{self.name} (lr {lr:g})" if lr is not None else self.name


def load_run(path: str | Path) -> Run:
    """A run from a checkpoint's ``.json`` (or ``.pt``/``.t7`` beside one) or a directory (newest)."""
    p = Path(path)
    if p.is_dir():
        newest = newest_checkpoint(p, (".json",))
        if newest is None:
            raise CharRNNError(f"no checkpoint JSON (*_<iteration>.json) in {p}")
        p, name = newest, f"{path}"
    else:
        p = p.with_suffix(".json")
        parsed = CheckpointName.parse(p)
        name = Path(parsed.stem).name if parsed else p.stem
    if not p.exists():
        raise CharRNNError(f"run not found: {p}")
    try:
        info = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CharRNNError(f"{p}: not a readable checkpoint JSON ({exc})") from None
    if not isinstance(info, dict) or "train_loss_history" not in info:
        raise CharRNNError(f"{p}: not a charrnn or torch-rnn checkpoint JSON (no train_loss_history)")
    return Run(name, info)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points (shorter at the start)."""
    if len(values) == 0:
        return values
    window = max(1, min(window, len(values)))
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty(len(values))
    out[window - 1:] = (cumsum[window:] - cumsum[:-window]) / window
    out[:window - 1] = cumsum[1:window] / np.arange(1, window)
    return out


def make_figure(runs: list[Run], width: int = 1200, height: int = 800, smoothing: int | None = None):
    """One figure, four panels: loss (train raw + smoothed, val), learning rate, update ratios, grad norm."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(width / 100, height / 100), dpi=100)
    ax_loss, ax_lr, ax_ratio, ax_grad = axes.flat
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(runs):
        color, info = colors[k % len(colors)], run.info
        loss = np.asarray(info["train_loss_history"], dtype=float)
        its = np.arange(1, len(loss) + 1)
        window = smoothing or max(1, len(loss) // 50)
        ax_loss.plot(its, loss, color=color, alpha=0.2, linewidth=0.7)
        ax_loss.plot(its, smooth(loss, window), color=color, linewidth=1.6, label=run.label)
        if info.get("val_loss_history"):
            ax_loss.plot(info["val_loss_history_it"], info["val_loss_history"], color=color, linestyle="--",
                         marker="o", markersize=3, linewidth=1.2, label=f"{run.name} val")
        if info.get("learning_rate_history"):
            ax_lr.plot(its[:len(info["learning_rate_history"])], info["learning_rate_history"], color=color,
                       label=run.label)
        stats_its = info.get("stats_iterations") or []
        for j, (layer, ratios) in enumerate(sorted((info.get("update_ratio_history") or {}).items())):
            ratios = [np.nan if r is None else r for r in ratios]
            ax_ratio.plot(stats_its[:len(ratios)], ratios, color=color, linestyle=["-", "--", ":", "-."][j % 4],
                          label=f"{run.name} {layer}")
        if info.get("grad_norm_history"):
            ax_grad.plot(stats_its[:len(info["grad_norm_history"])], info["grad_norm_history"], color=color,
                         label=run.label)
    ax_loss.set(title="loss (faint: raw, solid: smoothed, dashed: validation)", xlabel="iteration",
                ylabel="cross-entropy (nats/char)")
    ax_lr.set(title="learning rate", xlabel="iteration", yscale="log")
    ax_ratio.set(title="log10 update:parameter ratio (about -3 is healthy)", xlabel="iteration")
    ax_ratio.axhline(-3, color="grey", linewidth=0.8, linestyle=":")
    ax_grad.set(title="gradient norm (before clipping)", xlabel="iteration", yscale="log")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_runs(paths: list[str | Path], output: str | Path, fmt: str | None = None, width: int = 1200,
              height: int = 800, smoothing: int | None = None) -> Path:
    """Write the comparison figure of ``paths`` to ``output`` (PNG or SVG)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Unsupported("plotting needs matplotlib: pip install 'charrnn[plot]'") from None
    runs = [load_run(p) for p in paths]
    output = Path(output)
    if fmt not in (None, "png", "svg"):
        raise InvalidInput("fmt", f"must be png or svg (got {fmt!r})")
    fmt = fmt or (output.suffix.lstrip(".") or "png")
    if fmt not in ("png", "svg"):
        raise InvalidInput("output", f"{output} names an unsupported plot format {fmt!r} (png or svg)")
    fig = make_figure(runs, width, height, smoothing)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format=fmt)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return output
