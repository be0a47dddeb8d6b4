"""Helpers shared by the tests: ``from helpers import TINY_MODEL, chain_topology, randomize``.

(Not in ``conftest.py``: with a ``conftest.py`` in several test folders, ``import conftest`` finds
whichever pytest loaded last.)"""
import torch
from openmm import app


def chain_topology(n_atoms: int = 5) -> app.Topology:
    """A linear chain of carbons, bonded in order (a small molecule for exact tests)."""
    top = app.Topology()
    residue = top.addResidue("CHN", top.addChain())
    atoms = [top.addAtom(f"C{i}", app.element.carbon, residue) for i in range(n_atoms)]
    for a, b in zip(atoms, atoms[1:]):
        top.addBond(a, b)
    return top


def randomize(generator, scale: float = 0.3, seed: int = 0):
    """Give every conditioner's (zero-initialised) last layer random weights: a non-trivial flow."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in generator.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return generator


TINY_MODEL = {"hidden": [16, 16], "n_torsion_layers": 2, "n_ic_layers": 2}
