"""Elementwise bijections of [0, 1] and of the circle, and root-finding inversion.

Every transform maps ``x`` (B, D) and raw conditioner outputs ``params`` (B, D, n_params) to
``(f(x), log f'(x))`` (see ``base.ElementwiseTransform`` and ARCHITECTURE.md).
"""
from .affine import Affine
from .base import ElementwiseTransform
from .bump import BumpMixture
from .ramps import exp_ramp, generalized_sigmoid, monomial_ramp
from .rootfind import implicit_inverse, multibin_bisection, rootfind_inverse
from .spline import RationalQuadraticSpline

__all__ = [
    "Affine",
    "BumpMixture",
    "ElementwiseTransform",
    "RationalQuadraticSpline",
    "exp_ramp",
    "generalized_sigmoid",
    "implicit_inverse",
    "monomial_ramp",
    "multibin_bisection",
    "rootfind_inverse",
]
