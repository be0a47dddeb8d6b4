"""Every figure labels its axes (with units) and has a legend or colour bar where lines or colours differ."""
import numpy as np
import pytest

from openmm_smoothflow.analysis import plots


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """The matplotlib figures the plot functions save, kept open for inspection (and the PNG written)."""
    saved = []

    def keep(fig, path):
        saved.append(fig)
        with plots.atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")

    monkeypatch.setattr(plots, "_save", keep)
    yield saved, tmp_path
    for fig in saved:
        plots._pyplot().close(fig)


def data_axes(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def test_every_figure_has_labels_and_legends(figures):
    saved, out = figures
    rng = np.random.default_rng(0)
    plots.energy_traces({"classical": rng.normal(size=(4, 50)), "flow": rng.normal(size=(4, 50))}, out / "nve.png", 0.01)
    plots.energy_histograms({"MD data": rng.gamma(8, 2, 500), "flow samples": rng.gamma(9, 2, 500)}, out / "e.png")
    plots.force_scatter(rng.normal(size=300), rng.normal(size=300), out / "f.png")
    plots.ramachandran({"MD": rng.uniform(-3, 3, (200, 2))}, out / "rama.png")
    field = rng.normal(size=(8, 8, 2))
    plots.force_field_2d({"a": field, "b": field}, [-3, 3, -3, 3], out / "toy.png",
                         density={"a": rng.uniform(size=(16, 16)), "b": rng.uniform(size=(16, 16))})
    assert len(saved) == 5 and all((out / name).stat().st_size > 0 for name in
                                   ("nve.png", "e.png", "f.png", "rama.png", "toy.png"))
    for fig in saved:
        for ax in data_axes(fig):
            assert ax.get_xlabel() and ax.get_ylabel(), (ax.get_title(), ax.get_xlabel(), ax.get_ylabel())
            assert "(" in ax.get_xlabel() or ax.get_xlabel() in ("x",), ax.get_xlabel()  # units (toy: plain x, y)
    nve, hist, scatter, rama, toy = saved
    for ax in data_axes(nve):  # the highlighted run is named in every panel
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[0].startswith("run 1") and "other 3 runs" in labels[1]
    legend = data_axes(hist)[0].get_legend()
    assert legend is not None and legend.get_bbox_to_anchor().y1 < data_axes(hist)[0].get_window_extent().y0 + 1
    assert data_axes(scatter)[0].get_legend() is not None
    assert len(rama.axes) == 2 and len(toy.axes) == 4  # a colour bar per panel
