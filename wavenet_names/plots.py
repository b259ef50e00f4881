"""The loss curve, drawn the lecture's way: training loss averaged over consecutive chunks of steps."""

import os
from pathlib import Path

import torch


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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
