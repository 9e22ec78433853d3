"""Token scores in the shape Captum's text tools take, and a one-call visualisation record."""

from typing import Optional, Sequence

import torch
from captum.attr import visualization
from torch import Tensor


def token_scores(attributions: Tensor) -> Tensor:
    r"""
    One score per token from group attributions over an embedding.

    :class:`~captum_cd.ContextualDecomposition` (``layer=model.embed``) gives every
    feature its group's score, as Captum's FeatureAblation does: with one group per
    token, each token's score is repeated over the E embedding dimensions, so Captum's
    habit ``attributions.sum(-1)`` (right for gradient methods) would give E times the
    score. This returns the score itself.

    Args:

        attributions (Tensor): Shape ``(B, T, *rest)`` (usually ``(B, T, E)``), every
                    token's features in one group (``feature_mask`` of shape
                    ``(1, T, 1)``, e.g. ``torch.arange(T).view(1, T, 1)``).

    Returns:
        *Tensor* of shape ``(B, T)``.

    Raises:
        ValueError: if a token's scores differ across its features (its features were
            not one group), where no single token score exists.
    """
    if attributions.ndim < 2:
        raise ValueError(f"attributions must be (B, T, ...); got shape {tuple(attributions.shape)}.")
    flat = attributions.reshape(*attributions.shape[:2], -1)
    first = flat[..., 0]
    if not torch.equal(flat, first.unsqueeze(-1).expand_as(flat)):
        raise ValueError(
            "a token's scores differ across its features, so they are not one group's score: "
            "group each token's features, e.g. feature_mask=torch.arange(T).view(1, T, 1)."
        )
    return first


def visualization_record(
    word_attributions: Tensor,
    tokens: Sequence[str],
    output: Tensor,
    target: Optional[int] = None,
    true_class: Optional[int] = None,
    attr_score: Optional[float] = None,
    convergence_score: Optional[float] = None,
    normalize: bool = True,
) -> visualization.VisualizationDataRecord:
    r"""
    Captum's :class:`~captum.attr.visualization.VisualizationDataRecord` for one
    example, ready for ``captum.attr.visualization.visualize_text([record])``.

    Args:

        word_attributions (Tensor): One example's token scores, ``(T,)`` or ``(1, T)``
                    (from :meth:`AgglomerativeCD.attribute` or :func:`token_scores`);
                    ``(T, E)`` or ``(1, T, E)`` group attributions go through
                    :func:`token_scores`.
        tokens (list[str]): The T words.
        output (Tensor): The model's logits for the example, ``(C,)`` or ``(1, C)``.
        target (int, optional): The class the scores explain. Default: None (the
                    predicted class)
        true_class (int, optional): The label. Default: None (shown as the target)
        attr_score (float, optional): The score shown as "Attribution Score".
                    Default: None (the sum of the token scores, Captum's convention)
        convergence_score (float, optional): Shown as is. Default: None
        normalize (bool, optional): Divide the scores by their largest magnitude:
                    ``visualize_text`` colours values in [-1, 1]. Default: True

    Returns:
        *VisualizationDataRecord*
    """
    scores = word_attributions.detach()
    if scores.ndim == 2 and scores.shape[0] == 1:  # (1, T)
        scores = scores[0]
    elif scores.ndim == 2:  # (T, E)
        scores = token_scores(scores.unsqueeze(0))[0]
    elif scores.ndim == 3 and scores.shape[0] == 1:  # (1, T, E)
        scores = token_scores(scores)[0]
    elif scores.ndim != 1:
        raise ValueError(f"word_attributions of one example must be (T,), (1, T), (T, E) or (1, T, E); got {tuple(scores.shape)}.")
    if scores.numel() != len(tokens):
        raise ValueError(f"got {scores.numel()} token scores for {len(tokens)} tokens.")
    logits = output.detach().reshape(-1)
    probabilities = torch.softmax(logits.float(), dim=0)
    predicted = int(probabilities.argmax())
    target = predicted if target is None else int(target)
    total = float(scores.sum()) if attr_score is None else float(attr_score)
    if normalize and scores.abs().max() > 0:
        scores = scores / scores.abs().max()
    return visualization.VisualizationDataRecord(
        scores.cpu(),
        float(probabilities[predicted]),
        predicted,
        target if true_class is None else int(true_class),
        target,
        total,
        list(tokens),
        convergence_score,
    )
