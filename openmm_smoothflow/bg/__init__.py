"""Boltzmann-generator sampling: exact equilibrium estimates with the flow as a proposal.

``reweight`` (importance weights, Kish ESS, self-normalised estimates with error bars, populations and
free energies), ``autocorr`` (integrated autocorrelation times), ``states`` (user-defined states from
backbone dihedrals), ``mcmc`` (independence Metropolis-Hastings with flow proposals interleaved with a
target-invariant local move), ``molecule`` (OpenMM: batched target energies, Langevin MD), ``run``
(a molecule end to end and the JSON summary), ``figure``.
"""
