"""Hierarchy.plot: readable words, colour bars, an Axes to draw into, the backend left alone."""

import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from captum_cd import Component, Hierarchy  # noqa: E402
from captum_cd.attr.hierarchy import text_colour  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sentence_hierarchy():
    words = ("the unexpectedly overwrought and interminably self-congratulatory screenplay "
             "never quite manages to rescue an otherwise luminous performance by a young cast").split()
    n = len(words)
    rng = np.random.default_rng(0)
    unit_scores = rng.normal(size=n)
    levels = [[Component((1, 2), 3.0)], [Component((1, 2, 3), -2.0), Component((9, 10), 0.1)], [Component(tuple(range(n)), 1.5)]]
    return Hierarchy(levels, unit_scores, 1.5, np.arange(n), tokens=words)


def image_hierarchy():
    unit_map = np.arange(16).reshape(4, 4)
    levels = [[Component((0, 1), 0.5)], [Component((0, 1, 4, 5), 1.0), Component((15,), -0.3)]]
    return Hierarchy(levels, np.linspace(-1, 1, 16), 0.7, unit_map, image=np.random.default_rng(1).random((1, 4, 4)))


def word_boxes(figure):
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    rows = {}
    for text in figure.axes[0].texts:
        rows.setdefault(text.get_position()[1], []).append((text.get_position()[0], text.get_bbox_patch().get_window_extent(renderer), text))
    return [sorted(row, key=lambda item: item[0]) for _, row in sorted(rows.items())]


def test_long_sentences_never_overlap():
    h = sentence_hierarchy()
    figure = h.plot()
    rows = word_boxes(figure)
    assert len(rows) == 1 + len(h.levels) and all(len(row) == len(h.tokens) for row in rows)
    for row in rows:
        for (_, left, _), (_, right, _) in zip(row, row[1:]):
            assert left.x1 <= right.x0, "two words overlap"
    axes_box = figure.axes[0].get_window_extent()
    assert rows[0][0][1].x0 >= axes_box.x0 - 1 and rows[0][-1][1].x1 <= axes_box.x1 + 1  # inside the axes
    plt.close(figure)


def test_text_colour_follows_the_box():
    cmap = plt.get_cmap("RdBu_r")
    assert text_colour(cmap(0.0)) == "white" and text_colour(cmap(1.0)) == "white"  # darkest blue and red
    assert text_colour(cmap(0.5)) == "black" and text_colour((1, 1, 1, 1)) == "black"
    figure = sentence_hierarchy().plot()
    for row in word_boxes(figure):
        for _, _, text in row:
            assert text.get_color() == text_colour(text.get_bbox_patch().get_facecolor())
    colours = {text.get_color() for row in word_boxes(figure) for _, _, text in row}
    assert colours == {"white", "black"}  # the strongest scores sit on dark boxes
    plt.close(figure)


def test_colour_bars_and_an_axes_to_draw_into(tmp_path):
    h = sentence_hierarchy()
    figure = h.plot()
    assert len(figure.axes) == 2 and "CD score" in figure.axes[1].get_ylabel()
    plt.close(figure)
    figure, ax = plt.subplots()
    assert h.plot(ax=ax) is figure and len(ax.texts) == len(h.tokens) * (1 + len(h.levels))
    plt.close(figure)
    figure = h.plot(colorbar=False)
    assert len(figure.axes) == 1
    plt.close(figure)

    image = image_hierarchy()
    figure = image.plot()
    assert len(figure.axes) == 4 + 3  # input, units, 2 levels, and a colour bar for each of the 3 score panels
    plt.close(figure)
    figure, ax = plt.subplots()
    assert image.plot(ax=ax, level=0) is figure and ax.get_title() == "level 1"
    plt.close(figure)
    assert image.plot(str(tmp_path / "h.png")) is not None and (tmp_path / "h.png").stat().st_size > 0


def test_plot_leaves_the_backend_alone():
    code = (
        "import numpy as np, matplotlib; from captum_cd import Hierarchy, Component; "
        "h = Hierarchy([[Component((0,), 1.0)]], np.array([1.0, -1.0]), 1.0, np.arange(2), tokens=['a', 'b']); "
        "h.plot(); print(matplotlib.get_backend())"
    )
    env = dict(os.environ, MPLBACKEND="pdf")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.strip() == "pdf"
