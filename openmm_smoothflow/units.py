"""Shared facts at the bottom of the package: k_B T and unit conversions to kT, the path alias.

OpenMM units at every public boundary (nm, ps, kJ/mol, K); inside the flow energies are in kT.
Nothing here imports the rest of the package.
"""
from __future__ import annotations

import os
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]


def kT(temperature: float) -> float:
    """k_B T in kJ/mol (molar gas constant R times T); ~2.494 kJ/mol at 300 K.

    ``temperature`` in K, as a number or an ``openmm.unit`` Quantity.
    """
    from openmm import unit

    if not unit.is_quantity(temperature):
        temperature = float(temperature) * unit.kelvin
    value = (unit.MOLAR_GAS_CONSTANT_R * temperature).value_in_unit(unit.kilojoule_per_mole)
    if not value > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    return float(value)


def energies_to_kT(energies, temperature: float):
    """Energies kJ/mol -> kT (tensor or array in, same type out)."""
    return energies / kT(temperature)


def forces_to_kT(forces, temperature: float):
    """Forces kJ/mol/nm -> kT/nm (tensor or array in, same type out)."""
    return forces / kT(temperature)
