"""A trained flow as an OpenMM potential.

``export`` writes ONE TorchScript energy file (:mod:`.torchscript`); :class:`FlowPotential` turns it into
an OpenMM Force or System with one of the backends (:mod:`.torchforce`, :mod:`.compiled`);
:mod:`.mlpotential` is the openmm-ml entry point (``MLPotential('smoothflow', modelPath=...)``);
:func:`energies_and_forces` (:mod:`.batch`) evaluates many frames at once for analysis scripts.

The names below are imported on first use: openmm-ml imports :mod:`.mlpotential` (and so this
package) whenever it is imported itself, which must not pull in torch.
"""
import importlib

_PUBLIC = {
    "FORMAT": ".torchscript", "EnergyModule": ".torchscript", "export": ".torchscript", "load_model": ".torchscript",
    "read_metadata": ".torchscript", "FlowPotential": ".flow_potential", "deserializeSystem": ".torchforce",
    "energies_and_forces": ".batch",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name], __name__), name)
