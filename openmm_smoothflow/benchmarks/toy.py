"""``smoothflow bench toy``: the paper's 2-D toy problems (section 6.1, Fig. 2; SI-2.1, Fig. SI-1).

Smooth (bump-mixture) and spline flows are trained by maximum likelihood on Metropolis-Hastings samples
of two ring-shaped energies; their force fields ``F = grad log p`` are compared with the exact reference
force ``-grad u`` on a grid inside the data support. Spline flows are only C^1 in x, so their force field
jumps where a sample crosses a knot; the smooth flow's is C^infinity.

Energies (kT), both on the box ``[-pi, pi]^2`` (as in the authors' public notebooks, which map the unit
square to it by ``2 pi t - pi``):

* ``rings`` (Eq. 84, non-periodic): ``u(x) = -log sum_i alpha_i exp(-(|x|_2 - r_i)^2 / (2 sigma^2))``,
  sigma = 0.06, alpha = [1, 0.8, 0.6, 0.4]. The radii were lost from the paper's text; we take
  r = [1.0, 2.0, 1.5, 2.5] (paired with alpha in that order), the values of the authors' notebook. The
  text writes ``2 sigma`` in the denominator; we read sigma as the ring width (``2 sigma^2``), as in the
  notebook: with a variance of 0.06 the rings (0.5 apart) would blur into each other.
* ``torus`` (Eqs. 85-86, periodic): the same mixture in a ring coordinate ``beta(x)`` instead of |x|,
  sigma = 0.05. The extracted text of Eq. 85 is garbled ("beta(x) = cos x21 + cos x22 + 2 2" under a
  stray "1"), i.e. ``beta = (cos(x1^2/2) + cos(x2^2/2) + 2)^(1/2)``, which is what the authors' notebook
  computes; but ``cos(x^2/2)`` is not 2 pi-periodic in its derivative (the force jumps across the box
  edge x = +-pi). We keep the form and make it periodic: ``beta(x) = (cos x1 + cos x2 + 2)^(1/2)``, in
  [0, 2] like the original. Level sets: beta = 1 is a closed curve around (pi, pi), which wraps across
  the box edges; beta = 1.5 a curve around the origin, beta = 2 the origin itself (the r = 2 "ring" is a
  blob there; r = 2.5 lies outside the range and only adds a negligible tail). ``beta`` has a cone
  point at (pi, pi) where u ~ 200 kT, far outside the data; the sqrt argument is floored there so
  energies and forces stay finite.

Data: ``--chains`` (a square number) Metropolis-Hastings chains start on a regular grid over the box,
run ``--burnin`` steps and are recorded at each of ``--record`` further steps (paper: 10,000 chains,
1,000 + 10 steps, 100,000 samples: the defaults). Proposals are symmetric Gaussian moves whose width is
drawn per chain and step from ``--mh-steps`` (a symmetric mixture: still exact MH); the wide moves let
chains hop between rings. Non-periodic proposals leaving the box are rejected (the target is the
Boltzmann density restricted to the box, which is what the flows model); periodic ones are wrapped.

Flows (``ToyFlow``): the box maps affinely onto the unit square (non-periodic; constant log-det
``-2 log(2 pi)``) or onto the unit torus (periodic, circular transforms), then 4 ``CouplingLayer`` s
transform dimension 0, 1, 0, 1, each conditioned on the other; base density uniform on [0, 1]^2. The
paper used 40 bins / components, conditioners of two hidden layers of 100 (Swish) and 8,000 Adam
steps of batch 1,000 at lr 5e-4. Defaults here are sized for a few minutes on 2 CPU cores: 16 bins /
components, conditioners (64, 64) with the package's sin activations, 2,500 steps of batch 512, lr 5e-4.

Metrics per problem and flow: final NLL on the data (nats, in x; the reference row is the exact
``<u> + log Z`` on the same data, ``Z`` by quadrature), force RMSE and max |F - F_ref| (kT per unit
length) on the grid cells where ``u - min u <= --support-kt``, and the roughness ratio: the largest jump
|F(p) - F(q)| between neighbouring grid cells (both in the support) divided by the same for the
reference field (~1 for a smooth fit, larger where the force is discontinuous).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

from .toy_models import (BOX, KINDS, RingEnergy, ToyFlow, grid_points, make_energy, mean_nll, sample_problem,
                         train_nll)


# -------------------------------------------------------------------------------------------- metrics
def _chunked_force(force_fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 8192) -> Tensor:
    return torch.cat([force_fn(x[i:i + chunk]).detach() for i in range(0, len(x), chunk)], dim=0)


def force_grid(force_fn: Callable[[Tensor], Tensor], n: int, box: Tuple[float, float] = BOX,
               nodes: bool = False) -> Tensor:
    """Forces on the cell centres (or nodes, see ``grid_points``) of an n x n grid: (n, n, 2), axis 0 =
    y, axis 1 = x."""
    x, _ = grid_points(n, box, nodes=nodes)
    return _chunked_force(force_fn, x).reshape(n, n, 2)


def support_mask(energy: RingEnergy, n: int, support_kt: float = 4.0, nodes: bool = False) -> Tensor:
    """(n, n) bool: grid cells (or nodes) with ``u - min u <= support_kt`` (min over the grid)."""
    x, _ = grid_points(n, energy.box, dtype=torch.float64, nodes=nodes)
    with torch.no_grad():
        u = energy(x).reshape(n, n)
    return u - u.min() <= support_kt


def max_neighbour_jump(field: Tensor, mask: Tensor) -> float:
    """Largest |F(p) - F(q)| over horizontally or vertically neighbouring cells both in ``mask``."""
    jumps = []
    for dim in (0, 1):
        a, b = field.narrow(dim, 0, field.shape[dim] - 1), field.narrow(dim, 1, field.shape[dim] - 1)
        ok = mask.narrow(dim, 0, mask.shape[dim] - 1) & mask.narrow(dim, 1, mask.shape[dim] - 1)
        d = (a - b).norm(dim=-1)[ok]
        if d.numel():
            jumps.append(float(d.max()))
    return max(jumps) if jumps else 0.0


def force_metrics(flow_field: Tensor, ref_field: Tensor, mask: Tensor) -> Dict[str, float]:
    """RMSE (over vector components) and max |F - F_ref| on ``mask``, and the roughness ratio
    ``max_neighbour_jump(flow) / max_neighbour_jump(reference)``; fields (n, n, 2)."""
    err = (flow_field - ref_field)[mask]
    ref_jump = max_neighbour_jump(ref_field, mask)
    flow_jump = max_neighbour_jump(flow_field, mask)
    return {"force_rmse": float(err.pow(2).mean().sqrt()), "force_max_error": float(err.norm(dim=-1).max()),
            "max_jump": flow_jump, "reference_max_jump": ref_jump,
            "roughness": flow_jump / ref_jump if ref_jump > 0 else float("nan")}


def density_grid(log_prob_fn: Callable[[Tensor], Tensor], n: int, box: Tuple[float, float] = BOX) -> Tensor:
    """``exp(log p)`` on the cell centres of an n x n grid: (n, n), axis 0 = y."""
    x, _ = grid_points(n, box)
    with torch.no_grad():
        return torch.cat([log_prob_fn(x[i:i + 16384]).exp() for i in range(0, len(x), 16384)]).reshape(n, n)


# --------------------------------------------------------------------------------------------- figure
def plot_toy(panels: Dict[str, Dict[str, Dict[str, Any]]], path, box: Tuple[float, float] = BOX) -> None:
    """Fig. 2 / SI-1: one row per problem, columns reference / spline / smooth; each panel the model's
    density (grey) with its force field (arrows, on the support only, NaN elsewhere). ``panels``:
    problem -> column name -> {"density": (n, n), "force": (m, m, 2)} numpy arrays. Arrows share one
    scale per row, set by the reference field."""
    import numpy as np

    from ..analysis.plots import force_field_2d

    grids, density = {}, {}
    ncols = max(len(cols) for cols in panels.values())
    scale = None
    for problem, cols in panels.items():
        for col, entry in cols.items():
            name = f"{problem}: {col}"
            grids[name] = entry["force"]
            density[name] = entry["density"]
            if scale is None:  # first panel of the first row is the reference: its 90th percentile
                ref = np.linalg.norm(entry["force"], axis=-1)  # arrow spans ~1.5 grid cells
                m = entry["force"].shape[0]
                scale = float(np.nanpercentile(ref, 90)) / (1.5 * (box[1] - box[0]) / m)
    extent = [box[0], box[1], box[0], box[1]]
    force_field_2d(grids, extent, path, density=density, ncols=ncols,
                   quiver_kw=dict(scale=scale, scale_units="xy", width=0.004, color="tab:red"))


# ---------------------------------------------------------------------------------------------- bench
def run_problem(problem: str, kinds: Sequence[str] = KINDS, n_side: int = 100, n_burnin: int = 1000,
                n_record: int = 10, mh_steps: Sequence[float] = (0.05, 0.2, 1.0), n_iter: int = 2500,
                batch_size: int = 512, lr: float = 5e-4, n_components: int = 16,
                hidden: Tuple[int, ...] = (64, 64), n_layers: int = 4, n_grid: int = 128,
                n_quiver: int = 32, support_kt: float = 4.0, seed: int = 0,
                progress: bool = True) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Sample ``problem``, train one flow per kind, evaluate. Returns (results, figure panels)."""
    import numpy as np

    energy = make_energy(problem)
    t0 = time.perf_counter()
    data, acc = sample_problem(energy, n_side, n_burnin, n_record, mh_steps, seed=seed, progress=progress)
    t_mh = time.perf_counter() - t0
    eval_data = data[torch.randperm(len(data), generator=torch.Generator().manual_seed(seed + 1))[:20000]]
    mask = support_mask(energy, n_grid, support_kt)
    ref_field = force_grid(energy.force, n_grid, energy.box)
    qmask = support_mask(energy, n_quiver, support_kt, nodes=True).numpy()

    def quiver_field(force_fn) -> "np.ndarray":
        f = force_grid(force_fn, n_quiver, energy.box, nodes=True).numpy()
        f[~qmask] = np.nan
        return f

    log_z = energy.log_partition()
    results: Dict[str, Any] = {
        "periodic": energy.periodic, "sigma": energy.sigma, "radii": energy.radii.tolist(),
        "alphas": energy.log_alphas.exp().tolist(), "n_samples": len(data), "mh_acceptance": acc,
        "mh_seconds": t_mh, "support_fraction": float(mask.float().mean()),
        "reference": {"nll": float(energy(eval_data.double()).mean()) + log_z},
        "flows": {}}
    panels: Dict[str, Dict[str, Any]] = {
        "reference": {"density": density_grid(lambda x: -energy(x.double()) - log_z, n_grid, energy.box).numpy(),
                      "force": quiver_field(energy.force)}}
    for i, kind in enumerate(kinds):
        torch.manual_seed(seed + 10 + i)
        flow = ToyFlow(kind, energy.periodic, n_layers, n_components, hidden, energy.box)
        t0 = time.perf_counter()
        losses = train_nll(flow, data, n_iter, batch_size, lr, seed=seed + 20 + i, progress=progress,
                           desc=f"{problem}/{kind}")
        t_train = time.perf_counter() - t0
        flow_field = force_grid(flow.force, n_grid, energy.box)
        entry = {"nll": mean_nll(flow, eval_data), "train_seconds": t_train,
                 "parameters": sum(p.numel() for p in flow.parameters()),
                 "loss_curve": losses[:: max(1, len(losses) // 100)]}
        entry.update(force_metrics(flow_field, ref_field, mask))
        results["flows"][kind] = entry
        panels[kind] = {"density": density_grid(flow.log_prob, n_grid, energy.box).numpy(),
                        "force": quiver_field(flow.force)}
    return results, panels


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    head = (f"{'problem':<8} {'flow':<9} {'NLL':>8} {'force RMSE':>11} {'max |dF|':>9} {'max jump':>9} "
            f"{'roughness':>9}")
    lines = [head, "-" * len(head)]
    for problem, res in results.items():
        ref_jump = next(iter(res["flows"].values()))["reference_max_jump"] if res["flows"] else float("nan")
        lines.append(f"{problem:<8} {'reference':<9} {res['reference']['nll']:8.4f} {0.0:11.2f} {0.0:9.2f} "
                     f"{ref_jump:9.2f} {1.0:9.2f}")
        for kind, e in res["flows"].items():
            lines.append(f"{problem:<8} {kind:<9} {e['nll']:8.4f} {e['force_rmse']:11.2f} "
                         f"{e['force_max_error']:9.2f} {e['max_jump']:9.2f} {e['roughness']:9.2f}")
    return "\n".join(lines)
