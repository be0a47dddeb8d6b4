"""Smooth normalizing flows (Boltzmann generators) as OpenMM potentials.

Importing the package is light (no torch, no OpenMM): the subpackages load them when used.
"""

__version__ = "0.1.0"
