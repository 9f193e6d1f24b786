"""What every trainer reports the same way: the machine it ran on, and its loss-curve figure."""
from __future__ import annotations

import os
import platform
from contextlib import contextmanager
from pathlib import Path

import torch


def machine() -> dict:
    """CPU, cores, torch threads and versions, for a bundle's training summary and card."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(terse=True)}


@contextmanager
def loss_figure(path: str | Path, panels: int = 1, x_label: str = "step"):
    """Yields `panels` matplotlib axes side by side; on exit labels, grids, saves `path` (PNG,
    no display needed) and frees the figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(6.5 if panels == 1 else 5.0 * panels, 3.6))
    axes = [axes] if panels == 1 else list(axes)
    try:
        yield axes
        for ax in axes:
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
