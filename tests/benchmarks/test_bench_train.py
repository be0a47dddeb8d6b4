"""``bench train`` measures the molecule of its data (or --pdb), not a built-in one."""
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"


def test_measure_trains_the_data_molecule(tmp_path):
    import torch

    from openmm_smoothflow.benchmarks.train import measure
    from openmm_smoothflow.md.sampling import simulate

    simulate(DATA / "ace-pro-nme.pdb", 2, output=tmp_path / "pro.npz", steps_per_frame=2, equilibration_steps=0,
             progress=False)
    threads = torch.get_num_threads()
    with torch.random.fork_rng():  # measure() seeds torch and sets its threads: leave the session's as they were
        try:
            r = measure("nll", 4, 1, 1, False, "smooth", data=str(tmp_path / "pro.npz"))
            assert r["atoms"] == 26 and r["molecule"] == str(tmp_path / "pro.npz")
            assert r["frames_outside"] == 0 and r["frames_per_s"] > 0
            r = measure("nll", 4, 1, 1, False, "smooth", pdb=str(DATA / "ace-val-nme.pdb"))
            assert r["atoms"] == 28
        finally:
            torch.set_num_threads(threads)
