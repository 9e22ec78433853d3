"""Agglomerative contextual decomposition (ACD): a hierarchy of feature groups for one
prediction, built bottom-up with CD as the joining score (Singh et al., ICLR 2019;
docs/methods.md, "Agglomerative CD")."""

import hashlib
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from captum.attr import Attribution
from captum.log import log_usage
from scipy import ndimage, sparse
from scipy.sparse.csgraph import connected_components
from torch import nn, Tensor
from tqdm.auto import tqdm

from captum_cd.attr._captum_compat import TargetType
from captum_cd.attr.contextual_decomposition import check_no_baselines, ContextualDecomposition
from captum_cd.attr.groups import check_target, select_rows
from captum_cd.attr.hierarchy import Component, Hierarchy


class AgglomerativeCD(Attribution):
    r"""
    Agglomerative contextual decomposition builds, for one prediction, a hierarchy of
    feature groups: which words join into phrases, which pixels into regions, with a
    CD score at every node.

    1-D (tokens, or the last dimension of a signal), as the original ``agg_1d``:
    every unit is scored alone; the units whose absolute score is at or above the
    ``percentile`` of the units not yet selected are selected; runs of selected units
    are the components; each component's neighbours are rescored by
    ``CD(C u {n}) - CD(C)``; repeat. 2-D (images), as the original ``agg_2d``: the same
    on blocks or superpixels with signed scores, 8-connected components, 4-adjacent
    candidates, the percentile lowered by 15 once a third is selected, a unit with 3 of
    its 4 neighbours selected joins, and at the end the components are merged pairwise,
    highest ``CD(A u B) - max(CD(A), CD(B))`` first, until one remains.

    All candidates of an iteration are scored in one batched CD pass, and no group is
    scored twice (a cache keyed by the group); a unit on the borders of several
    components is scored only with the last of them, the score the original keeps.

    More details: https://arxiv.org/abs/1806.05337
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        layer: Optional[nn.Module] = None,
        **cd_options: Any,
    ) -> None:
        r"""
        Args:

            model (nn.Module or Callable): The model to explain.
            layer (nn.Module, optional): Decompose from this module's output, e.g. the
                        embedding of a text model (token ids are then the input, batch
                        first: ``(B, T)``). Default: None
            **cd_options: ``rules``, ``module_rules``, ``stop_at_softmax``, as for
                        :class:`~captum_cd.ContextualDecomposition`.
        """
        super().__init__(model)
        self.cd = ContextualDecomposition(model, layer=layer, **cd_options)

    @classmethod
    def get_name(cls) -> str:
        return "AgglomerativeCD"

    def has_convergence_delta(self) -> bool:
        return False

    def attribute_future(self) -> None:
        r"""
        This method is not implemented for AgglomerativeCD.
        """
        raise NotImplementedError("attribute_future is not implemented for AgglomerativeCD")

    def hierarchy(
        self,
        inputs: Tensor,
        target: TargetType,
        percentile: float = 99.5,
        max_iterations: Optional[int] = None,
        block_size: int = 1,
        superpixels: Union[None, int, np.ndarray, Tensor] = None,
        score: str = "class",
        additional_forward_args: Optional[object] = None,
        tokens: Optional[Sequence[Sequence[str]]] = None,
        perturbations_per_eval: int = 512,
        show_progress: bool = False,
    ) -> Union[Hierarchy, List[Hierarchy]]:
        r"""
        Builds the hierarchy of each example.

        Args:

            inputs (Tensor): One example or a batch: token ids ``(B, T)`` (with
                        ``layer``), signals ``(B, L)`` or ``(B, C, L)``, or images
                        ``(B, C, H, W)``.
            target (int, Tensor or list): The class whose score is explained, for
                        every example or one per example.
            percentile (float, optional): Units at or above this percentile of the
                        scores not yet selected are selected at each iteration.
                        Default: 99.5 (the paper's figures)
            max_iterations (int, optional): Budget of levels: at most this many,
                        the final pairwise merges of images included (a budgeted
                        hierarchy may then end with several components).
                        Default: None (until every unit is selected and, for
                        images, merged into one)
            block_size (int, optional): Images: the side of the square blocks that are
                        the base units (1: pixels). Default: 1
            superpixels (int or array, optional): Images: base units from scikit-image's
                        SLIC instead of blocks; an int asks SLIC for about that many
                        segments, an ``(H, W)`` integer array gives the segments.
                        Default: None
            score (str, optional): ``"class"``: the CD score of the target class;
                        ``"difference"``: target minus the other class (binary
                        models, as the original text code does). Default: "class"
            additional_forward_args (Any, optional): Further model arguments.
            tokens (list of list of str, optional): The words, for pictures.
            perturbations_per_eval (int, optional): Groups per batched CD pass. Default: 512
            show_progress (bool, optional): A tqdm bar per example: levels built and
                        units selected. Default: False

        Returns:
            :class:`~captum_cd.Hierarchy` for a single example (1-D token ids ``(T,)``
            or a batch of one), else a list of them, one per example.
        """
        single = inputs.ndim == 1 and not inputs.is_floating_point() or inputs.shape[0] == 1
        if inputs.ndim == 1 and not inputs.is_floating_point():
            inputs = inputs.unsqueeze(0)
        targets = _per_example(target, inputs.shape[0])
        _check_options(percentile, max_iterations, block_size, superpixels, tokens, perturbations_per_eval, inputs.shape[0])
        results = []
        for b in range(inputs.shape[0]):
            example = inputs[b : b + 1]
            args = select_rows(additional_forward_args, slice(b, b + 1), inputs.shape[0])
            units = self._units(example, block_size, superpixels)
            if tokens is not None and len(tokens[b]) != units.count:
                raise ValueError(f"tokens[{b}] has {len(tokens[b])} words for a sentence of {units.count} tokens; give one word per token.")
            scorer = _Scorer(self.cd, example, args, units, targets[b], score, perturbations_per_eval)
            desc = f"{self.get_name()} {b + 1}/{inputs.shape[0]}"
            with tqdm(total=max_iterations, desc=desc, unit="level", disable=not show_progress) as bar:
                if units.unit_map.ndim == 1:
                    h = _agglomerate_1d(scorer, units, percentile, max_iterations, bar)
                    h.tokens = tokens[b] if tokens is not None else None
                else:
                    h = _agglomerate_2d(scorer, units, percentile, max_iterations, bar)
                    h.image = example[0].detach().cpu().numpy() if self.cd.layer is None else None
            results.append(h)
        return results[0] if single else results

    @log_usage()
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor]],
        baselines: None = None,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        level: int = -1,
        show_progress: bool = False,
        **hierarchy_options: Any,
    ) -> Union[Tensor, Tuple[Tensor]]:
        r"""
        Each feature's score at one level of its example's hierarchy: the score of the
        component it belongs to, or its unit's own score if it is in none yet, so the
        hierarchy plugs into Captum's visualisation and metrics. The positional order
        is Captum's (``inputs, baselines, target, additional_forward_args``).

        Args:

            inputs (Tensor or tuple[Tensor]): As in :meth:`hierarchy`; a tuple holding
                        one tensor (as ``captum.metrics.sensitivity_max`` passes it)
                        gives a tuple back.
            baselines (None): ACD needs no baseline; must be None. Default: None
            target (int, Tensor or list): As in :meth:`hierarchy`.
            additional_forward_args (Any, optional): Further model arguments.
            level (int, optional): Which level (an index into ``Hierarchy.levels``,
                        clipped to the levels an example has). Default: -1 (the last)
            show_progress (bool, optional): A tqdm bar per example. Default: False
            **hierarchy_options: Passed to :meth:`hierarchy`.

        Returns:
            *Tensor* (or a 1-tuple) of **attributions**: shaped like ``inputs`` for
            images and signals. With ``layer`` (token models), one score per token,
            shape ``(B, T)`` like the token ids: what Captum's ``visualize_text``
            takes as word attributions (no sum over the embedding dimension).
        """
        check_no_baselines(baselines, self.get_name())
        is_tuple = isinstance(inputs, tuple)
        if is_tuple:
            if len(inputs) != 1:
                raise ValueError(
                    f"AgglomerativeCD builds a hierarchy over one input tensor; got a tuple of {len(inputs)}."
                )
            inputs = inputs[0]
        hierarchies = self.hierarchy(
            inputs, target, additional_forward_args=additional_forward_args, show_progress=show_progress, **hierarchy_options
        )
        hierarchies = hierarchies if isinstance(hierarchies, list) else [hierarchies]
        shape = None if self.cd.layer is not None else inputs.shape[1:]
        out = []
        for h in hierarchies:
            level_index = max(-len(h.levels), min(level, len(h.levels) - 1)) if h.levels else 0
            scores = torch.as_tensor(h.feature_scores(level_index), dtype=torch.float32, device=inputs.device)
            out.append(scores if shape is None else _broadcast_units(scores, shape))
        attributions = torch.stack(out)
        return (attributions,) if is_tuple else attributions

    # ------------------------------------------------------------------ units

    def _units(self, example: Tensor, block_size: int, superpixels) -> "_Units":
        full_shape = self.cd._feature_shapes((example,), None)[0]  # what is decomposed
        if full_shape[0] != 1:
            raise ValueError(
                f"the decomposed tensor has shape {tuple(full_shape)} for one example; AgglomerativeCD "
                "needs it batch first, (1, T, ...) for text (use batch_first=True layers)."
            )
        shape = full_shape[1:]
        if self.cd.layer is not None or len(shape) < 3:  # tokens (T, E) or signals (L,) / (C, L)
            length = shape[0] if self.cd.layer is not None else shape[-1]
            return _Units.chain(length, shape, token_axis=0 if self.cd.layer is not None else len(shape) - 1)
        height, width = shape[-2:]
        if superpixels is not None:
            return _Units.from_label_map(_superpixel_map(example, superpixels, (height, width)), shape)
        if block_size < 1:
            raise ValueError(f"block_size must be a positive integer; got {block_size}.")
        return _Units.grid(height, width, block_size, shape)


# ---------------------------------------------------------------------- base units


class _Units:
    """Base units: a map from feature positions to units (they partition the features),
    the shape of a set's mask (``unit_map``'s shape, dimensions of size 1 where the mask
    broadcasts), and which units are adjacent (candidates) and connected (components),
    as sparse graphs: a 64x64 image's 4096 pixels cost no dense 4096 x 4096 matrix."""

    def __init__(self, unit_map: np.ndarray, mask_shape, adjacent: sparse.csr_matrix, connected: sparse.csr_matrix, grid=None):
        self.unit_map, self.mask_shape, self.adjacent, self.connected = unit_map, tuple(mask_shape), adjacent, connected
        self.grid = grid  # (rows, cols) of blocks, whose components scipy's image labelling finds faster
        self.edges = adjacent.tocoo()  # (unit, neighbour) pairs, both ways
        self.degree = np.diff(adjacent.indptr)

    @property
    def count(self) -> int:
        return self.adjacent.shape[0]

    @classmethod
    def chain(cls, length: int, shape, token_axis: int) -> "_Units":
        unit_map = np.arange(length)
        mask_shape = [1] * len(shape)
        mask_shape[token_axis] = length  # broadcasts over the other feature dims
        adjacent = _graph(unit_map[:-1], unit_map[1:], length)
        return cls(unit_map, mask_shape, adjacent, adjacent)

    @classmethod
    def grid(cls, height: int, width: int, block: int, shape) -> "_Units":
        rows, cols = -(-height // block), -(-width // block)
        unit_map = (np.arange(height)[:, None] // block) * cols + np.arange(width)[None, :] // block
        ids = np.arange(rows * cols).reshape(rows, cols)
        right, down = (ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])
        diagonals = (ids[:-1, :-1], ids[1:, 1:]), (ids[:-1, 1:], ids[1:, :-1])
        adjacent = _graph(*_pairs(right, down), rows * cols)  # 4-neighbours
        connected = _graph(*_pairs(right, down, *diagonals), rows * cols)  # 8-neighbours
        return cls(unit_map, _image_mask_shape(unit_map, shape), adjacent, connected, grid=(rows, cols))

    @classmethod
    def from_label_map(cls, labels: np.ndarray, shape) -> "_Units":
        _, unit_map = np.unique(labels, return_inverse=True)
        unit_map = unit_map.reshape(labels.shape)
        count = int(unit_map.max()) + 1
        across = (unit_map[:, 1:], unit_map[:, :-1]), (unit_map[1:, :], unit_map[:-1, :])
        a, b = _pairs(*across)
        touching = a != b
        adjacent = _graph(a[touching], b[touching], count)
        return cls(unit_map, _image_mask_shape(unit_map, shape), adjacent, adjacent)

    def components(self, selected: np.ndarray) -> List[np.ndarray]:
        """Connected components of the selected units, ordered by their first unit
        (the raster order scikit-image's ``label`` uses)."""
        index = np.flatnonzero(selected)
        if index.size == 0:
            return []
        if self.grid is not None:  # 8-connected blocks: the image labelling of the block grid
            labels = ndimage.label(selected.reshape(self.grid), structure=np.ones((3, 3), bool))[0].ravel()[index] - 1
        else:
            labels = connected_components(self.connected[index][:, index], directed=False)[1]
        order = np.argsort(labels, kind="stable")  # each component's units stay in order
        comps = np.split(index[order], np.cumsum(np.bincount(labels))[:-1])
        return sorted(comps, key=lambda c: c[0])

    def borders(self, comps: Sequence[np.ndarray]) -> List[np.ndarray]:
        """Each component's neighbours: units adjacent to it and not in it, in order."""
        owner = np.zeros(self.count, np.int64)  # 1 + the component's position, 0: none
        owner[np.concatenate(comps)] = np.repeat(np.arange(1, len(comps) + 1), [len(c) for c in comps])
        inside, outside = self.edges.row, self.edges.col
        leaving = (owner[inside] > 0) & (owner[outside] != owner[inside])
        pairs = np.unique((owner[inside[leaving]] - 1) * self.count + outside[leaving])
        position, unit = np.divmod(pairs, self.count)
        return np.split(unit, np.searchsorted(position, np.arange(1, len(comps))))

    def selected_neighbours(self, selected: np.ndarray) -> np.ndarray:
        """How many of each unit's neighbours are selected."""
        return self.adjacent @ selected.astype(np.int64)


def _pairs(*pairs: Tuple[np.ndarray, np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """(a, b) index arrays of neighbouring positions, flattened and concatenated."""
    return np.concatenate([a.ravel() for a, _ in pairs]), np.concatenate([b.ravel() for _, b in pairs])


def _graph(a: np.ndarray, b: np.ndarray, count: int) -> sparse.csr_matrix:
    """The undirected graph with edges a[i] - b[i] (duplicates once), as a boolean CSR matrix."""
    edges = sparse.coo_matrix((np.ones(2 * len(a), bool), (np.r_[a, b], np.r_[b, a])), shape=(count, count)).tocsr()
    edges.sum_duplicates()
    edges.data[:] = True
    return edges


def _image_mask_shape(unit_map: np.ndarray, shape) -> Tuple[int, ...]:
    """A set's mask over ``(C, H, W)`` features: ``(1, H, W)``, shared by the channels."""
    return (*([1] * (len(shape) - 2)), *unit_map.shape)


def _superpixel_map(example: Tensor, superpixels, size) -> np.ndarray:
    if isinstance(superpixels, (int, np.integer)):
        from skimage.segmentation import slic

        image = example[0].detach().cpu().numpy()
        image = np.moveaxis(image, 0, -1) if image.ndim == 3 else image
        channel_axis = -1 if image.ndim == 3 and image.shape[-1] > 1 else None
        return slic(image.squeeze(), n_segments=int(superpixels), channel_axis=channel_axis, start_label=0)
    labels = np.asarray(superpixels.cpu() if isinstance(superpixels, Tensor) else superpixels)
    if labels.shape != tuple(size) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"superpixels must be an integer label map of shape {tuple(size)} (the image's height "
            f"and width); got {labels.dtype} of shape {labels.shape}."
        )
    return labels


def _broadcast_units(scores: Tensor, shape) -> Tensor:
    """Unit-map-shaped scores -> the decomposed shape (trailing dims broadcast)."""
    if scores.ndim == 1 and len(shape) >= 1 and shape[0] == scores.shape[0]:  # tokens (T, E)
        return scores.view(-1, *([1] * (len(shape) - 1))).expand(*shape)
    return scores.expand(*shape)


# ---------------------------------------------------------------------- scoring


class _Scorer:
    """CD scores of sets of units for one example, batched and cached: a set is a row of
    a membership matrix (sets x units) packed 8 units a byte (``np.packbits``), and the
    packed row is its cache key."""

    def __init__(self, cd: ContextualDecomposition, example: Tensor, args, units: _Units, target, score: str, per_pass: int):
        if score not in ("class", "difference"):
            raise ValueError(f"score must be 'class' or 'difference'; got {score!r}.")
        self.cd, self.example, self.args, self.units, self.per_pass = cd, example, args, units, per_pass
        with torch.no_grad():
            out = cd.forward_func(*(example,), *(args or ()))
        if out.ndim < 1 or out.shape[0] != 1:
            raise ValueError(
                f"the model's output has shape {tuple(out.shape)} for one example; AgglomerativeCD "
                "needs batch-first inputs and outputs, (1, T) token ids giving a (1, classes) output."
            )
        if not torch.isfinite(out).all():
            raise ValueError("the model's output is NaN or infinite for this example; no hierarchy can be built from it.")
        check_target(target, out)
        if score == "difference" and (out.ndim != 2 or out.shape[1] != 2):
            raise ValueError(f"score='difference' needs a binary model (output (B, 2)); got output of shape {tuple(out.shape)}.")
        self.target, self.difference = int(target), score == "difference"
        self.cache: Dict[bytes, float] = {}
        # A set's mask is its membership read at each feature's unit.
        self.owner = torch.as_tensor(units.unit_map.ravel(), device=example.device)

    def __call__(self, sets: Sequence[np.ndarray]) -> np.ndarray:
        """The scores of sets given as arrays of units."""
        membership = np.zeros((len(sets), self.units.count), bool)
        if len(sets):
            rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
            membership[rows, np.concatenate([np.asarray(s, np.int64) for s in sets])] = True
        return self.rows(np.packbits(membership, axis=1))

    def rows(self, packed: np.ndarray) -> np.ndarray:
        """The scores of the sets a packed membership matrix holds, one a row; only the
        sets never scored before go through CD."""
        keys = _row_keys(packed)
        new = {k: i for i, k in enumerate(keys) if k not in self.cache}  # the first row of each new set
        todo = np.fromiter(new.values(), np.int64, len(new))
        for start in range(0, len(todo), self.per_pass):
            chunk = todo[start : start + self.per_pass]
            self.cache.update(zip((keys[i] for i in chunk), self._cd(packed[chunk])))
        return np.array([self.cache[k] for k in keys])

    def _cd(self, packed: np.ndarray) -> List[float]:
        """One batched CD pass over the sets (rows of a packed membership matrix)."""
        membership = np.unpackbits(packed, axis=1, count=self.units.count).view(bool)
        member = torch.from_numpy(membership).to(self.example.device)
        dtype = self.example.dtype if self.cd.layer is None else torch.float32
        masks = member.index_select(1, self.owner).to(dtype).view(len(member), *self.units.mask_shape)
        with torch.no_grad():
            rel, _ = self.cd.decompose(self.example, masks, self.args)
        rel = rel[:, 0]
        values = rel[:, self.target] - rel[:, 1 - self.target] if self.difference else rel[:, self.target]
        return values.double().cpu().tolist()

    def each_unit(self) -> np.ndarray:
        """Every base unit's own score, a pass's worth of units at a time (never an
        (units x units) matrix: 50,000 pixels would need 2.5 GB)."""
        n, step = self.units.count, self.per_pass
        alone = (np.packbits(np.arange(s, min(s + step, n))[:, None] == np.arange(n), axis=1) for s in range(0, n, step))
        return np.concatenate([self.rows(packed) for packed in alone])

    def one(self, units: np.ndarray) -> float:
        return float(self([units])[0])


def _row_keys(packed: np.ndarray) -> list:
    """A hashable key for each row of a packed membership matrix: its bytes, or past 1 KB
    a row (over 8,192 units) a 16-byte digest, so the cache stays small."""
    packed = np.ascontiguousarray(packed)
    if packed.shape[1] <= 1024:
        return packed.view(np.dtype((np.void, packed.shape[1]))).ravel().tolist()
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in packed]


def _per_example(target, batch: int) -> List[int]:
    if target is None:
        raise ValueError("AgglomerativeCD needs a target class (an int, or one per example).")
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices; got a tensor of {target.dtype}.")
        target = target.flatten().tolist() if target.numel() > 1 else int(target)
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * batch
    if len(targets) != batch:
        raise ValueError(f"target has {len(targets)} entries for {batch} examples.")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, numbers.Integral):
            raise TypeError(f"target {t!r} is not a class index; AgglomerativeCD's targets are ints.")
    return [int(t) for t in targets]


def _check_options(percentile, max_iterations, block_size, superpixels, tokens, per_pass, batch: int) -> None:
    """The arguments of ``hierarchy``, checked before anything runs."""
    if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be a number in [0, 100]; got {percentile!r}.")
    for name, value, none_ok in (("max_iterations", max_iterations, True), ("block_size", block_size, False),
                                 ("perturbations_per_eval", per_pass, False)):  # fmt: skip
        if (value is not None or not none_ok) and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
            raise ValueError(f"{name} must be a positive integer{' or None' if none_ok else ''}; got {value!r}.")
    if isinstance(superpixels, (bool, float)) or (isinstance(superpixels, numbers.Integral) and superpixels < 1):
        raise ValueError(f"superpixels must be a positive integer (how many) or a label map; got {superpixels!r}.")
    if tokens is not None and (isinstance(tokens, str) or len(tokens) != batch):
        raise ValueError(f"tokens must hold one list of words per example ({batch}); got {type(tokens).__name__} of length {len(tokens)}.")


# ---------------------------------------------------------------------- 1-D


def _threshold_1d(scores: np.ndarray, percentile: float) -> np.ndarray:
    """The original ``agg_1d`` rule: absolute scores; with 5 or fewer left, pick 1 or 2."""
    scores = np.abs(scores)
    left = int(np.sum(~np.isnan(scores)))
    if left == 0:
        return np.zeros(scores.shape, bool)
    percentile = {5: 59, 4: 49, 3: 59, 2: 49, 1: 0}.get(left, percentile)
    with np.errstate(invalid="ignore"):
        return scores >= np.nanpercentile(scores, percentile)


def _agglomerate_1d(score: _Scorer, units: _Units, percentile: float, max_iterations: Optional[int], bar=None) -> Hierarchy:
    n = units.count
    everything = np.arange(n)
    scores = score.each_unit()
    unit_scores = scores.copy()
    selected = _threshold_1d(scores, percentile)
    levels: List[List[Component]] = []
    for _ in range(max_iterations if max_iterations is not None else n + 1):
        comps = units.components(selected)
        # Each component and the component plus its left and right neighbour (the
        # original's tiles; at an edge the "neighbour" is the component's own end).
        sides = [(max(0, c[0] - 1), min(n - 1, c[-1] + 1)) for c in comps]
        sets = [s for c, (left, right) in zip(comps, sides) for s in (c, np.union1d(c, [left]), np.union1d(c, [right]))]
        values = score(sets)
        level = []
        for i, (comp, (left, right)) in enumerate(zip(comps, sides)):
            comp_score = values[3 * i]
            level.append(Component(tuple(int(u) for u in comp), float(comp_score)))
            scores[left], scores[right] = values[3 * i + 1] - comp_score, values[3 * i + 2] - comp_score
        scores[selected] = np.nan
        new = _threshold_1d(scores, percentile)
        selected = selected | new
        levels.append(level)
        _advance(bar, selected)
        if not new.any():
            break
    return Hierarchy(levels, unit_scores, score.one(everything), units.unit_map)


# ---------------------------------------------------------------------- 2-D


def _threshold_2d(scores: np.ndarray, percentile: float) -> np.ndarray:
    """The original ``agg_2d`` rule: signed scores; 15 lower once a third is picked, and
    4 lower at a time until something is picked."""
    picked = np.isnan(scores)
    if picked.all():
        return np.zeros(scores.shape, bool)
    if picked.sum() > scores.size / 3:
        percentile -= 15
    while True:
        with np.errstate(invalid="ignore"):
            chosen = (scores >= np.nanpercentile(scores, max(percentile, 0))) & ~picked
        if chosen.any() or percentile <= 0:
            return chosen
        percentile -= 4


def _smooth(units: _Units, selected: np.ndarray) -> np.ndarray:
    """A unit with 3 of its 4 neighbours selected joins (for superpixels: at least 3 and
    three quarters of its neighbours)."""
    count = units.selected_neighbours(selected)
    return selected | ((count >= 3) & (count >= 0.75 * units.degree))


def _correspond(previous: Dict[int, np.ndarray], comps: List[np.ndarray]) -> Dict[int, np.ndarray]:
    """The original's ``establish_correspondence``: a component keeps the id of the
    (smallest) earlier component it contains; new ones take the free ids of 1..11, the
    smallest going to the last new component in raster order; where that fails (more
    components than ids) the plain raster-order ids are used."""
    none = np.iinfo(np.int64).max
    owner = np.full(1 + int(np.concatenate([*previous.values(), *comps, [0]]).max()), none)
    for k, units in previous.items():
        owner[units] = k
    starts = np.cumsum([0] + [len(c) for c in comps[:-1]])
    smallest = np.minimum.reduceat(owner[np.concatenate(comps)], starts).tolist() if comps else []
    remaining = list(range(1, 12))
    ids: List[Optional[int]] = []
    try:
        for match in smallest:  # each component's smallest earlier id
            if match != none:
                remaining.remove(match)
                ids.append(match)
            else:
                ids.append(None)
        for position in reversed(range(len(ids))):
            if ids[position] is None:
                ids[position] = remaining.pop(0)
    except (ValueError, IndexError):
        ids = list(range(1, len(comps) + 1))
    return dict(sorted(zip(ids, comps)))


def _agglomerate_2d(score: _Scorer, units: _Units, percentile: float, max_iterations: Optional[int], bar=None) -> Hierarchy:
    n = units.count
    scores = score.each_unit()
    unit_scores = scores.copy()
    selected = _threshold_2d(scores, percentile)
    levels: List[List[Component]] = []
    comps: Dict[int, np.ndarray] = {}
    comp_scores: Dict[int, float] = {}
    for step in range(max_iterations if max_iterations is not None else n + 1):
        if selected.all():
            break
        found = units.components(selected)
        comps = _correspond(comps, found) if step > 0 else {k: c for k, c in enumerate(found, start=1)}
        membership, candidates = _level_sets(units, list(comps.values()))
        values = score.rows(membership)
        comp_values = values[: len(comps)]
        comp_scores = dict(zip(comps, comp_values.tolist()))
        position, unit = candidates
        scores[unit] = values[len(comps) :] - comp_values[position]
        levels.append([Component(tuple(c.tolist()), comp_scores[k]) for k, c in comps.items()])
        scores[selected] = np.nan
        selected = _smooth(units, selected | _threshold_2d(scores, percentile))
        _advance(bar, selected)
    if not levels:  # everything picked at once (a constant image): one level, no iteration
        comps = dict(enumerate(units.components(selected), start=1))
        comp_scores = dict(zip(comps, score(list(comps.values()))))
        levels.append([Component(tuple(int(u) for u in c), float(comp_scores[k])) for k, c in comps.items()])
    hierarchy = Hierarchy(levels, unit_scores, score.one(np.arange(n)), units.unit_map)
    _merge_final(score, comps, comp_scores, hierarchy, max_iterations, bar)
    return hierarchy


def _level_sets(units: _Units, comps: List[np.ndarray]) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """The sets one iteration scores: every component, then ``C + u`` for each unit ``u``
    on a component's border, as rows of a packed membership matrix; and each
    candidate's (component position, unit).

    A unit on the borders of several components takes the score it gets with the last
    of them (the original assigns them in turn, so the last one stays); its candidates
    with the others are not scored, since nothing reads their scores."""
    borders = units.borders(comps)
    position = np.repeat(np.arange(len(comps)), [len(b) for b in borders])
    unit = np.concatenate(borders) if borders else np.zeros(0, np.int64)
    last = len(unit) - 1 - np.unique(unit[::-1], return_index=True)[1]  # each unit's last component
    position, unit = position[np.sort(last)], unit[np.sort(last)]
    membership = np.zeros((len(comps), units.count), bool)
    membership[np.repeat(np.arange(len(comps)), [len(c) for c in comps]), np.concatenate(comps)] = True
    packed = np.packbits(membership, axis=1)
    candidates = packed[position]  # each component's row, then its unit's bit set
    candidates[np.arange(len(unit)), unit // 8] |= (128 >> (unit % 8)).astype(np.uint8)
    return np.concatenate([packed, candidates]), (position, unit)


def _advance(bar, selected: np.ndarray) -> None:
    """One more level on the progress bar (if any), with how many units are selected."""
    if bar is not None:
        bar.set_postfix_str(f"{int(selected.sum())}/{selected.size} units", refresh=False)
        bar.update()


def _merge_final(
    score: _Scorer,
    comps: Dict[int, np.ndarray],
    comp_scores: Dict[int, float],
    hierarchy: Hierarchy,
    max_levels: Optional[int] = None,
    bar=None,
) -> None:
    """Merge the last components pairwise, the pair that gains most over its better half
    first, until one remains or the budget of levels is spent; every merge is one more
    level."""
    comps, comp_scores = dict(comps), dict(comp_scores)
    while len(comps) > 1 and (max_levels is None or len(hierarchy.levels) < max_levels):
        pairs = [(a, b) for a in comps for b in comps if a < b]
        unions = score([np.concatenate([comps[a], comps[b]]) for a, b in pairs])
        gains = [u - max(comp_scores[a], comp_scores[b]) for u, (a, b) in zip(unions, pairs)]
        best = int(np.argmax(gains))  # the first of equal gains, as the original
        a, b = pairs[best]
        hierarchy.merges.append((tuple(int(u) for u in comps[a]), tuple(int(u) for u in comps[b]), float(unions[best])))
        comps[a] = np.sort(np.concatenate([comps[a], comps.pop(b)]))
        comp_scores[a] = float(unions[best])
        del comp_scores[b]
        hierarchy.levels.append([Component(tuple(int(u) for u in comps[k]), comp_scores[k]) for k in sorted(comps)])
        if bar is not None:
            bar.set_postfix_str(f"merging: {len(comps)} components", refresh=False)
            bar.update()
