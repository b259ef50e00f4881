"""The loss curve, drawn the lecture's way: training loss averaged over consecutive chunks of steps;
and val loss against training time, one curve per run, to compare what runs cost."""

from pathlib import Path

import torch

from . import files


def plot_losses(train_losses: list[float], history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    chunk = max(1, len(train_losses) // 100)
    usable = len(train_losses) // chunk * chunk
    means = torch.tensor(train_losses[:usable]).view(-1, chunk).mean(1)  # (chunks,)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot((torch.arange(len(means)) + 1) * chunk, means, label=f"train (mean of each {chunk} steps)")
    ax.plot([r["step"] for r in history], [r["val_loss"] for r in history], "o-", label="val (whole split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def plot_loss_against_time(runs: dict[str, list[dict]], path: Path) -> None:
    """Val loss against training seconds: for each label, a run's evaluation records (metrics.jsonl's,
    each with "seconds", the training time so far, and "val_loss"), as a curve. Time on a log axis:
    the runs compared take from a minute to many."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, records in runs.items():
        seconds, losses = [r["seconds"] for r in records], [r["val_loss"] for r in records]
        ax.plot(seconds, losses, "o-", markersize=3, label=curve_label(label, records))
    ax.set_xscale("log")
    ax.set_xlabel("training seconds (log scale)")
    ax.set_ylabel("val loss (nats per character)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below the axes, clear of every curve
    _save(fig, path)


def curve_label(label: str, records: list[dict]) -> str:
    """A curve's legend: its lowest val loss, and the training seconds where it was reached (a run's
    best evaluation, or a race's best budget)."""
    lowest = min(records, key=lambda r: r["val_loss"])
    return f"{label}: {lowest['val_loss']:.4f} at {lowest['seconds']:.0f} s"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with files.replace(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
