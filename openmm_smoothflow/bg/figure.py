"""Figure of state populations with error bars, one group of bars per estimate (flow-MCMC chain,
reweighted flow proposals, reference MD, ...); matplotlib (Agg), PNG written atomically."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..io import atomic_write
from ..units import PathLike


def populations_figure(estimates: Mapping[str, Mapping[str, Mapping[str, Optional[float]]]], names: Sequence[str],
                       path: PathLike, title: str = "") -> None:
    """Bars of p +- se per state (``estimates``: method -> state -> {"p", "se"}, se None: no bar),
    linear and log scale side by side (rare states such as phi > 0 are visible on the log one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(estimates)
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for ax, log in zip(axes, (False, True)):
        for m, method in enumerate(methods):
            p = np.array([estimates[method][s]["p"] for s in names], dtype=float)
            se = np.array([estimates[method][s].get("se") or 0.0 for s in names], dtype=float)
            pos = np.arange(len(names)) + (m - (len(methods) - 1) / 2) * width
            lower = np.minimum(se, p * (1 - 1e-9)) if log else se  # keep log-scale bars above 0
            ax.bar(pos, p, width, yerr=np.stack([lower, se]), capsize=3, label=method)
        ax.set_xticks(np.arange(len(names)), list(names))
        ax.set(ylabel="population", title=("log scale" if log else title or "state populations (+- 1 se)"))
        if log:
            ax.set_yscale("log")
            ax.set_ylim(bottom=1e-5)
        ax.legend(fontsize=7)
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def population_rows(summary: Dict[str, object]) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """{"flow-MCMC chain": populations, "reweighted proposals": populations} of a ``run.chain_summary``."""
    rows = {"flow-MCMC chain" if summary.get("flow_proposals") else "MD": summary["chain"]["populations"]}
    if "reweighting" in summary:
        rows["reweighted proposals"] = summary["reweighting"]["populations"]
    return rows
