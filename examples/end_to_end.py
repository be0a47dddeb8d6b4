"""The whole pipeline on alanine dipeptide, from nothing: OpenMM MD -> train a smooth flow -> export ->
MD with the flow as the potential (Langevin, then NVE).

    python examples/end_to_end.py --out-dir e2e --threads 1          # about 7 minutes on one CPU core
    python examples/end_to_end.py --out-dir e2e --threads 1 --quick  # about 20 s: tiny data, model, runs

(Measured with one torch thread on a 2-core machine that was running another training job at the same
time: 37 s MD, 331 s training, 56 s flow MD; 406 s in all. An idle machine is faster.)

1. simulate: classical MD (amber99sbildn + OBC, Langevin 300 K) writes positions, forces and energies.
2. train: a reduced smooth flow (bump-function mixtures) on these frames, first by maximum likelihood
   (NLL), then from there with the loss of Eq. 5, NLL + force matching with a strong force weight
   (omega_f = 0.062; from a random start a weight this large stalls the NLL, hence the NLL stage);
   blocks of the trajectory are held out for validation.
3. export: one TorchScript file, positions (N, 3) nm -> energy kJ/mol, with metadata.
4. MD with the exported flow as an ``openmmtorch.TorchForce``: Langevin at 300 K, then NVE (velocity
   Verlet) from the last Langevin state, reporting how well the total energy is conserved.

Everything goes into ``--out-dir``: ``md.npz``, ``run-nll/`` and ``run-fm/`` (checkpoints,
metrics.jsonl), ``model.pt``, ``summary.json``. The model trained here is small and briefly trained: expect a rough free-energy
surface, not the shipped model's accuracy (``smoothflow train`` with the defaults for that).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

FULL = dict(frames=5000, steps_per_frame=200, equilibration_steps=20_000, nll_epochs=60, fm_epochs=25,
            batch_size=128, model={"hidden": [32, 32], "n_torsion_layers": 4, "n_ic_layers": 2}, lr=1e-3,
            val_kl_samples=128, langevin_steps=5000, nve_steps=5000)
FM_WEIGHT = 0.062  # omega_f of the force-matching stage (the FM loss is the squared force error per component)
QUICK = dict(frames=1000, steps_per_frame=100, equilibration_steps=2000, nll_epochs=3, fm_epochs=2, batch_size=64,
             model={"hidden": [16, 16], "n_torsion_layers": 2, "n_ic_layers": 2}, lr=1e-3,
             val_kl_samples=32, langevin_steps=500, nve_steps=500)


def stage(number: int, text: str) -> None:
    print(f"\n=== {number}. {text}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="smoothflow-end-to-end", help="output directory (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny data, model and runs (about 20 s)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = QUICK if args.quick else FULL
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"settings": settings, "quick": args.quick, "seconds": {}}
    start = time.perf_counter()

    def done(name: str, since: float) -> float:
        summary["seconds"][name] = round(time.perf_counter() - since, 1)
        print(f"--- {name}: {summary['seconds'][name]} s", flush=True)
        return time.perf_counter()

    # 1. Classical MD -------------------------------------------------------------------------------
    import openmm
    from openmm import unit

    from openmm_smoothflow.md.sampling import simulate
    from openmm_smoothflow.md.systems import alanine_dipeptide_pdb, classical_system, load_pdb

    s = settings
    stage(1, f"simulate: {s['frames']} frames, one every {s['steps_per_frame']} fs, after "
             f"{s['equilibration_steps'] / 1000:g} ps of equilibration ({s['frames'] * s['steps_per_frame'] / 1e6:g} ns)")
    t = time.perf_counter()
    data = simulate(alanine_dipeptide_pdb(), n_frames=s["frames"], output=out / "md.npz", steps_per_frame=s["steps_per_frame"],
                    equilibration_steps=s["equilibration_steps"], seed=args.seed, progress=False)
    print(f"wrote {out / 'md.npz'}: {float(data['ms_per_step']):.3f} ms per MD step, mean potential energy "
          f"{data['energies'].mean():.1f} kJ/mol")
    summary["md_mean_energy"] = float(data["energies"].mean())
    t = done("simulate", t)

    # 2. Train a smooth flow: NLL + force matching --------------------------------------------------
    from openmm_smoothflow.training.config import TrainConfig
    from openmm_smoothflow.training.trainer import Trainer

    def train(name: str, fm: float, epochs: int, init=None) -> Trainer:
        """One `smoothflow train` run in this process, printing one line per epoch."""
        config = TrainConfig(data=[str(out / "md.npz")], out=str(out / name), kind="smooth", fm=fm, init=init,
                             model=s["model"], epochs=epochs, batch_size=s["batch_size"], lr=s["lr"],
                             lr_decay=1.0, val_kl_samples=s["val_kl_samples"], seed=args.seed,
                             threads=args.threads, checkpoint_every=0)
        metrics = out / name / "metrics.jsonl"
        if metrics.exists():
            metrics.unlink()  # a fresh run (the trainer appends)

        def log(line: str) -> None:  # the trainer logs once per epoch, after appending to metrics.jsonl
            if not line.startswith("epoch="):
                print(line, flush=True)
                return
            r = json.loads(metrics.read_text().splitlines()[-1])
            print(f"epoch {r['epoch']:3d}: val_nll {r['val_nll']:8.2f}  val_force_rmse {r['val_force_rmse']:6.1f}  "
                  f"val_kl {r.get('val_kl', float('nan')):10.4g}  val_ess {r.get('val_ess', float('nan')):.3f}  "
                  f"({r['seconds']:.1f} s)", flush=True)

        trainer = Trainer(config, log=log, overwrite=True)  # a fresh run each time the example runs
        trainer.fit()
        print(f"best epoch {trainer.state['best_epoch']} (validation loss {trainer.state['best_val']:.2f}) -> "
              f"{out / name / 'best.pt'}", flush=True)
        return trainer

    stage(2, f"train a smooth flow {s['model']}, batch {s['batch_size']}, learning rate {s['lr']}; "
             f"validation frames: the last 10% of each tenth of the trajectory")
    print("per epoch: val_nll (kT; lower is better), val_force_rmse (kT/nm per component), val_kl (reverse KL "
          "of flow samples under the force field, kT up to log Z; noisy), val_ess (Kish ESS / N)")
    print(f"2a. maximum likelihood (NLL only), {s['nll_epochs']} epochs", flush=True)
    nll = train("run-nll", 0.0, s["nll_epochs"])
    print(f"2b. from 2a: {1 - FM_WEIGHT:g} NLL + {FM_WEIGHT:g} force matching (Eq. 5), {s['fm_epochs']} epochs", flush=True)
    fm = train("run-fm", FM_WEIGHT, s["fm_epochs"], init=str(out / "run-nll" / "best.pt"))
    summary["training"] = {"parameters": fm.generator.n_parameters(),
                           "nll_stage": {"best_epoch": nll.state["best_epoch"], "best_val_loss": nll.state["best_val"]},
                           "fm_stage": {"best_epoch": fm.state["best_epoch"], "best_val_loss": fm.state["best_val"]}}
    t = done("train", t)

    # 3. Export -------------------------------------------------------------------------------------
    from openmm_smoothflow.potential import FlowPotential, export
    from openmm_smoothflow.training.checkpoint import load_generator

    stage(3, "export the best checkpoint to one TorchScript file (float64)")
    generator, info = load_generator(out / "run-fm" / "best.pt")
    meta = export(generator, out / "model.pt", provenance=info["provenance"])
    print(f"wrote {out / 'model.pt'}: {meta['kind']} flow, {meta['atom_count']} atoms, {meta['temperature']} K")
    t = done("export", t)

    # 4. MD with the flow as the potential ----------------------------------------------------------
    from openmm_smoothflow.analysis.phi_psi import phi_psi
    from openmm_smoothflow.md.systems import get_platform

    stage(4, f"MD with the exported flow (TorchForce, Reference platform): {s['langevin_steps']} Langevin "
             f"steps at 300 K, then {s['nve_steps']} NVE steps, 1 fs")
    pdb = load_pdb(alanine_dipeptide_pdb())
    potential = FlowPotential(out / "model.pt")
    system = potential.createSystem(pdb.topology)
    temperature = potential.temperature * unit.kelvin
    integrator = openmm.CompoundIntegrator()
    langevin = openmm.LangevinMiddleIntegrator(temperature, 1 / unit.picosecond, 1 * unit.femtosecond)
    langevin.setRandomNumberSeed(args.seed)
    integrator.addIntegrator(langevin)
    integrator.addIntegrator(openmm.VerletIntegrator(1 * unit.femtosecond))
    context = openmm.Context(system, integrator, get_platform("Reference"))
    context.setPositions(data["positions"][-1].astype(np.float64))  # the last MD frame
    context.setVelocitiesToTemperature(temperature, args.seed)
    kj = unit.kilojoule_per_mole

    def energies():
        state = context.getState(getEnergy=True, getPositions=True)
        return (state.getPotentialEnergy().value_in_unit(kj), state.getKineticEnergy().value_in_unit(kj),
                state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))

    n_dof = 3 * system.getNumParticles() - 6  # temperature: 3N - 3 (the CMMotionRemover takes 3)
    report = max(s["langevin_steps"] // 10, 1)
    frames, temps = [], []
    md_start = time.perf_counter()
    for step in range(report, s["langevin_steps"] + 1, report):
        integrator.step(report)
        epot, ekin, pos = energies()
        frames.append(pos)
        temps.append(2 * ekin / ((n_dof + 3) * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(kj / unit.kelvin)))
        print(f"Langevin step {step:5d}: flow energy {epot:9.2f} kJ/mol, temperature {temps[-1]:6.1f} K", flush=True)
    ms_per_step = 1000 * (time.perf_counter() - md_start) / s["langevin_steps"]
    # The flow-MD frames scored by the classical force field: do they stay in the MD ensemble?
    classical = openmm.Context(classical_system(pdb.topology), openmm.VerletIntegrator(0.001), get_platform("Reference"))
    classical_e = []
    for pos in frames:
        classical.setPositions(pos)
        classical_e.append(classical.getState(getEnergy=True).getPotentialEnergy().value_in_unit(kj))
    angles_flow = phi_psi(np.array(frames), pdb.topology)
    angles_md = phi_psi(data["positions"], pdb.topology)
    print(f"{ms_per_step:.1f} ms per flow MD step; mean temperature {np.mean(temps):.0f} K; median classical energy "
          f"of the flow-MD frames {np.median(classical_e):.1f} kJ/mol (MD data {np.median(data['energies']):.1f}); "
          f"phi < 0 in {np.mean(angles_flow[:, 0] < 0):.0%} of flow-MD frames ({np.mean(angles_md[:, 0] < 0):.0%} of MD data)")

    integrator.setCurrentIntegrator(1)  # NVE from the last Langevin state
    every = max(s["nve_steps"] // 50, 1)
    totals = []
    for _ in range(0, s["nve_steps"] + 1, every):
        if totals:
            integrator.step(every)
        epot, ekin, _ = energies()
        totals.append(epot + ekin)
    totals = np.array(totals)
    t_ps = np.arange(len(totals)) * every / 1000.0
    finite = bool(np.all(np.isfinite(totals)))
    std = float(np.std(totals) / n_dof) if finite else float("nan")
    drift = float(np.polyfit(t_ps, totals, 1)[0] / n_dof) if finite else float("nan")
    print(f"NVE: total energy {totals[0]:.2f} -> {totals[-1]:.2f} kJ/mol; std/DOF {std:.4f} kJ/mol, "
          f"drift/DOF {drift:+.4f} kJ/mol/ps over {t_ps[-1]:g} ps ({n_dof} DOF)")
    summary["md"] = {"ms_per_step": ms_per_step, "mean_temperature": float(np.mean(temps)),
                     "median_classical_energy_of_flow_frames": float(np.median(classical_e)),
                     "nve_std_per_dof": std, "nve_drift_per_dof": drift, "nve_finite": finite}
    done("md", t)

    from openmm_smoothflow.io import atomic_write

    summary["seconds"]["total"] = round(time.perf_counter() - start, 1)
    with atomic_write(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    print(f"\nall done in {summary['seconds']['total']} s; wrote {out / 'summary.json'}")
    return 0 if finite else 1


if __name__ == "__main__":
    sys.exit(main())
