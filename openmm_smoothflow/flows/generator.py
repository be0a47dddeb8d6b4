"""The smooth Boltzmann generator of the paper (SI-2.4), for alanine dipeptide or any small molecule.

Density direction (analytic, TorchScript-able, what MD needs):

    positions (B, N, 3) nm
      -> InternalCoordinates: bonds nm, angles rad, torsions rad, log|det| of the IC change of variables
      -> unit box u (B, 3N-6): bonds and angles by fixed linear maps over stored ranges, torsions
         (t + pi) / 2pi on the circle
      -> coupling layers (analytic CDF maps) -> z, uniform base density on [0, 1]^(3N-6)
      -> u(x) = -log p(x) in kT, + R(x) for molecules with rings (flat-bottomed restraint on the
         ring-closing bonds and angles, ``flows/rings.py``; zero on the training data)

Sampling (z -> x) runs the layers backwards with root-finding inverses and implicit gradients.

Architecture in the sampling direction, as SI-2.4: torsions split into two channels (contiguous halves
of the Z-matrix's torsions, with each backbone phi and psi in different channels, ``torsion_channels``),
8 circular coupling layers between them; 4 coupling layers between bonds and angles; angles conditioned on all torsions;
bonds on angles and torsions; fixed maps; IC -> Cartesian. The density direction runs this list in
reverse.

Outside the support (a bond or angle past its range): the transforms see the clamped value and a
quadratic wall ``WALL_KT * excess^2`` (in kT, excess in unit-box units) is added, so energy and forces
stay finite; ``count_outside`` counts such configurations.
"""

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..transforms import Affine, BumpMixture, RationalQuadraticSpline
from ..transforms.base import ElementwiseTransform
from .coupling import CouplingLayer, coupling_backward
from .ic import InternalCoordinates, ZMatrix
from .rings import RingRestraint, rejection_sample, ring_restraint_pairs

KINDS = ("smooth", "spline", "affine")
WALL_KT = 1.0e4  # kT per (unit-box unit)^2 outside [0, 1]; 0.01 nm past a bond range costs ~16 kT
CONFIG_VERSION = 2
# what a stored config without "version" (a model made before version 2) meant by the keys it lacks
LEGACY_CONFIG = dict(version=1, conditioner_groups=False, conditioner_init="default", zero_last=True,
                     torsion_split="alternate")
LEGACY_KEYS = ("kind", "n_components", "beta", "hidden", "n_torsion_layers", "n_ic_layers", "inverted",
               "temperature", "bond_range", "angle_range")


def make_transform(kind: str, circular: bool, n_components: int = 8, beta: int = 1,
                   legacy: bool = False) -> ElementwiseTransform:
    """The elementwise transform of a flow ``kind``: smooth (bump mixture), spline (C^1 RQ) or affine.
    ``legacy``: the bump parametrisation of models made before config version 2."""
    if kind == "smooth":
        return BumpMixture(n_components=n_components, circular=circular, ramp="exp", beta=beta, legacy=legacy)
    if kind == "spline":
        return RationalQuadraticSpline(n_bins=n_components, circular=circular)
    if kind == "affine":
        return Affine(circular=circular)
    raise ValueError(f"unknown flow kind {kind!r}; choose one of {KINDS}")


def default_config(**overrides: Any) -> Dict[str, Any]:
    """Hyper-parameters of SI-2.4 (all JSON-able, stored in checkpoints and exports).

    ``conditioner_groups``: one MLP per group of a transform's params (``transform.param_groups``; the
    bump mixture's [a, b, c] | slopes | weights: three MLPs per layer, 758,168 parameters for alanine
    dipeptide as SI-2.4); ``conditioner_init``: "default" | "siren" | "siren30" (``coupling._mlp``);
    ``zero_last``: conditioners' output layers start at zero; ``torsion_split``: "backbone"
    (``torsion_channels``) or "alternate" (even | odd torsions, models before version 2).
    A stored complete config without ``version`` is read as version 1 (``LEGACY_CONFIG``)."""
    config = dict(kind="smooth", n_components=8, beta=1, hidden=[64, 64], n_torsion_layers=8,
                  n_ic_layers=4, inverted=False, temperature=300.0,
                  bond_range=[0.05, 0.3], angle_range=[0.15 * math.pi, math.pi],
                  version=CONFIG_VERSION, conditioner_groups=True, conditioner_init="default", zero_last=True,
                  torsion_split="backbone")
    unknown = set(overrides) - set(config)
    if unknown:
        raise ValueError(f"unknown generator options: {sorted(unknown)}")
    if "version" not in overrides and all(key in overrides for key in LEGACY_KEYS):
        overrides = {**LEGACY_CONFIG, **overrides}  # a stored config of a model made before version 2
    config.update(overrides)
    if config["torsion_split"] not in ("backbone", "alternate"):
        raise ValueError(f"torsion_split must be 'backbone' or 'alternate', not {config['torsion_split']!r}")
    return config


def torsion_channels(zmatrix: ZMatrix, split: str = "backbone") -> Tuple[List[int], List[int]]:
    """The two torsion channels of the torsion coupling layers, as torsion indices (0 .. n_torsions - 1).

    "backbone": every backbone phi in the first channel and every psi in the second (found by atom names,
    ``zmatrix.backbone_dihedrals``), so the coupling layers condition phi and psi on each other; the other
    torsions fill the first channel up to half of them, in Z-matrix order, then the second (contiguous
    halves, as the paper's reference code, when the Z-matrix names no backbone). "alternate": even | odd."""
    from .zmatrix import backbone_dihedrals

    n = zmatrix.n_torsions
    if split == "alternate":
        return list(range(0, n, 2)), list(range(1, n, 2))
    first: List[int] = []
    second: List[int] = []
    try:
        named = backbone_dihedrals(zmatrix)
        for name, channel in (("phi", first), ("psi", second)):
            for quad in named[name]:
                try:
                    channel.append(zmatrix.torsion_index(quad))
                except ValueError:  # not an explicit torsion of this Z-matrix
                    pass
    except ValueError:  # no atom names: plain contiguous halves
        pass
    for i in range(n):
        if i not in first and i not in second:
            (first if len(first) < n // 2 else second).append(i)
    return sorted(first), sorted(second)


class BoltzmannGenerator(nn.Module):
    """A normalizing flow over the internal coordinates of one molecule.

    ``forward(x)`` = ``energy(x)``: positions (B, N, 3) nm -> u(x) = -log p(x) (B,) in kT, where p is
    a density over Cartesian space with rigid motions factored out. ``temperature`` (K) is what the
    exported energy is scaled by (u * kT in kJ/mol).
    """

    inverted: bool
    analytic_gradient: bool
    temperature: float
    wall_kt: float
    n_bonds: int
    n_angles: int
    n_dims: int
    __jit_ignored_attributes__ = ["config", "zmatrix", "elements", "rootfind_tol"]

    def __init__(self, zmatrix: ZMatrix, elements: Sequence[str], config: Optional[Dict[str, Any]] = None):
        super().__init__()
        config = default_config(**(config or {}))
        self.config = config
        self.zmatrix = zmatrix
        self.elements = list(elements)
        self.inverted = bool(config["inverted"])
        self.temperature = float(config["temperature"])
        self.wall_kt = WALL_KT
        self.ic = InternalCoordinates(zmatrix, bond_range=tuple(config["bond_range"]),
                                      angle_range=tuple(config["angle_range"]))
        nb, na, nt = self.ic.n_bonds, self.ic.n_angles, self.ic.n_torsions
        self.n_bonds, self.n_angles, self.n_dims = nb, na, nb + na + nt
        self.register_buffer("bounded", torch.tensor([True] * (nb + na) + [False] * nt))
        self.rings = RingRestraint(ring_restraint_pairs(zmatrix))  # R = 0 until fit_ring_restraint
        self.layers = nn.ModuleList(self._build_layers(nb, na, torsion_channels(zmatrix, config["torsion_split"]),
                                                       config))
        self.analytic_gradient = False  # see use_analytic_gradient
        # residual |f(x) - y| of root-finding inverses; None: 1e-10 in float64, 1e-6 in float32
        self.rootfind_tol = None

    @classmethod
    def from_topology(cls, topology, **config: Any) -> "BoltzmannGenerator":
        """A generator for the molecule of an OpenMM or mdtraj ``topology`` (Z-matrix built automatically)."""
        from .ic import zmatrix_from_topology

        elements = [atom.element.symbol for atom in topology.atoms()]
        return cls(zmatrix_from_topology(topology), elements, config)

    # ---- architecture ------------------------------------------------------------------------------
    @staticmethod
    def _build_layers(nb: int, na: int, channels: Tuple[List[int], List[int]],
                      config: Dict[str, Any]) -> List[CouplingLayer]:
        nt = len(channels[0]) + len(channels[1])
        bonds = list(range(nb))
        angles = list(range(nb, nb + na))
        torsions = list(range(nb + na, nb + na + nt))
        circular = [False] * (nb + na) + [True] * nt
        hidden = tuple(config["hidden"])
        legacy = config["version"] < 2

        def layer(cond: List[int], out: List[int]) -> CouplingLayer:
            transform = make_transform(config["kind"], circular[out[0]], config["n_components"], config["beta"],
                                       legacy)
            groups = getattr(transform, "param_groups", None) if config["conditioner_groups"] else None
            return CouplingLayer(transform, cond, out, circular, hidden, inverted=config["inverted"],
                                 groups=groups, init=config["conditioner_init"], zero_last=config["zero_last"])

        # the sampling direction's first torsion layer transforms channel_a conditioned on channel_b
        channel_a = [nb + na + i for i in channels[0]]
        channel_b = [nb + na + i for i in channels[1]]
        sampling_order: List[CouplingLayer] = []
        for i in range(config["n_torsion_layers"] if channel_a and channel_b else 0):  # one torsion: no split
            sampling_order.append(layer(channel_b, channel_a) if i % 2 == 0 else layer(channel_a, channel_b))
        for i in range(config["n_ic_layers"]):
            sampling_order.append(layer(bonds, angles) if i % 2 == 0 else layer(angles, bonds))
        sampling_order.append(layer(torsions, angles))
        sampling_order.append(layer(angles + torsions, bonds))
        return sampling_order[::-1]  # stored in the density direction

    # ---- density direction (analytic, scripted) ----------------------------------------------------
    def _unit_box(self, x: Tensor, need_cache: bool) -> Tuple[Tensor, Tensor, List[Tensor]]:
        """positions (B, N, 3) -> unit-box coordinates (B, D), log|det| (B,) of x -> u, and the IC cache
        (``[]`` unless ``need_cache``)."""
        bonds, angles, torsions, logdet, cache = self.ic.forward_cached(x, need_cache)
        ub, ua, ut, logdet_box = self.ic.unit_box(bonds, angles, torsions)
        return torch.cat([ub, ua, ut], dim=1), logdet + logdet_box, cache

    def _wall(self, u: Tensor) -> Tuple[Tensor, Tensor]:
        """Clamp bounded coordinates into [0, 1]; the quadratic wall energy (B,) in kT for the excess."""
        clamped = torch.where(self.bounded, u.clamp(0.0, 1.0), u)
        wall = self.wall_kt * ((u - clamped) ** 2).sum(dim=1)
        return clamped, wall

    def _energy(self, x: Tensor, need_cache: bool) -> Tuple[Tensor, List[List[Tensor]]]:
        """The density direction, once: u(x) (B,) in kT and, if ``need_cache``, what ``_backward`` needs:
        ``[IC cache, [u_box, clamped], ring-restraint cache, one cache per coupling layer...]`` (else ``[]``).
        u = -log q + wall + R, R the ring restraint (``flows.rings``; absent without rings)."""
        u_box, logdet, ic_cache = self._unit_box(x, need_cache)
        u, wall = self._wall(u_box)
        ring_cache: List[Tensor] = []
        if self.rings.n_pairs > 0:
            restraint, ring_cache = self.rings.forward_cached(x, need_cache)
            wall = wall + restraint
        caches: List[List[Tensor]] = []
        if need_cache:
            caches += [ic_cache, [u_box, u], ring_cache]
        for layer in self.layers:
            u, ld, cache = layer.forward_cached(u, need_cache)
            logdet = logdet + ld
            if need_cache:
                caches.append(cache)
        return wall - logdet, caches

    def _backward(self, caches: List[List[Tensor]]) -> Tensor:
        """The gradient of ``_energy`` w.r.t. the positions (B, N, 3) from its caches, a reverse pass written
        out: coupling layers, the clamp and the wall, the unit box, the internal coordinates (energy: -logdet),
        and the ring restraint."""
        u_box, clamped = caches[1][0], caches[1][1]
        grad = torch.zeros_like(u_box)
        for i in range(len(caches) - 1, 2, -1):
            grad = coupling_backward(grad, caches[i])
        grad = torch.where(clamped == u_box, grad, torch.zeros_like(grad)) + (2.0 * self.wall_kt) * (u_box - clamped)
        nb, na = self.n_bonds, self.n_angles
        grad_b, grad_a, grad_t = self.ic.unit_box.backward(grad[:, :nb], grad[:, nb:nb + na], grad[:, nb + na:])
        grad_x = self.ic.backward(grad_b, grad_a, grad_t, -1.0, caches[0])
        if len(caches[2]) > 0:
            grad_x = grad_x + self.rings.backward(caches[2], self.ic.n_atoms)
        return grad_x

    def forward(self, x: Tensor) -> Tensor:
        if self.analytic_gradient and x.requires_grad and torch.is_grad_enabled():
            with torch.no_grad():  # constants for autograd: a clone, as graph optimisers drop detach()
                x0 = x.clone()
                energy, grad = self._energy_and_gradient(x0)
            # the value is the energy; the zero-valued term carries its gradient (first order only)
            return energy + (grad * (x - x0)).sum(dim=(1, 2))
        return self._energy(x, False)[0]

    def _energy_and_gradient(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``forward`` (B,) and its gradient w.r.t. ``x`` (B, N, 3) without an autograd graph (call it under
        ``torch.no_grad()``): ``_energy`` with its caches, then ``_backward``."""
        energy, caches = self._energy(x, True)
        return energy, self._backward(caches)

    @torch.jit.unused
    def use_analytic_gradient(self, enable: bool = True) -> "BoltzmannGenerator":
        """Compute ``forward``'s gradient w.r.t. positions by a reverse pass written out (internal coordinates,
        coupling layers; ``_energy_and_gradient``) instead of autograd: several times faster at batch 1,
        what MD exports use.

        The energy is unchanged and its first derivatives agree with autograd to rounding, but the
        graph it leaves is first order: no second derivatives (force-matching training, Hessians)
        and no gradients w.r.t. the parameters. Needs transforms with ``has_jacobian`` and the
        density-direction orientation."""
        if enable and (self.inverted or not all(layer.transform.has_jacobian for layer in self.layers)):
            raise ValueError("the analytic gradient needs the density orientation and transforms with "
                             "analytic derivatives (forward_cached with need_cache; the smooth flow)")
        self.analytic_gradient = bool(enable)
        return self

    def energy(self, x: Tensor) -> Tensor:
        """u(x) = -log p(x) in kT, (B,), for positions (B, N, 3) nm."""
        return self.forward(x)

    @torch.jit.unused
    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) (B,), p a density over Cartesian space (nm^-(3N-6)) with rigid motions quotiented out."""
        self._set_rootfind_tol(x.dtype)  # used only by the inverted orientation
        return -self.forward(x)

    @torch.jit.unused
    def _set_rootfind_tol(self, dtype: torch.dtype) -> None:
        tol = self.rootfind_tol or (1e-10 if dtype == torch.float64 else 1e-6)
        for layer in self.layers:
            layer.transform.rootfind_tol = tol

    @torch.jit.unused
    def force(self, x: Tensor, create_graph: bool = False) -> Tensor:
        """-grad u in kT/nm, (B, N, 3)."""
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.forward(x).sum(), x, create_graph=create_graph)
        return -grad

    @torch.jit.unused
    def count_outside(self, x: Tensor) -> int:
        """How many configurations of the batch have a bond or angle outside the model's ranges."""
        with torch.no_grad():
            u, _, _ = self._unit_box(x, False)
            return int(((u < 0) | (u > 1)).logical_and(self.bounded).any(dim=1).sum())

    # ---- sampling direction (root finding) ---------------------------------------------------------
    @torch.jit.unused
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
        """n samples: positions (n, N, 3) nm in the fixed global frame, and their log p(x) (n,).

        Gradients flow to the parameters through root finding with implicit gradients (reverse KL).
        """
        param = next(self.parameters())
        z = torch.rand(n, self.n_dims, generator=generator, dtype=param.dtype, device=param.device)
        return self.sample_from(z)

    @torch.jit.unused
    def sample_from(self, z: Tensor) -> Tuple[Tensor, Tensor]:
        """Map base samples z (n, D) in [0, 1]^D to positions; returns (x, log p(x))."""
        u, log_q = z, torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        self._set_rootfind_tol(z.dtype)
        for layer in self.layers[::-1]:
            u, ld = layer.inverse(u)
            log_q = log_q - ld
        nb, na = self.n_bonds, self.n_angles
        bonds, angles, torsions, ld_box = self.ic.unit_box.inverse(u[:, :nb], u[:, nb:nb + na], u[:, nb + na:])
        x, ld_ic = self.ic.inverse(bonds, angles, torsions)
        return x, log_q - ld_box - ld_ic

    # ---- rings (flows/rings.py) -------------------------------------------------------------------
    @torch.jit.unused
    def fit_ring_restraint(self, positions: Tensor, margin: float = 0.0) -> "BoltzmannGenerator":
        """Set the flat bottom of the ring restraint to the range of the training ``positions`` (B, N, 3)
        nm (+- ``margin`` nm), so that R = 0 on every training frame; a no-op without rings."""
        self.rings.fit(positions, margin)
        return self

    @torch.jit.unused
    def sample_restrained(self, n: int, generator: Optional[torch.Generator] = None,
                          max_draws: Optional[int] = None, chunk: int = 500) -> Tuple[Tensor, Tensor, Dict[str, float]]:
        """n exact samples of the density of ``energy`` with rings, q_R = q exp(-R) / Z_R (rejection:
        ``flows.rings.rejection_sample``): positions (n, N, 3) nm, log q_R (n,), and
        ``{"acceptance", "log_z", "log_z_se", "draws"}``; ``energy(x) = -log q_R(x) - log_z``. Without
        ring pairs it is ``sample`` in chunks of at most ``chunk`` (acceptance 1, log_z 0)."""
        if self.rings.n_pairs == 0:
            parts = [self.sample(min(chunk, n - start), generator) for start in range(0, n, chunk)]
            x, log_q = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            return x, log_q, {"acceptance": 1.0, "log_z": 0.0, "log_z_se": 0.0, "draws": float(n)}
        return rejection_sample(lambda m: self.sample(m, generator), self.rings, n, generator,
                                max_draws=max_draws)

    # ---- description -------------------------------------------------------------------------------
    @torch.jit.unused
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @torch.jit.unused
    def metadata(self) -> Dict[str, Any]:
        """What an exported model carries about itself (JSON-able)."""
        return dict(kind=self.config["kind"], atom_count=len(self.elements), elements=self.elements,
                    temperature=self.temperature, bond_range=self.config["bond_range"],
                    angle_range=self.config["angle_range"], config=self.config,
                    zmatrix=self.zmatrix.to_dict(), n_parameters=self.n_parameters())
