"""The result of agglomerative CD: levels of feature groups with a CD score each, and
pictures of them."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


@dataclass
class Component:
    """A group of base units (tokens, blocks, superpixels) and its CD score."""

    units: Tuple[int, ...]
    score: float

    def to_dict(self) -> Dict[str, Any]:
        return {"units": list(self.units), "score": self.score}


@dataclass
class Hierarchy:
    r"""A hierarchy of feature groups for one prediction.

    Attributes:
        levels (list[list[Component]]): one list per iteration, the components of that
                    iteration with their CD scores (components are sets of units).
        unit_scores (np.ndarray): each unit's own CD score.
        score (float): the CD score of the whole input.
        unit_map (np.ndarray): for each feature position (token, or pixel of the
                    image), the unit it belongs to; shape ``(T,)`` or ``(H, W)``.
        merges (list[tuple]): the final pairwise merges (2-D): ``(a, b, score)`` where
                    ``a`` and ``b`` are the units of the merged components.
        tokens (list[str], optional): the words, for pictures of text.
        image (np.ndarray, optional): the image, for pictures of images.
    """

    levels: List[List[Component]]
    unit_scores: np.ndarray
    score: float
    unit_map: np.ndarray
    merges: List[Tuple[Tuple[int, ...], Tuple[int, ...], float]] = field(default_factory=list)
    tokens: Optional[Sequence[str]] = None
    image: Optional[np.ndarray] = None

    @property
    def kind(self) -> str:
        return "1d" if self.unit_map.ndim == 1 else "2d"

    def feature_scores(self, level: int = -1) -> np.ndarray:
        """Each feature position's score at ``level``: its component's score, or its own
        unit's score if it is in no component yet. Shaped like ``unit_map``."""
        per_unit = np.asarray(self.unit_scores, dtype=float).copy()
        if self.levels:
            for comp in self.levels[level]:
                per_unit[list(comp.units)] = comp.score
        return per_unit[self.unit_map]

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict of everything in the hierarchy."""
        return {
            "kind": self.kind,
            "score": self.score,
            "unit_scores": np.asarray(self.unit_scores).tolist(),
            "unit_map": self.unit_map.tolist(),
            "levels": [[c.to_dict() for c in level] for level in self.levels],
            "merges": [{"a": list(a), "b": list(b), "score": s} for a, b, s in self.merges],
            "tokens": list(self.tokens) if self.tokens is not None else None,
        }

    def plot(
        self,
        path: Union[None, str, Any] = None,
        ax: Any = None,
        cmap: str = "RdBu_r",
        max_panels: int = 8,
        level: int = -1,
        colorbar: bool = True,
    ):
        """Draws the hierarchy with matplotlib and returns the figure.

        Text: one row per level, each word on a box coloured by the score of the phrase
        it belongs to (the ACD paper's figure); words are spaced by their length, so long
        sentences never overlap, and the text is white on dark boxes. Images: the input,
        the units' scores and one panel per level (at most ``max_panels``, evenly spaced),
        components outlined and coloured by score, each panel with its colour bar.

        Nothing about matplotlib's backend is changed: in a notebook the figure shows
        inline (it is a pyplot figure, and the returned figure displays itself); in a
        script without a display matplotlib draws off screen. With ``path`` the figure
        is written and closed.

        Args:
            path (str, optional): a file to write (any format matplotlib knows). An Axes
                        here is taken as ``ax``. Default: None
            ax (matplotlib Axes, optional): draw into this Axes instead of a new figure:
                        the whole hierarchy for text, the level ``level`` for images.
                        Default: None
            cmap (str, optional): a diverging colormap; red for, blue against with the
                        default. Default: "RdBu_r"
            max_panels (int, optional): images: at most this many level panels.
                        Default: 8
            level (int, optional): images with ``ax``: which level to draw.
                        Default: -1 (the last)
            colorbar (bool, optional): draw colour bars. Default: True

        Returns:
            *matplotlib.figure.Figure*
        """
        import matplotlib.pyplot as plt

        if path is not None and not isinstance(path, str):
            path, ax = None, path
        if self.kind == "1d":
            figure = _plot_text(self, ax, cmap, colorbar, plt)
        elif ax is not None:
            figure = _plot_level(self, ax, level, cmap, colorbar)
        else:
            figure = _plot_image(self, cmap, max_panels, colorbar, plt)
        if path is not None:
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
        return figure


def _limit(h: Hierarchy) -> float:
    values = [abs(c.score) for level in h.levels for c in level] + [abs(float(s)) for s in h.unit_scores]
    return max(values + [1e-12])


# Words are drawn in a monospaced font, so a word's width is known without a renderer.
_FONT_SIZE = 8
_CHAR_INCHES = 0.6 * _FONT_SIZE / 72  # advance of one DejaVu Sans Mono character
_PAD_CHARS = 1.6  # space between boxes, in characters


def text_colour(rgba) -> str:
    """Black or white, whichever reads better on a box of colour ``rgba`` (relative
    luminance of the sRGB colour, as WCAG defines it)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "white" if luminance < 0.179 else "black"


def _word_centres(tokens: Sequence[str]) -> Tuple[np.ndarray, float]:
    """Centres of the words along a row, in characters, and the row's length."""
    widths = np.array([len(t) for t in tokens], dtype=float) + _PAD_CHARS
    right = np.cumsum(widths)
    return right - widths / 2, float(right[-1]) if len(tokens) else 1.0


def _plot_text(h: Hierarchy, ax, cmap, colorbar, plt):
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    tokens = list(h.tokens) if h.tokens is not None else [str(i) for i in range(len(h.unit_map))]
    rows = [h.unit_scores[h.unit_map]] + [h.feature_scores(i) for i in range(len(h.levels))]
    centres, length = _word_centres(tokens)
    limit = _limit(h)
    norm, colormap = Normalize(-limit, limit), plt.get_cmap(cmap)
    bar_space = None
    if ax is None:  # axes exactly as wide as the words need, margins for labels and bar
        left, right, height = 0.9, 1.3 if colorbar else 0.2, 0.3 * len(rows) + 0.3
        figure = plt.figure(figsize=(left + length * _CHAR_INCHES + right, height + 0.6))
        width, total = figure.get_figwidth(), height + 0.6
        ax = figure.add_axes((left / width, 0.2 / total, length * _CHAR_INCHES / width, height / total))
        if colorbar:
            bar_space = figure.add_axes(((left + length * _CHAR_INCHES + 0.15) / width, 0.2 / total, 0.12 / width, height / total))
    else:
        figure = ax.figure
    if colorbar:  # before the words: in a given Axes the bar takes its room first
        bar = figure.colorbar(ScalarMappable(norm, colormap), ax=None if bar_space else ax, cax=bar_space, fraction=0.05, pad=0.01)
        bar.set_label("CD score\n(red: for, blue: against)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    # The font shrinks to fit a given Axes: words never overlap.
    ax_inches = ax.get_position().width * figure.get_figwidth()
    font_size = min(_FONT_SIZE, 0.98 * ax_inches / length * 72 / 0.6)
    in_level = [np.ones(len(tokens), bool)] + [_selected(h, i) for i in range(len(h.levels))]
    for r, (scores, selected) in enumerate(zip(rows, in_level)):
        for t, word in enumerate(tokens):
            colour = colormap(norm(scores[t])) if selected[t] else (1.0, 1.0, 1.0, 1.0)
            ax.text(
                centres[t], -r, word, ha="center", va="center", fontsize=font_size, family="monospace",
                color=text_colour(colour), bbox=dict(boxstyle="square,pad=0.25", fc=colour, ec="none"),
            )  # fmt: skip
    ax.set_xlim(0, length)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_yticks([-r for r in range(len(rows))], ["words"] + [f"level {i + 1}" for i in range(len(h.levels))], fontsize=7)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"ACD hierarchy (score of the whole input {h.score:+.2f})", fontsize=9)
    return figure


def _selected(h: Hierarchy, level: int) -> np.ndarray:
    units = {u for c in h.levels[level] for u in c.units}
    return np.isin(h.unit_map, list(units))


def _show_level(h: Hierarchy, ax, level: int, cmap, colorbar) -> None:
    label = np.zeros(h.unit_map.shape, int)
    scores = np.full(h.unit_map.shape, np.nan)
    for i, comp in enumerate(h.levels[level], start=1):
        inside = np.isin(h.unit_map, comp.units)
        label[inside], scores[inside] = i, comp.score
    limit = np.nanmax(np.abs(scores)) if np.isfinite(scores).any() else 1.0
    shown = ax.imshow(np.ma.masked_invalid(scores), cmap=cmap, vmin=-limit, vmax=limit)
    height, width = label.shape
    fine = 8  # outlines along pixel edges (contours of the upsampled map), covering no pixel
    for i in range(1, int(label.max()) + 1):
        inside = np.pad(np.kron(label == i, np.ones((fine, fine))), 1)  # closed at the image's border too
        pad = 1 / fine
        extent = (-0.5 - pad, width - 0.5 + pad, height - 0.5 + pad, -0.5 - pad)
        ax.contour(inside, levels=[0.5], colors="black", linewidths=0.8, origin="upper", extent=extent)
    ax.set_xlim(-0.5, width - 0.5), ax.set_ylim(height - 0.5, -0.5)
    ax.set_title(f"level {level % len(h.levels) + 1}", fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)


def _plot_level(h: Hierarchy, ax, level: int, cmap, colorbar):
    if not h.levels:
        raise ValueError("the hierarchy has no levels to draw.")
    _show_level(h, ax, level, cmap, colorbar)
    return ax.figure


def _plot_image(h: Hierarchy, cmap, max_panels, colorbar, plt):
    count = len(h.levels)
    picks = sorted(set(np.linspace(0, count - 1, min(count, max_panels)).round().astype(int))) if count else []
    panels = (1 if h.image is not None else 0) + 1 + len(picks)
    figure, axes = plt.subplots(1, panels, figsize=(2.5 * panels, 2.6), squeeze=False)
    axes = axes[0]
    k = 0
    if h.image is not None:
        image = h.image if h.image.ndim == 2 else np.moveaxis(h.image, 0, -1).squeeze()
        axes[0].imshow(image, cmap="gray_r" if image.ndim == 2 else None)
        axes[0].set_title("input", fontsize=8)
        axes[0].set_xticks([]), axes[0].set_yticks([])
        k = 1
    unit_map = h.unit_scores[h.unit_map]
    limit = np.abs(unit_map).max() or 1.0  # each panel on its own scale: levels differ a lot
    shown = axes[k].imshow(unit_map, cmap=cmap, vmin=-limit, vmax=limit)
    axes[k].set_title("units", fontsize=8)
    axes[k].set_xticks([]), axes[k].set_yticks([])
    if colorbar:
        figure.colorbar(shown, ax=axes[k], fraction=0.046, pad=0.03).ax.tick_params(labelsize=6)
    for ax, level in zip(axes[k + 1 :], picks):
        _show_level(h, ax, level, cmap, colorbar)
    figure.suptitle("ACD hierarchy (red: for the class, blue: against; each panel on its own scale)", fontsize=9)
    figure.tight_layout()
    return figure
