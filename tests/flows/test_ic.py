"""Tests of the Z-matrix construction and the internal-coordinate transform (flows/zmatrix.py, flows/ic.py)."""
import math
from importlib import resources

import mdtraj as md
import numpy as np
import pytest
import torch

from openmm_smoothflow.flows.ic import (InternalCoordinates, UnitBox, ZMatrix, backbone_dihedrals,
                                        torsion_indices, zmatrix_from_topology)

PDB = str(resources.files("openmm_smoothflow") / "data" / "alanine-dipeptide.pdb")
PHI = (4, 6, 8, 14)
PSI = (6, 8, 14, 16)


@pytest.fixture(scope="module")
def traj():
    return md.load(PDB)


@pytest.fixture(scope="module")
def zmat(traj):
    return zmatrix_from_topology(traj.topology)


def perturbed(traj, n=16, noise=0.01, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.tensor(traj.xyz[0], dtype=torch.float64).expand(n, -1, -1)
    return (x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)).to(dtype)


def random_rotations(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.det(q)[:, None, None]  # proper rotations


def canonical(x, frame):
    """Remove the rigid motion: atom i0 at the origin, i1 on +x, i2 in the xy-plane with y > 0."""
    x0, x1, x2 = x[:, frame[0]], x[:, frame[1]], x[:, frame[2]]
    e1 = (x1 - x0) / torch.linalg.norm(x1 - x0, dim=-1, keepdim=True)
    v = x2 - x0
    v = v - (v * e1).sum(-1, keepdim=True) * e1
    e2 = v / torch.linalg.norm(v, dim=-1, keepdim=True)
    rot = torch.stack([e1, e2, torch.linalg.cross(e1, e2, dim=-1)], dim=1)
    return (x - x0[:, None]) @ rot.transpose(1, 2)


def wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


# ---------------------------------------------------------------------------------------- Z-matrix
def test_alanine_zmatrix_sizes_and_structure(traj, zmat):
    import openmm.app as app
    z_omm = zmatrix_from_topology(app.PDBFile(PDB).topology)
    assert z_omm == zmat  # openmm's standard residue bonds == mdtraj's bonds, deterministic result
    assert (zmat.n_bonds, zmat.n_angles, zmat.n_torsions, zmat.n_dof) == (21, 20, 19, 60)
    assert sorted(zmat.atom_order) == list(range(22))  # every atom placed exactly once
    bonds = {frozenset((a.index, b.index)) for a, b in traj.topology.bonds}
    i0, i1, i2 = zmat.frame
    assert frozenset((i0, i1)) in bonds and frozenset((i0, i2)) in bonds
    for i, j, k, l in zmat.rows:
        assert frozenset((i, j)) in bonds and frozenset((j, k)) in bonds
        # proper chain i-j-k-l, or an improper-type reference: a sibling bonded to j, or the frame
        # atoms (i1, i2) for a further child of the root i0
        assert frozenset((k, l)) in bonds or frozenset((j, l)) in bonds or (j, k, l) == zmat.frame
    ic = InternalCoordinates(zmat)
    b, a, t, ld = ic(torch.tensor(traj.xyz, dtype=torch.float64))
    assert b.shape == (1, 21) and a.shape == (1, 20) and t.shape == (1, 19) and ld.shape == (1,)


def test_phi_psi_explicit_and_equal_to_mdtraj(traj, zmat):
    rows = [tuple(r) for r in zmat.rows]
    assert PHI in rows or PHI[::-1] in rows
    assert PSI in rows or PSI[::-1] in rows
    assert backbone_dihedrals(zmat) == {"phi": [PHI], "psi": [PSI]}
    iphi, ipsi = torsion_indices(zmat, ["phi", "psi"])
    assert (iphi, ipsi) == tuple(torsion_indices(zmat, [PHI[::-1], PSI]))
    ic = InternalCoordinates(zmat)
    for x in (torch.tensor(traj.xyz, dtype=torch.float64), perturbed(traj, noise=0.03)):
        _, _, t, _ = ic(x)
        assert bool(((t > -math.pi) & (t <= math.pi)).all())
        tr = md.Trajectory(x.numpy().astype(np.float32), traj.topology)
        phi, psi = md.compute_phi(tr)[1][:, 0], md.compute_psi(tr)[1][:, 0]
        np.testing.assert_allclose(wrap(t[:, iphi].numpy() - phi), 0, atol=2e-5)
        np.testing.assert_allclose(wrap(t[:, ipsi].numpy() - psi), 0, atol=2e-5)
    with pytest.raises(ValueError, match="not an explicit torsion"):
        torsion_indices(zmat, [(0, 1, 4, 5)])


@pytest.mark.parametrize("frame, rows, n_atoms, match", [
    ((0, 1), [], None, "exactly 3 atoms"),
    ((0, 1, 1), [(2, 0, 1, 3)], None, "distinct"),
    ((0, 1, 2), [(3, 2, 1, 4), (4, 3, 2, 1)], None, "before they are placed"),
    ((0, 1, 2), [(3, 2, 1, 0), (3, 2, 1, 0)], None, "more than once"),
    ((0, 1, 2), [(2, 1, 0, 0)], None, "distinct"),
    ((0, 1, 2), [(3, 2, 1, 0)], 5, "never placed"),
    ((0, 1, 2), [(4, 2, 1, 0)], None, "never placed"),
    ((0, 1, 2), [(3, 2, 1, 0)], 3, "out of range"),
    ((0, 1, -1), [], 3, "out of range"),
    ((0, 1, 2), [(3, 2, 1)], None, "row 0"),
])
def test_invalid_user_zmatrix_raises(frame, rows, n_atoms, match):
    with pytest.raises(ValueError, match=match):
        ZMatrix(frame, rows, n_atoms=n_atoms)


def _small_topology(n_atoms, bonds):
    import openmm.app as app
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.element.carbon, res) for i in range(n_atoms)]
    for a, b in bonds:
        top.addBond(atoms[a], atoms[b])
    return top


def test_user_zmatrix_ring_and_disconnected_topology(zmat):
    z = ZMatrix(zmat.frame, zmat.rows)
    assert z == zmat and ZMatrix.from_dict(zmat.to_dict()) == zmat
    # a 6-ring with a substituent: the spanning tree drops one ring bond, 3N-6 ICs remain
    ring = zmatrix_from_topology(_small_topology(7, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (2, 6)]))
    assert (ring.n_bonds, ring.n_angles, ring.n_torsions) == (6, 5, 4) and sorted(ring.atom_order) == list(range(7))
    with pytest.raises(ValueError, match="disconnected"):
        zmatrix_from_topology(_small_topology(4, [(0, 1), (1, 2)]))


# ------------------------------------------------------------------------------------ IC transform
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_round_trip(traj, zmat, dtype, tol):
    ic = InternalCoordinates(zmat)
    x = perturbed(traj, noise=0.02)
    x = x @ random_rotations(len(x)).transpose(1, 2) + torch.randn(len(x), 1, 3, dtype=torch.float64)
    x = x.to(dtype)
    b, a, t, ld = ic(x)
    y, ld_inv = ic.inverse(b, a, t)
    assert y.dtype == dtype and y.shape == x.shape
    err = (y.double() - canonical(x.double(), zmat.frame)).abs().max().item()
    assert err < tol, err
    torch.testing.assert_close(ld_inv, -ld, rtol=0, atol=tol * 10)
    if dtype == torch.float64:
        b2, a2, t2, ld2 = ic(y)
        for u, v in ((b, b2), (a, a2), (wrap(t - t2), 0 * t), (ld, ld2)):
            torch.testing.assert_close(u, v, rtol=0, atol=1e-11)


def test_invariance_under_rigid_motions(traj, zmat):
    ic = InternalCoordinates(zmat)
    x = perturbed(traj, noise=0.02)
    y = x @ random_rotations(len(x), seed=5).transpose(1, 2) + 3 * torch.randn(len(x), 1, 3, dtype=torch.float64)
    for u, v in zip(ic(x), ic(y)):
        torch.testing.assert_close(wrap(u - v) if u.shape[1:] == (19,) else u - v, torch.zeros_like(u),
                                   rtol=0, atol=1e-10)
    # a reflection flips every torsion (sanity check that the test can see torsions at all)
    t_ref = ic(x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))[2]
    torch.testing.assert_close(wrap(t_ref + ic(x)[2]), torch.zeros_like(t_ref), rtol=0, atol=1e-10)


def chain5():
    """5-atom chain 0-1-2-3-4, frame centred on atom 1; random generic ICs (B=1)."""
    z = ZMatrix((1, 0, 2), [(3, 2, 1, 0), (4, 3, 2, 1)])
    g = torch.Generator().manual_seed(3)
    b = 0.1 + 0.1 * torch.rand(1, 4, generator=g, dtype=torch.float64)
    a = 0.8 + 1.5 * torch.rand(1, 3, generator=g, dtype=torch.float64)
    t = math.pi * (2 * torch.rand(1, 2, generator=g, dtype=torch.float64) - 1)
    return z, b, a, t


@pytest.mark.parametrize("system", ["chain5", "alanine"])
def test_logdet_equals_autograd_jacobian(system, traj, zmat):
    """Check the forward logdet against an autograd Jacobian of the inverse in frame coordinates.

    Frame coordinates q (3N-6 numbers): atom i0 at 0, i1 = (x1, 0, 0), i2 = (x2, y2, 0), the other
    atoms free; ``inverse`` produces exactly this parametrisation, so J = dq/d(ic) is square.
    A full configuration is x = t + R q with a translation t and a rotation R.  Parametrise R by the
    direction of atom i1 (solid angle Omega) and the rotation psi about that axis: atom i1 sits at
    r01 * u(Omega) -> volume r01^2 dr01 dOmega; atom i2 has, relative to that axis, axial coordinate
    x2 and radial coordinate y2 at azimuth psi -> volume dx2 * y2 dy2 dpsi; every other atom is moved
    by the volume-preserving rotation R.  Hence
        d^{3N}x = d^3t dOmega dpsi * (r01^2 y2) * d^{3N-6}q.
    With the Cartesian energy u(x) = -log p_ic(ic) - logdet (translations and rotations integrated
    out, constant 8 pi^2 V dropped), the density of q is p_q = exp(-u) r01^2 y2 and also
    p_q = p_ic / |det J|, so   logdet_forward = -log|det J| - log(r01^2 * y2),  y2 = r02 sin(theta_102).
    """
    if system == "chain5":
        z, b, a, t = chain5()
    else:
        z = zmat
        b, a, t, _ = InternalCoordinates(zmat)(perturbed(traj, n=1, noise=0.02))
    ic = InternalCoordinates(z)
    nb, na = z.n_bonds, z.n_angles
    i0, i1, i2 = z.frame
    rest = [i for i in range(z.n_atoms) if i not in z.frame]

    def frame_coords(v):
        x, _ = ic.inverse(v[None, :nb], v[None, nb:nb + na], v[None, nb + na:])
        return torch.cat([x[0, i1, :1], x[0, i2, :2], x[0, rest].reshape(-1)])

    v = torch.cat([b[0], a[0], t[0]])
    jac = torch.autograd.functional.jacobian(frame_coords, v)
    assert jac.shape == (z.n_dof, z.n_dof)
    x, ld_inv = ic.inverse(b, a, t)
    assert abs(x[0, i0]).max() == 0 and abs(x[0, i1, 1:]).max() == 0 and x[0, i2, 2] == 0 and x[0, i2, 1] > 0
    orbit = torch.log(x[0, i1, 0] ** 2 * x[0, i2, 1])
    expected = -torch.linalg.slogdet(jac)[1] - orbit
    ld = ic(x)[3][0]
    torch.testing.assert_close(ld, expected, rtol=0, atol=1e-9)
    torch.testing.assert_close(ld_inv[0], -expected, rtol=0, atol=1e-9)


def test_torchscript_equals_eager(traj, zmat):
    ic = InternalCoordinates(zmat)
    sc = torch.jit.script(ic)
    for dtype in (torch.float64, torch.float32):
        x = perturbed(traj, noise=0.02, dtype=dtype)
        for u, v in zip(ic(x), sc(x)):
            assert u.dtype == dtype
            torch.testing.assert_close(u, v, rtol=0, atol=0)
    b, a, t, _ = ic(x)
    box = torch.jit.script(ic.unit_box)
    for u, v in zip(ic.unit_box(b, a, t), box(b, a, t)):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    for u, v in zip(ic.unit_box.inverse(b, a, t), box.inverse(b, a, t)):
        torch.testing.assert_close(u, v, rtol=0, atol=0)


def test_unit_box(traj, zmat):
    ic = InternalCoordinates(zmat, bond_range=(0.05, 0.3), angle_range=(0.15 * math.pi, math.pi))
    assert {"unit_box.bond_lo", "unit_box.bond_hi", "unit_box.angle_lo", "unit_box.angle_hi"} <= set(ic.state_dict())
    x = perturbed(traj, noise=0.005)
    b, a, t, _ = ic(x)
    ub, ua, ut, ld = ic.unit_box(b, a, t)
    for u in (ub, ua, ut):
        assert bool(((u >= 0) & (u <= 1)).all())
    assert bool((ut < 1).all())
    torch.testing.assert_close(ub, (b - 0.05) / 0.25)
    torch.testing.assert_close(ua, (a - 0.15 * math.pi) / (0.85 * math.pi))
    expected = -(21 * math.log(0.25) + 20 * math.log(0.85 * math.pi) + 19 * math.log(2 * math.pi))
    torch.testing.assert_close(ld, torch.full((16,), expected, dtype=torch.float64))
    b2, a2, t2, ld2 = ic.unit_box.inverse(ub, ua, ut)
    torch.testing.assert_close(b2, b, rtol=0, atol=1e-14)
    torch.testing.assert_close(a2, a, rtol=0, atol=1e-14)
    torch.testing.assert_close(wrap(t2 - t), torch.zeros_like(t), rtol=0, atol=1e-14)
    torch.testing.assert_close(ld2, -ld)
    # exported ranges: the values come from the buffers, not from constants
    box = UnitBox(2, 1, 1, bond_range=(0.1, 0.2), angle_range=([0.0], [math.pi]))
    ub, ua, ut, _ = box(torch.tensor([[0.15, 0.3]]), torch.tensor([[math.pi / 2]]), torch.tensor([[math.pi]]))
    torch.testing.assert_close(ub, torch.tensor([[0.5, 2.0]]))
    torch.testing.assert_close(ua, torch.tensor([[0.5]]))
    assert 0 <= ut.item() < 1
    with pytest.raises(ValueError, match="hi > lo"):
        UnitBox(1, 1, 1, bond_range=(0.3, 0.1))


def _collinear_cases():
    x = torch.tensor([[0.15, 0.0, 0.0], [0.0, 0.0, 0.0], [-0.15, 0.0, 0.0], [-0.2, 0.1, 0.05]], dtype=torch.float64)
    frame_linear = x.clone()                                    # angle 0-1-2 = pi (frame), torsion undefined
    row_linear = x.clone()
    row_linear[0] = torch.tensor([0.1, 0.1, 0.0], dtype=torch.float64)
    row_linear[3] = torch.tensor([-0.3, 0.0, 0.0], dtype=torch.float64)  # angle 3-2-1 = pi
    coincident = row_linear.clone()
    coincident[3] = coincident[2]                                   # zero bond
    return [frame_linear, row_linear, coincident]


@pytest.mark.parametrize("case", range(3))
def test_degenerate_geometry_is_finite(case):
    z = ZMatrix((1, 0, 2), [(3, 2, 1, 0)])
    ic = InternalCoordinates(z)
    for module in (ic, torch.jit.script(ic)):
        for dtype in (torch.float64, torch.float32):
            x = _collinear_cases()[case][None].to(dtype).requires_grad_(True)
            b, a, t, ld = module(x)
            ub, ua, ut, _ = ic.unit_box(b, a, t)
            energy = -ld.sum() + (ub ** 2).sum() + (ua ** 2).sum() + torch.cos(2 * math.pi * ut).sum() + t.sum()
            (grad,) = torch.autograd.grad(energy, x)
            for v in (b, a, t, ld, energy, grad):
                assert bool(torch.isfinite(v).all()), (case, dtype, v)
    x = _collinear_cases()[case][None]
    b, a, t, _ = ic(x)
    y, ld = ic.inverse(b, a, t)
    assert bool(torch.isfinite(y).all() and torch.isfinite(ld).all())
    if case < 2:
        assert a.max().item() == pytest.approx(math.pi, abs=1e-6)


def test_alanine_collinear_atoms_finite(traj, zmat):
    """Make an amide H collinear with N and CA (angle H-N-CA = pi) and the frame angle N-CA-C = pi."""
    x = torch.tensor(traj.xyz, dtype=torch.float64)
    n, ca, c, h = x[0, 6].clone(), x[0, 8].clone(), x[0, 14], 7
    x[0, h] = n + 0.1 * (n - ca) / torch.linalg.norm(n - ca)
    x[0, 14] = ca + torch.linalg.norm(c - ca) * (ca - n) / torch.linalg.norm(ca - n)
    x.requires_grad_(True)
    ic = torch.jit.script(InternalCoordinates(zmat))
    b, a, t, ld = ic(x)
    (grad,) = torch.autograd.grad(ld.sum() + torch.sin(t).sum(), x)
    assert bool(torch.isfinite(ld).all() and torch.isfinite(grad).all() and torch.isfinite(t).all())


def test_induced_density_is_normalised():
    """A normalised IC density on a 4-atom chain induces a normalised density of the 6 frame coordinates.

    p_ic: bonds ~ U[0.1, 0.2] nm, angles ~ U[0.6, 2.6] rad, torsion ~ (1 + 0.8 cos phi) / 2pi.
    p_q(q) = p_ic(ic(q)) exp(logdet + log(r01^2 y2)) (see test_logdet_equals_autograd_jacobian).
    Importance sampling with a uniform proposal covering the support: x1 ~ U[0.05, 0.25],
    (x2, y2) ~ U[-0.25, 0.25] x U[0, 0.25], atom 3 ~ atom 2 + U[-0.25, 0.25]^3.
    """
    z = ZMatrix((1, 0, 2), [(3, 2, 1, 0)])
    ic = InternalCoordinates(z)
    g = torch.Generator().manual_seed(11)
    m = 400_000
    u = torch.rand(m, 6, generator=g, dtype=torch.float64)
    x1 = 0.05 + 0.2 * u[:, 0]
    x2, y2 = -0.25 + 0.5 * u[:, 1], 0.25 * u[:, 2]
    log_g = -math.log(0.2 * 0.125 * 0.125)
    x = torch.zeros(m, 4, 3, dtype=torch.float64)
    x[:, 0, 0] = x1                      # frame (i0, i1, i2) = (1, 0, 2): atom 1 is the origin
    x[:, 2, 0], x[:, 2, 1] = x2, y2
    x[:, 3] = x[:, 2] + (-0.25 + 0.5 * u[:, 3:])
    b, a, t, ld = ic(x)
    inside = ((b >= 0.1) & (b <= 0.2)).all(1) & ((a >= 0.6) & (a <= 2.6)).all(1)
    log_pic = 3 * math.log(10.0) + 2 * math.log(0.5) + torch.log((1 + 0.8 * torch.cos(t[:, 0])) / (2 * math.pi))
    log_pq = log_pic + ld + torch.log(x1 ** 2 * y2)
    w = torch.where(inside, torch.exp(log_pq - log_g), torch.zeros_like(x1))
    mean, se = w.mean().item(), (w.std() / math.sqrt(m)).item()
    assert se < 0.03, se
    assert abs(mean - 1.0) < 3 * se, (mean, se)
