"""E(n) equivariant flows of identical-particle systems (DW4, LJ13) as OpenMM potentials.

Pipeline, one module each: :mod:`.systems` (exact energies, torch and OpenMM; the reduced-unit
mapping), :mod:`.data` (Metropolis data, equilibrium checks, splits), :mod:`.egnn` (EGNN dynamics),
:mod:`.cnf` (fixed-step RK4 flow map with the exact log-determinant), :mod:`.train`, :mod:`.export`
(one TorchScript energy file, FlowPotential-compatible), :mod:`.md` and :mod:`.bench` (OpenMM NVE,
Kish ESS, speed).
"""
