"""Broken bonds of flow samples: every topology bond (ring-closing ones included) against the range
of its length in MD data.

A sample breaks a bond when its length lies outside [data min - tolerance, data max + tolerance]
(tolerance 0.03 nm by default). Reported: the fraction of samples with any broken bond, the fraction
per bond type (the element pair, e.g. "C-H") and the bond broken most often.
"""
from typing import Any, Dict

import numpy as np

TOLERANCE_NM = 0.03


def bond_lengths(positions: np.ndarray, bonds: np.ndarray) -> np.ndarray:
    """Lengths (frames, M) nm of ``bonds`` (M, 2) atom-index pairs in positions (frames, N, 3) nm."""
    x = np.asarray(positions, dtype=np.float64)
    return np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)


def broken_bond_metrics(samples: np.ndarray, data: np.ndarray, topology,
                        tolerance: float = TOLERANCE_NM) -> Dict[str, Any]:
    """Broken-bond figures of ``samples`` (n, N, 3) nm against MD frames ``data`` (F, N, 3) nm on
    ``topology``: ``broken_bond_fraction`` (samples with any bond outside the data's range +/-
    ``tolerance`` nm), ``broken_bond_fraction_by_type`` (per element pair) and ``broken_bond_worst``
    (the bond broken most often: its atoms, fraction, data range and median sample length, nm)."""
    from ..md.molecule import bond_array

    bonds = bond_array(topology)
    atoms = list(topology.atoms())
    if not len(bonds) or not len(samples):
        return {"broken_bond_fraction": 0.0, "broken_bond_fraction_by_type": {}, "bond_tolerance_nm": tolerance}
    ref = bond_lengths(data, bonds)
    lo, hi = ref.min(axis=0) - tolerance, ref.max(axis=0) + tolerance
    lengths = bond_lengths(samples, bonds)
    broken = ~((lengths >= lo) & (lengths <= hi))  # NaN lengths count as broken
    kinds = ["-".join(sorted(atoms[i].element.symbol if atoms[i].element is not None else "?" for i in pair))
             for pair in bonds]
    by_type = {kind: float(broken[:, [k == kind for k in kinds]].any(axis=1).mean()) for kind in sorted(set(kinds))}
    worst = int(broken.mean(axis=0).argmax())
    a, b = (atoms[int(i)] for i in bonds[worst])
    return {"broken_bond_fraction": float(broken.any(axis=1).mean()), "broken_bond_fraction_by_type": by_type,
            "broken_bond_worst": {"bond": f"{a.residue.name}{a.residue.index + 1}:{a.name}-"
                                          f"{b.residue.name}{b.residue.index + 1}:{b.name}",
                                  "fraction": float(broken[:, worst].mean()),
                                  "data_range_nm": [float(ref[:, worst].min()), float(ref[:, worst].max())],
                                  "sample_median_nm": float(np.nanmedian(lengths[:, worst]))},
            "bond_tolerance_nm": tolerance}
