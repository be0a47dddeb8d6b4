"""Figures (matplotlib, Agg backend, PNG written atomically): Ramachandran histograms, total-energy
traces, flow vs reference force scatter, energy histograms, 2-D force fields. Inputs are numpy arrays
in OpenMM or kT units as each docstring says; every figure labels its axes with units, and has a
legend (or colour bar) where its lines or colours differ."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from ..io import atomic_write
from ..units import PathLike


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: PathLike) -> None:
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    _pyplot().close(fig)


def ramachandran(panels: Dict[str, np.ndarray], path: PathLike, bins: int = 60) -> None:
    """Log-scale phi/psi histograms, one panel per entry of ``panels`` (name -> (frames, 2) radians)."""
    ramachandran_residues({"": panels}, path, bins)


def ramachandran_residues(rows: Dict[str, Dict[str, np.ndarray]], path: PathLike, bins: int = 60) -> None:
    """Log-scale phi/psi histograms: one row per residue (label -> {source name -> (frames, 2)
    radians}, e.g. ``{"ALA2": {"MD data": ..., "flow samples": ...}}``), one column per source."""
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    ncols = max(len(panels) for panels in rows.values())
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.8 * ncols, 3.8 * len(rows)), squeeze=False,
                             layout="constrained")
    for ax_row, (residue, panels) in zip(axes, rows.items()):
        for ax, (name, angles) in zip(ax_row, panels.items()):
            angles = np.asarray(angles)
            h, xe, ye = np.histogram2d(angles[:, 0], angles[:, 1], bins=bins, range=[[-np.pi, np.pi]] * 2,
                                       density=True)
            h = np.where(h > 0, h, np.nan)
            mesh = ax.pcolormesh(xe, ye, h.T, norm=LogNorm(), cmap="viridis")
            where = f"{residue} " if residue else ""
            ax.set(title=f"{where}{name} ({len(angles)} frames)", xlabel=f"{where}phi (rad)",
                   ylabel=f"{where}psi (rad)", aspect="equal")
            fig.colorbar(mesh, ax=ax, shrink=0.8, label="density (rad$^{-2}$)")
        for ax in ax_row[len(panels):]:
            ax.axis("off")
    _save(fig, path)


def energy_traces(traces: Dict[str, np.ndarray], path: PathLike, dt_ps: float, ylabel: str = "E_tot - <E_tot> (kJ/mol)",
                  highlight: int = 0) -> None:
    """One panel per potential: total-energy traces (runs, steps) minus each run's mean, all runs grey,
    run ``highlight`` black (as the paper's Fig. 4), each panel's legend naming both. Runs that blew up
    show as far as they are finite."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(traces), figsize=(4.5 * len(traces), 3.4), squeeze=False)
    for ax, (name, runs) in zip(axes[0], traces.items()):
        runs = np.atleast_2d(np.asarray(runs, dtype=float))
        t = np.arange(runs.shape[1]) * dt_ps
        for i, run in enumerate(runs):
            finite = np.isfinite(run)
            centred = run - (run[finite].mean() if finite.any() else 0.0)
            ax.plot(t, centred, color="black" if i == highlight else "0.7", lw=1.2 if i == highlight else 0.6,
                    zorder=3 if i == highlight else 2)
        ax.set(title=name, xlabel="time (ps)", ylabel=ylabel)
        handles = [Line2D([], [], color="black", lw=1.2, label=f"run {highlight + 1} (starting frame {highlight})")]
        if len(runs) > 1:
            handles.append(Line2D([], [], color="0.7", lw=0.6, label=f"the other {len(runs) - 1} runs"))
        ax.legend(handles=handles, fontsize=7, loc="upper left", framealpha=0.8)
    fig.tight_layout()
    _save(fig, path)


def force_scatter(reference: np.ndarray, predicted: np.ndarray, path: PathLike, title: str = "") -> None:
    """Scatter of flow vs reference force components (kT/nm), with the identity line and the RMSE."""
    plt = _pyplot()
    ref, pred = np.asarray(reference).ravel(), np.asarray(predicted).ravel()
    rmse = float(np.sqrt(np.mean((ref - pred) ** 2)))
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.scatter(ref, pred, s=1, alpha=0.2, rasterized=True, label="force components")
    lim = float(np.percentile(np.abs(np.concatenate([ref, pred])), 99.5))
    ax.plot([-lim, lim], [-lim, lim], color="black", lw=0.8, label="flow = reference")
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="reference force (kT/nm)", ylabel="flow force (kT/nm)",
           title=f"{title} RMSE {rmse:.1f} kT/nm".strip(), aspect="equal")
    ax.legend(fontsize=7, loc="upper left", markerscale=6)
    _save(fig, path)


def energy_histograms(series: Dict[str, np.ndarray], path: PathLike, title: str = "", bins: int = 60,
                      xlabel: str = "energy - min (kT)", quantile: float = 0.99) -> float:
    """Overlaid histograms of energies (kT), each shifted so its minimum is 0 (the paper's Fig. 3c).

    The x range ends at 1.5 x the smallest per-series ``quantile`` of the shifted energies (the
    narrowest distribution, normally the MD data's), so clashing flow samples (target energies of 1e6
    kT and more) do not flatten the plot; the legend (below the axes, clear of the peaks) says how many
    values of each series lie beyond. Returns the upper end of the x range (kT).
    """
    plt = _pyplot()
    shifted = {}
    for name, values in series.items():
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size:
            shifted[name] = values - values.min()
    if not shifted:
        raise ValueError("energy_histograms: no finite energies to plot")
    xmax = 1.5 * min(float(np.quantile(v, quantile)) for v in shifted.values()) or 1.0
    fig, ax = plt.subplots(figsize=(5.0, 4.2))
    for name, values in shifted.items():
        beyond = int((values > xmax).sum())
        label = f"{name} ({beyond} beyond)" if beyond else name
        ax.hist(values[values <= xmax], bins=bins, range=(0.0, xmax), density=True, histtype="step", label=label, lw=1.2)
    ax.set(xlabel=xlabel, ylabel="density (1/kT)", title=title, xlim=(0.0, xmax))
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False)
    _save(fig, path)
    return xmax


def force_field_2d(grids: Dict[str, np.ndarray], extent: Sequence[float], path: PathLike,
                   density: Optional[Dict[str, np.ndarray]] = None, ncols: Optional[int] = None,
                   quiver_kw: Optional[Dict] = None, xlabel: str = "x", ylabel: str = "y",
                   density_label: str = "density p(x, y)", force_unit: str = "kT per unit length") -> None:
    """2-D force fields (name -> (ny, nx, 2) forces on a grid over ``extent``) as quiver panels over
    an optional density image per panel (toy problems, the paper's Fig. 2), each with its colour bar
    (``density_label``) and a reference arrow (the panel's 90th-percentile force, in ``force_unit``).
    ``ncols`` wraps the panels into rows (default: one row); ``quiver_kw`` overrides the ``ax.quiver``
    options (e.g. a shared ``scale``). NaN forces draw no arrow."""
    plt = _pyplot()
    ncols = ncols or len(grids)
    nrows = -(-len(grids) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 4.0 * nrows), squeeze=False, layout="constrained")
    for ax, (name, field) in zip(axes.flat, grids.items()):
        ny, nx, _ = field.shape
        xs = np.linspace(extent[0], extent[1], nx)
        ys = np.linspace(extent[2], extent[3], ny)
        if density is not None and name in density:
            image = ax.imshow(density[name], origin="lower", extent=extent, cmap="Greys", aspect="auto")
            fig.colorbar(image, ax=ax, shrink=0.85, label=density_label)
        arrows = ax.quiver(xs, ys, field[..., 0], field[..., 1],
                           **{"color": "tab:red", "angles": "xy", **(quiver_kw or {})})
        norms = np.linalg.norm(field, axis=-1)
        if np.isfinite(norms).any():
            key = float(np.nanpercentile(norms, 90))
            ax.quiverkey(arrows, 0.75, 1.02, key, f"|F| = {key:.2g} {force_unit}", labelpos="W", coordinates="axes",
                         fontproperties={"size": 7})
        ax.set(title=name + "\n", xlim=extent[:2], ylim=extent[2:], xlabel=xlabel, ylabel=ylabel)
    for ax in axes.flat[len(grids):]:
        ax.axis("off")
    _save(fig, path)
