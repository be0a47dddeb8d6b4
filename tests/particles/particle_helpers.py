"""Helpers for the particle-flow tests: small random (non-trivial) flows made here."""
import torch

from openmm_smoothflow.particles.cnf import EquivariantCNF


def random_flow(n_particles: int, dim: int, hidden: int = 8, n_layers: int = 2, n_steps: int = 2,
                scale: float = 0.3, seed: int = 0) -> EquivariantCNF:
    """A float64 flow whose weights are perturbed away from the near-identity initialisation."""
    torch.manual_seed(seed)
    flow = EquivariantCNF(n_particles, dim, hidden=hidden, n_layers=n_layers, n_steps=n_steps).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow.eval()


def random_orthogonal(dim: int, g: torch.Generator, reflect: bool) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q
