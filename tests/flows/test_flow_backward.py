"""The hand-written backward pass of every flow layer against autograd of the same (one) forward: the IC
transform, the conditioner, the coupling layer and the whole generator (unit box, clamp and wall
included), in float64 (relative 1e-10) and float32, inside and outside the support."""
import pytest
import torch

from helpers import chain_topology, randomize
from openmm_smoothflow.flows.coupling import Conditioner, CouplingLayer, conditioner_backward, coupling_backward
from openmm_smoothflow.flows.generator import BoltzmannGenerator
from openmm_smoothflow.flows.ic import InternalCoordinates, zmatrix_from_topology
from openmm_smoothflow.transforms import BumpMixture

F64, F32 = torch.float64, torch.float32
REL = {F64: 1e-10, F32: 1e-4}  # max |analytic - autograd| / max |autograd|
SMALL = dict(hidden=[16, 16], n_torsion_layers=2, n_ic_layers=2)


def assert_relative(got, want, dtype, what=""):
    got, want = got.detach(), want.detach()
    assert torch.isfinite(got).all(), what
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    assert err <= REL[dtype] * scale, f"{what}: max |analytic - autograd| = {err:.3g}, scale {scale:.3g}"


def seeded(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- geometries
def geometry(case: str, positions: torch.Tensor, zmatrix, n: int = 3) -> torch.Tensor:
    """(n, N, 3) nm float64 positions of alanine dipeptide for one named case."""
    x = positions + 0.01 * torch.randn(n, *positions.shape, generator=seeded(3), dtype=F64)
    i0, i1, i2 = zmatrix.frame
    row = zmatrix.rows[3]
    if case == "near-equilibrium":
        return x
    if case == "stretched":  # a frame bond and a row bond far past the bond range (0.3 nm)
        x[:, i1] = x[:, i0] + 2.5 * (x[:, i1] - x[:, i0])
        x[:, row[0]] = x[:, row[1]] + 4.0 * (x[:, row[0]] - x[:, row[1]])
        return x
    if case == "compressed":  # bonds below 0.05 nm and an angle below its range
        x[:, i2] = x[:, i0] + 0.2 * (x[:, i2] - x[:, i0])
        x[:, row[0]] = x[:, row[1]] + 0.3 * (x[:, row[0]] - x[:, row[1]])
        return x
    if case == "near-linear":  # the angle of a row at 179.9 degrees
        i, j, k, _ = row
        axis = (x[:, j] - x[:, k]) / torch.linalg.norm(x[:, j] - x[:, k], dim=-1, keepdim=True)
        side = torch.linalg.cross(axis, torch.tensor([0.3, 0.5, 0.8], dtype=F64).expand_as(axis), dim=-1)
        x[:, i] = x[:, j] + 0.11 * (axis + 1.7e-3 * side / torch.linalg.norm(side, dim=-1, keepdim=True))
        return x
    if case == "scaled":  # everything 2.5 times larger: the longer bonds outside, angles and torsions unchanged
        return 2.5 * x
    raise ValueError(case)


GEOMETRIES = ["near-equilibrium", "stretched", "compressed", "near-linear", "scaled"]


# --------------------------------------------------------------------------------------------- IC
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("case", GEOMETRIES)
def test_ic_backward_equals_autograd(case, dtype, ala2, ala2_positions):
    zmatrix = zmatrix_from_topology(ala2.topology)
    ic = InternalCoordinates(zmatrix)
    x = geometry(case, ala2_positions, zmatrix).to(dtype)
    bonds, angles, torsions, logdet, cache = ic.forward_cached(x, True)
    g = [torch.randn(v.shape, generator=seeded(k), dtype=F64).to(dtype)
         for k, v in enumerate((bonds, angles, torsions))]
    for grad_logdet in (-1.0, 0.0, 2.5):
        got = ic.backward(g[0], g[1], g[2], grad_logdet, cache)
        xa = x.clone().requires_grad_(True)
        b, a, t, ld = ic(xa)
        total = (g[0] * b).sum() + (g[1] * a).sum() + (g[2] * t).sum() + grad_logdet * ld.sum()
        (want,) = torch.autograd.grad(total, xa)
        assert_relative(got, want, dtype, f"{case}, grad_logdet {grad_logdet}")


# -------------------------------------------------------------------------------------- conditioner
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("circular", [[True, True, True], [True, False, True, False], [False, False]],
                         ids=["circular", "mixed", "flat"])
def test_conditioner_backward_equals_autograd(circular, dtype):
    conditioner = randomize(Conditioner(circular, n_out=3, n_params=5, hidden=(16, 16)).double(), 0.5, seed=1)
    conditioner = conditioner.to(dtype)
    # the gathered inputs as a coupling layer passes them (circular ones twice: cos and sin of the same angle)
    v = torch.rand(4, len(circular), generator=seeded(2), dtype=F64).to(dtype)[:, conditioner.feature_idx]
    params, cache = conditioner.forward_cached(v, True)
    assert torch.equal(params, conditioner(v))
    grad = torch.randn(params.shape, generator=seeded(3), dtype=F64).to(dtype)
    got = conditioner_backward(grad, cache)
    va = v.clone().requires_grad_(True)
    (want,) = torch.autograd.grad((grad * conditioner(va)).sum(), va)
    assert_relative(got, want, dtype)
    assert float(want.abs().max()) > 1e-3  # not trivially zero (the last layer is not zero-initialised here)


# ----------------------------------------------------------------------------------- coupling layer
@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("region", ["inside", "outside"])
@pytest.mark.parametrize("out_circular", [False, True], ids=["interval", "circle"])
def test_coupling_backward_equals_autograd(out_circular, region, dtype):
    circular = [False] * 4 + [True] * 4
    cond, out = ([0, 1, 4, 5], [2, 3, 6]) if not out_circular else ([0, 1, 2, 4], [5, 6, 7])
    layer = CouplingLayer(BumpMixture(4, circular=out_circular), cond, out, circular, hidden=(16, 16))
    layer = randomize(layer.double(), 0.5, seed=4).to(dtype)
    u = torch.rand(5, 8, generator=seeded(5), dtype=F64)
    if region == "outside":  # the transformed coordinates past [0, 1] (a bump mixture is defined on R)
        u[:, out] = u[:, out] * 1.6 - 0.3
    u = u.to(dtype)
    u_out, logdet, cache = layer.forward_cached(u, True)
    assert torch.equal(u_out, layer(u)[0]) and torch.equal(logdet, layer(u)[1])
    grad = torch.randn(u.shape, generator=seeded(6), dtype=F64).to(dtype)
    got = coupling_backward(grad, cache)
    ua = u.clone().requires_grad_(True)
    ya, la = layer(ua)
    (want,) = torch.autograd.grad((grad * ya).sum() - la.sum(), ua)
    assert_relative(got, want, dtype)


# ---------------------------------------------------------------------------------------- generator
@pytest.fixture(scope="module")
def ala2_generator(ala2):
    return randomize(BoltzmannGenerator.from_topology(ala2.topology, **SMALL).double(), 0.1, seed=8)


def wall_energy(generator, x):
    with torch.no_grad():
        return generator._wall(generator._unit_box(x, False)[0])[1]


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("case", GEOMETRIES)
def test_generator_backward_equals_autograd(case, dtype, ala2_generator, ala2_positions):
    generator = ala2_generator.to(dtype)
    try:
        x = geometry(case, ala2_positions, generator.zmatrix).to(dtype)
        if case in ("stretched", "compressed", "scaled"):  # the case exercises the wall
            assert bool((wall_energy(generator, x) > 1.0).all())
        assert_backward_equals_autograd(generator, x, dtype, case)
    finally:
        generator.double()


def assert_backward_equals_autograd(generator, x, dtype, what=""):
    """``_energy_and_gradient`` against autograd of ``forward``: the same energy, gradients to REL; returns
    the autograd gradient."""
    with torch.no_grad():
        energy, got = generator._energy_and_gradient(x)
    xa = x.clone().requires_grad_(True)
    want_energy = generator(xa)
    (want,) = torch.autograd.grad(want_energy.sum(), xa)
    assert torch.equal(energy, want_energy.detach())
    assert_relative(got, want, dtype, what)
    return want


@pytest.mark.parametrize("dtype", [F64, F32])
def test_generator_backward_with_the_ring_restraint(dtype):
    """ACE-PRO-NME: the ring restraint (flows/rings.py) on the closing bond CG-CD, inside its range and
    0.05 nm past it, where its pull dominates the force."""
    from pathlib import Path

    from openmm import app, unit

    from openmm_smoothflow.flows.rings import ring_closures

    pro = app.PDBFile(str(Path(__file__).resolve().parent.parent / "data" / "ace-pro-nme.pdb"))
    x0 = torch.tensor(pro.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=F64)
    x = x0 + 0.003 * torch.randn(5, *x0.shape, generator=seeded(4), dtype=F64)
    generator = randomize(BoltzmannGenerator.from_topology(pro.topology, **SMALL).double(), 0.1, seed=3)
    generator.fit_ring_restraint(x[:2])
    a, b = ring_closures(generator.zmatrix)[0]
    x[2:, b] += 0.05 * (x[2:, b] - x[2:, a]) / torch.linalg.norm(x[2:, b] - x[2:, a], dim=-1, keepdim=True)
    want = assert_backward_equals_autograd(generator.to(dtype), x.to(dtype), dtype, "ring restraint")
    assert float(want[2:, b].norm(dim=-1).min()) > 1e3


def test_generator_backward_chain_topology_with_every_coordinate_outside():
    """A small chain: every bond and angle past its range at once (the wall everywhere)."""
    generator = randomize(BoltzmannGenerator.from_topology(chain_topology(6), **SMALL).double(), 0.3, seed=9)
    x = torch.randn(4, 6, 3, generator=seeded(10), dtype=F64)  # ~1 nm apart: bonds far past 0.3 nm
    u = generator._unit_box(x, False)[0]
    assert bool(((u < 0) | (u > 1))[:, generator.bounded].float().mean() > 0.3)
    with torch.no_grad():
        _, got = generator._energy_and_gradient(x)
    xa = x.clone().requires_grad_(True)
    (want,) = torch.autograd.grad(generator(xa).sum(), xa)
    assert_relative(got, want, F64)


def test_scripted_analytic_energy_equals_autograd(ala2_generator, ala2_positions):
    """What the export runs: the scripted generator in analytic-gradient mode, outside the support too."""
    import copy

    analytic = torch.jit.script(copy.deepcopy(ala2_generator).requires_grad_(False).use_analytic_gradient())
    x = torch.cat([geometry(c, ala2_positions, ala2_generator.zmatrix, n=1) for c in GEOMETRIES])
    xs, xa = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    e_script, e_auto = analytic(xs), ala2_generator(xa)
    (g_script,) = torch.autograd.grad(e_script.sum(), xs)
    (g_auto,) = torch.autograd.grad(e_auto.sum(), xa)
    torch.testing.assert_close(e_script, e_auto, atol=0, rtol=1e-14)
    assert_relative(g_script, g_auto, F64)
