"""Export a trained particle flow to ONE TorchScript energy file, the molecular exports' format.

The file has the contract of the molecular exports (:mod:`openmm_smoothflow.potential.torchscript`,
same ``FORMAT``): ``forward(positions (N, 3) nm [, boxvectors]) -> energy (kJ/mol)`` and a JSON
``metadata`` attribute (``format``, ``kind``, ``atom_count``, ``elements``, ``temperature``, ``config``,
``provenance``, ...), so :class:`openmm_smoothflow.potential.FlowPotential` and its TorchForce backend
load it unchanged. Particle clusters are not periodic: box vectors are refused.

energy = kT * u(x / L), with u = -log q the flow's NLL in reduced units (exact log-determinant of
the fixed-step RK4 map; :mod:`.cnf`), L the reduced length in nm and kT = k_B T at the model's temperature
(:data:`.systems.UNITS`). So ``energy / kT`` on a test configuration is exactly the NLL of the tables
(density with respect to reduced-unit volume; the density per nm^((M-1)d) differs by the constant
(M-1)d log L). For DW4 only the x and y columns are read: z never enters the energy, so z forces are
exactly zero. Forces are autograd gradients of this smooth energy (TorchForce backpropagates).
"""

import copy
import json
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..potential.torchscript import FORMAT, is_export, load_model
from ..units import PathLike, kT as kT_kjmol
from .cnf import EquivariantCNF
from .systems import UNITS, get_system

KIND = "particle-egnn-cnf"


class ParticleEnergy(nn.Module):
    """positions (N, 3) nm -> energy kJ/mol: drop z for 2-D systems, scale to reduced units, kT * -log q."""

    metadata: str

    def __init__(self, flow: EquivariantCNF, length_nm: float, kT: float, metadata: Dict[str, Any],
                 dtype: torch.dtype):
        super().__init__()
        self.flow = flow.to(dtype)
        self.dim = flow.dim
        self.n_particles = flow.n_particles
        self.inv_length = 1.0 / length_nm
        self.kT = kT
        self.dtype = dtype
        self.metadata = json.dumps(metadata, sort_keys=True)

    def forward(self, positions: Tensor, boxvectors: Optional[Tensor] = None) -> Tensor:
        if boxvectors is not None:
            raise ValueError("smoothflow: particle-flow models are not periodic (no box vectors)")
        if positions.dim() != 2 or positions.shape[0] != self.n_particles or positions.shape[1] != 3:
            raise ValueError("smoothflow: positions must have shape (N, 3) for the model's particle count")
        if not bool(torch.isfinite(positions).all()):
            raise ValueError("smoothflow: positions contain NaN or inf")
        x = positions.to(self.dtype)[:, : self.dim] * self.inv_length
        return (self.flow(x.unsqueeze(0))[0] * self.kT).to(positions.dtype)


def metadata(flow: EquivariantCNF, system_name: str, provenance: Optional[Dict[str, Any]] = None,
             dtype: torch.dtype = torch.float64) -> Dict[str, Any]:
    system = get_system(system_name)
    if (flow.n_particles, flow.dim) != (system.n_particles, system.dim):
        raise ValueError(f"flow is for {flow.n_particles} particles in {flow.dim}-D, {system_name} has "
                         f"{system.n_particles} in {system.dim}-D")
    return {
        "format": FORMAT, "kind": KIND, "system": system.name, "atom_count": system.n_particles,
        "elements": ["Ar"] * system.n_particles, "atom_names": ["Ar"] * system.n_particles,
        "residue_names": ["AR"] * system.n_particles, "bonds": [],
        "temperature": UNITS.temperature, "spatial_dim": system.dim,
        "reduced_units": {"length_nm": UNITS.length_nm, "energy_kjmol": UNITS.energy_kjmol,
                          "temperature_K": UNITS.temperature, "mass_dalton": UNITS.mass_dalton},
        "energy": "kT * NLL(x / L) in kJ/mol; NLL in nats per configuration on the (M-1)d centre-of-mass-free "
                  "subspace, reduced units",
        "integrator": f"RK4, {flow.n_steps} fixed steps", "density": "exact log-determinant of the RK4 map", "config": flow.config,
        "n_parameters": sum(p.numel() for p in flow.parameters()), "dtype": str(dtype).replace("torch.", ""),
        "analytic_gradient": False, "provenance": provenance or {},
    }


def export(flow: EquivariantCNF, system_name: str, path: PathLike, provenance: Optional[Dict[str, Any]] = None,
           dtype: torch.dtype = torch.float64) -> Dict[str, Any]:
    """Script the flow energy (exact log-determinant, float64 by default) and write it atomically; returns metadata."""
    from ..io import atomic_write

    meta = metadata(flow, system_name, provenance, dtype)
    flow = copy.deepcopy(flow).to(dtype).eval().requires_grad_(False)
    flow.create_graph = True
    module = ParticleEnergy(flow, UNITS.length_nm, kT_kjmol(UNITS.temperature), meta, dtype)
    scripted = torch.jit.script(module)
    with atomic_write(path) as tmp:
        scripted.save(str(tmp))
    return meta


def export_checkpoint(checkpoint: PathLike, path: PathLike, extra: Optional[Dict[str, Any]] = None,
                      n_steps: int = 0) -> Dict[str, Any]:
    """Export the best weights of a training run (``best.pt``), with its result.json as provenance.

    ``n_steps`` > 0 integrates the trained velocity field with that many RK4 steps instead of the
    training's (a finer discretisation of the same ODE: closer to its bijective flow map).
    """
    from .train import load_flow

    flow, state = load_flow(checkpoint)
    info = json.loads(state["info"])
    info["rk4_steps_training"] = flow.n_steps
    if n_steps > 0:
        flow.n_steps = n_steps
        flow.config["n_steps"] = float(n_steps)
    provenance: Dict[str, Any] = {"checkpoint": str(checkpoint), "iterations": int(state["iteration"]),
                                  "train_minutes": float(state["elapsed"]) / 60, "best_val_nll": float(state["best_val"]),
                                  **info}
    result = Path(checkpoint).parent / "result.json"
    if result.is_file():
        r = json.loads(result.read_text())
        provenance["test_nll"] = r["test"]
        provenance["test_subset_exact"] = r.get("test_subset_exact")
    provenance.update(extra or {})
    return export(flow, info["system"], path, provenance)


def load_particle_model(path: PathLike) -> torch.jit.ScriptModule:
    """Load an exported particle model (clear error for a molecular export)."""
    module = load_model(path)
    meta = json.loads(module.metadata)
    if meta.get("kind") != KIND:
        raise ValueError(f"{path} is a {meta.get('kind')!r} export, not a particle flow ({KIND})")
    return module


def eager_flow(path: PathLike) -> EquivariantCNF:
    """The eager flow (float64) of an exported particle model, rebuilt from its metadata and weights."""
    from .cnf import build_flow

    module = load_particle_model(path)
    meta = json.loads(module.metadata)
    flow = build_flow(meta["config"]).double()
    prefix = "flow."
    stored = module.state_dict()
    flow.load_state_dict({k: stored[prefix + k] for k in flow.state_dict()})
    return flow.eval()


def load_any_flow(path: PathLike) -> EquivariantCNF:
    """The eager float64 flow of a run's checkpoint (best.pt / last.pt) or of an exported model."""
    from .train import load_flow

    if not Path(path).is_file():
        raise FileNotFoundError(f"no such model or checkpoint: {path}")
    return eager_flow(path) if is_export(path) else load_flow(path)[0]
