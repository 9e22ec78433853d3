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

    def plot(self, path_or_ax: Union[str, Any] = None, cmap: str = "RdBu_r", max_panels: int = 8):
        """Draws the hierarchy (matplotlib).

        Text: one row per level, words coloured by the score of the phrase they belong to
        (the ACD paper's figure). Images: one panel per level (at most ``max_panels``,
        evenly spaced), components outlined and coloured by score.

        Args:
            path_or_ax (str or matplotlib Axes, optional): a file to write, or an Axes to
                        draw into (text only). Default: None (returns the figure).
        """
        import matplotlib

        if isinstance(path_or_ax, str) or path_or_ax is None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        figure = _plot_text(self, path_or_ax, cmap, plt) if self.kind == "1d" else _plot_image(self, cmap, max_panels, plt)
        if isinstance(path_or_ax, str):
            figure.savefig(path_or_ax, dpi=110, bbox_inches="tight")
            plt.close(figure)
        return figure


def _limit(h: Hierarchy) -> float:
    values = [abs(c.score) for level in h.levels for c in level] + [abs(float(s)) for s in h.unit_scores]
    return max(values + [1e-12])


def _plot_text(h: Hierarchy, ax, cmap, plt):
    tokens = list(h.tokens) if h.tokens is not None else [str(i) for i in range(len(h.unit_map))]
    rows = [h.unit_scores[h.unit_map]] + [h.feature_scores(i) for i in range(len(h.levels))]
    if ax is None or isinstance(ax, str):
        figure, ax = plt.subplots(figsize=(max(6, 0.55 * len(tokens)), 0.45 * len(rows) + 0.6))
    else:
        figure = ax.figure
    limit = _limit(h)
    colormap = plt.get_cmap(cmap)
    in_level = [np.zeros(len(tokens), bool)] + [_selected(h, i) for i in range(len(h.levels))]
    for r, (scores, selected) in enumerate(zip(rows, in_level)):
        for t, word in enumerate(tokens):
            colour = colormap(0.5 + 0.5 * scores[t] / limit) if (r == 0 or selected[t]) else (1, 1, 1, 1)
            ax.text(t, -r, word, ha="center", va="center", fontsize=8, bbox=dict(boxstyle="square,pad=0.25", fc=colour, ec="none"))
    ax.set_xlim(-0.7, len(tokens) - 0.3)
    ax.set_ylim(-len(rows) + 0.4, 0.6)
    ax.set_yticks([-r for r in range(len(rows))], ["words"] + [f"level {i + 1}" for i in range(len(h.levels))], fontsize=7)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"ACD hierarchy (score of the whole input {h.score:+.2f}; red: for, blue: against)", fontsize=9)
    return figure


def _selected(h: Hierarchy, level: int) -> np.ndarray:
    units = {u for c in h.levels[level] for u in c.units}
    return np.isin(h.unit_map, list(units))


def _plot_image(h: Hierarchy, cmap, max_panels, plt):
    from skimage.segmentation import find_boundaries

    count = len(h.levels)
    picks = sorted(set(np.linspace(0, count - 1, min(count, max_panels)).round().astype(int))) if count else []
    panels = (1 if h.image is not None else 0) + 1 + len(picks)
    figure, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.5))
    axes = np.atleast_1d(axes)
    k = 0
    if h.image is not None:
        image = h.image if h.image.ndim == 2 else np.moveaxis(h.image, 0, -1).squeeze()
        axes[0].imshow(image, cmap="gray_r" if image.ndim == 2 else None)
        axes[0].set_title("input", fontsize=8)
        k = 1
    unit_map = h.unit_scores[h.unit_map]
    limit = np.abs(unit_map).max() or 1.0  # each panel on its own scale: levels differ a lot
    axes[k].imshow(unit_map, cmap=cmap, vmin=-limit, vmax=limit)
    axes[k].set_title("units", fontsize=8)
    for ax, level in zip(axes[k + 1 :], picks):
        label = np.zeros(h.unit_map.shape, int)
        scores = np.full(h.unit_map.shape, np.nan)
        for i, comp in enumerate(h.levels[level], start=1):
            inside = np.isin(h.unit_map, comp.units)
            label[inside], scores[inside] = i, comp.score
        limit = np.nanmax(np.abs(scores)) if np.isfinite(scores).any() else 1.0
        ax.imshow(np.ma.masked_invalid(scores), cmap=cmap, vmin=-limit, vmax=limit)
        edges = find_boundaries(label, mode="inner") & (label > 0)
        ax.imshow(np.ma.masked_where(~edges, edges), cmap="gray", vmin=0, vmax=1, alpha=0.9)
        ax.set_title(f"level {level + 1}", fontsize=8)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    figure.suptitle("ACD hierarchy (red: for the class, blue: against; each panel on its own scale)", fontsize=9)
    figure.tight_layout()
    return figure
