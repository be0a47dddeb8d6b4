"""``bench speed``'s summary: the fastest flow row and the TorchForce row as multiples of the classical one."""
from openmm_smoothflow.benchmarks.speed import format_table, step_ratios


def row(potential, backend, platform, dtype, ms):
    return dict(potential=potential, backend=backend, platform=platform, dtype=dtype, ms_per_step=ms,
                best_ms_per_step=ms, ns_per_day=86.4 / ms, first_eval_s=0.1, final_energy_finite=True)


def test_step_ratios_pick_the_fastest_flow_row_of_the_run():
    rows = [row("classical", "openmm", "Reference", "-", 0.04), row("classical", "openmm", "CPU", "-", 0.08),
            row("smooth", "torchforce", "Reference", "float64", 3.0),
            row("smooth", "torchforce", "Reference", "float32", 2.5),
            row("smooth", "aoti", "Reference", "float64", 0.6),
            dict(potential="smooth", backend="compiled", platform="Reference", dtype="float64", error="boom")]
    r = step_ratios(rows, "Reference")
    assert r["fastest_flow"] == "aoti Reference float64" and r["fastest_flow_ms"] == 0.6
    assert abs(r["fastest_vs_classical"] - 15.0) < 1e-9 and abs(r["torchforce_vs_classical"] - 75.0) < 1e-9
    assert step_ratios(rows[2:], "Reference") == {}  # no classical row: no ratios
    assert "failed: boom" in format_table(rows)
