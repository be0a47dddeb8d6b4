"""Transform cases shared by the transform and root-finding tests."""
import torch

from openmm_smoothflow.transforms import Affine, BumpMixture, RationalQuadraticSpline

F64 = torch.float64

FACTORIES = {
    "bump-exp2": lambda: BumpMixture(5, beta=2),
    "bump-exp1": lambda: BumpMixture(5),
    "bump-mono3": lambda: BumpMixture(5, ramp="monomial", order=3),
    "bump-legacy": lambda: BumpMixture(5, beta=2, legacy=True),  # models made before the paper's map
    "bump-legacy-circ": lambda: BumpMixture(5, circular=True, beta=2, legacy=True),
    "bump-exp2-circ": lambda: BumpMixture(5, circular=True, beta=2),
    "bump-exp1-circ": lambda: BumpMixture(5, circular=True),
    "bump-mono3-circ": lambda: BumpMixture(5, circular=True, ramp="monomial", order=3),
    "spline": lambda: RationalQuadraticSpline(6),
    "spline-circ": lambda: RationalQuadraticSpline(6, circular=True),
    "affine": lambda: Affine(),
    "affine-circ": lambda: Affine(circular=True),
}


def rand_params(t, batch, dim, scale=1.5, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(batch, dim, t.n_params, generator=g, dtype=F64)).to(dtype)
