"""Analysis of trained flows and their MD: evaluation metrics and figures, phi/psi, NVE energy
conservation, plots."""
