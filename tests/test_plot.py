"""charrnn plot: comparison figures of training runs."""

from __future__ import annotations

import pytest

from .conftest import assert_one_line_error, train_two_layers


# -- plots -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_runs(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return [train_two_layers(dataset, out, f"lr{lr}", max_iters=20, checkpoint_every=10, learning_rate=lr, stats_every=5).checkpoint
            for lr in (0.1, 0.05, 0.01)]


def test_plot_figure_has_one_line_per_run(three_runs):
    pytest.importorskip("matplotlib")
    from charrnn.plot import load_run, make_figure

    runs = [load_run(p) for p in three_runs]
    fig = make_figure(runs, 900, 600)
    ax_loss, ax_lr, ax_ratio, ax_grad = fig.axes
    labels = [line.get_label() for line in ax_loss.get_lines() if not line.get_label().startswith("_")]
    assert [lab for lab in labels if "(lr" in lab] == ["lr0.1 (lr 0.1)", "lr0.05 (lr 0.05)", "lr0.01 (lr 0.01)"]
    assert len(ax_lr.get_lines()) == 3 and len(ax_grad.get_lines()) == 3
    assert len([ln for ln in ax_ratio.get_lines() if ln.get_label().startswith("lr")]) == 3 * 4  # 4 layers each
    assert tuple(fig.get_size_inches() * fig.dpi) == (900, 600)


def test_plot_cli_writes_png_and_svg(cli, three_runs, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "cmp.png"
    assert cli("plot", *three_runs, "-o", png, "--width", "640", "--height", "480").code == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 640 and int.from_bytes(data[20:24], "big") == 480
    svg = tmp_path / "cmp.svg"
    assert cli("plot", three_runs[0].parent, "-o", svg).code == 0
    assert "<svg" in svg.read_text()[:500]


def test_plot_bad_run(cli, tmp_path):
    assert_one_line_error(cli("plot", tmp_path / "nothing_1.json", "-o", tmp_path / "x.png"), "not found")
