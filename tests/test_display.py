import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from dyninf.deciders import survival_probabilities  # noqa: E402
from dyninf.deciders.aig import Gate  # noqa: E402
from dyninf.course.display import METHOD_COLOURS, method_shades, plot_accuracy_against_macs, plural, source_markdown  # noqa: E402
from dyninf.measure.frontier import COLUMNS, METHODS  # noqa: E402


def test_plural():
    assert [plural(1, "image"), plural(3, "image"), plural(0, "block"), plural(2, "policy", "policies")] == \
        ["1 image", "3 images", "0 blocks", "2 policies"]


def test_source_is_the_librarys_own_and_says_where_it_lives():
    text = source_markdown(survival_probabilities, Gate.forward)
    assert "`survival_probabilities` in `lib/dyninf/deciders/stochastic_depth.py`" in text
    assert "`Gate.forward` in `lib/dyninf/deciders/aig.py`" in text
    assert "def survival_probabilities(num_blocks: int, p_last: float = 0.5)" in text
    assert "return (1 - layers / num_blocks * (1 - p_last)).float()" in text    # the body, not a summary
    assert text.count("```python") == 2


def test_every_method_has_its_own_colour_and_its_variants_shades_of_it():
    assert set(METHODS) <= set(METHOD_COLOURS)
    assert len(set(METHOD_COLOURS.values())) == len(METHOD_COLOURS)
    shades = method_shades("AIG", 3)
    assert len(shades) == 3 and matplotlib.colors.same_color(shades[-1], METHOD_COLOURS["AIG"])
    assert len({tuple(shade) for shade in shades}) == 3


def test_the_figure_draws_error_bars_in_each_methods_colour_and_keeps_close_labels_apart():
    points = pd.DataFrame([("plain", "plain ResNet-8", 10.0, 50.0, 1.1), ("plain", "plain ResNet-20", 40.0, 66.0, 1.0),
                           ("GaterNet", "GaterNet, λ = 0", 41.0, 66.2, 1.0), ("GaterNet", "GaterNet, λ = 1", 41.5, 66.1, 1.0),
                           ("BlockDrop", "BlockDrop", 42.0, 61.0, 1.1)],
                          columns=["method", "network", "mean MACs (M)", "accuracy (%)", "standard error (points)"])
    points = points.assign(**{"ideal MACs (M)": points["mean MACs (M)"], "training epochs": 8, "control": False})[COLUMNS]
    fig, ax = plt.subplots()
    plot_accuracy_against_macs(points, ax)
    containers = {c.get_label(): c for c in ax.containers}
    assert set(containers) == {"plain", "GaterNet", "BlockDrop"}
    for method, container in containers.items():
        assert matplotlib.colors.same_color(container.lines[0].get_color(), METHOD_COLOURS[method])
        bar = container.lines[2][0].get_segments()[0]    # the first point's error bar: ± its standard error
        assert bar[1][1] - bar[0][1] == pytest.approx(2 * points[points.method == method]["standard error (points)"].iloc[0])
    assert any(line.get_label() == "static frontier" for line in ax.lines)
    heights = sorted(text.xyann[1] for text in ax.texts if "ResNet-20" in text.get_text() or "GaterNet" in text.get_text())
    gap = 0.06 * (66.2 - 50.0)
    assert all(b - a >= gap - 1e-9 for a, b in zip(heights, heights[1:]))   # three labels within 0.2 points
    plt.close(fig)


def test_the_speed_up_figure_has_a_panel_per_batch_and_marks_the_cuda_graph_only_where_timed():
    import matplotlib.pyplot as plt
    import pandas as pd

    from dyninf.course.display import plot_speedups

    rows = [{"case": case, "batch": batch, "ideal speed-up": 2.0, "skipped speed-up": 1.5, "realized / ideal": 0.75,
             "plain ms": 2.0, "plain CUDA graph ms": graph} for case in ("a", "b") for batch, graph in ((1, 0.5), (256, 1.0))]
    for table, dashed in ((pd.DataFrame(rows), [4.0, 2.0]), (pd.DataFrame(rows).assign(**{"plain CUDA graph ms": float("nan")}), [])):
        figure = plot_speedups(table, "title")
        assert len(figure.axes) == 2
        lines = [line.get_xdata()[0] for ax in figure.axes for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert lines == dashed                   # plain ms / graph ms, per panel; none without a GPU
        plt.close(figure)
