r"""The adaptive wavelet distillation loss and the plain loop that minimises it."""

import copy
import math
import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import torch
from torch import nn, Tensor

from captum_cd.attr.contextual_decomposition import ContextualDecomposition
from captum_cd.attr.groups import target_scores
from captum_cd.penalties.base import ModelLoss
from captum_cd.wavelets.adaptive import AdaptiveWavelet, AdaptiveWavelet2d, validity_terms

DENSE_MAX = 128  # AWDLoss multiplies by the transform's matrices up to this many samples
METHODS = ("saliency", "input_x_gradient", "cd")


class AWDLoss(ModelLoss):
    r"""
    The adaptive wavelet distillation loss of a batch of inputs ``x``, with coefficients
    ``s = Psi x`` and reconstruction ``x_hat = Psi^-1 s``. Every term is per example,
    averaged over the batch:

    - ``reconstruction``: ``||x - x_hat||^2`` (always reported: orthogonality is a soft
      penalty with ``parametrization="filter"``, so this grows with ``lam_interp``);
    - the :func:`validity_terms` of the filter, each reported unweighted and added to the
      total times ``lam_wave``;
    - ``sparsity``: ``lam_l1 * ||s||_1``;
    - ``interpretation``: ``lam_interp * ||a(s)||_1``, ``a`` the attributions of the
      trained model ``f`` to the coefficients, through ``Psi^-1`` (the model sees exactly
      ``x``, plus ``Psi^-1`` of a zero-valued probe that carries the Jacobian) and the graph
      kept, so the loss backpropagates into the filter.

    ``total`` is their sum. ``method`` chooses ``a``:

    - ``"saliency"``: ``|df/ds|`` (double backpropagation, ``create_graph=True``; what
      the reference computes);
    - ``"input_x_gradient"``: ``s * df/ds``;
    - ``"cd"``: the contextual decomposition score of each coefficient, the relevant part
      of coefficient ``i`` being ``Psi^-1(e_i s_i) = s_i psi_i`` (all coefficients
      batched in one CD pass, :meth:`~captum_cd.ContextualDecomposition.forward_decomposition` with
      ``relevant=``). Memory grows as (coefficients x batch x input size).

    Each equals what :class:`~captum_cd.TRIM` gives over ``wavelet.transform()`` with
    Captum's ``Saliency`` (``abs=True``), ``InputXGradient`` or
    :class:`~captum_cd.ContextualDecomposition`. Captum's objects themselves are not
    accepted: they take gradients without ``create_graph``, so the loss could not reach
    the filter.

    The model is not a submodule: ``parameters()`` are the wavelet's only. Put the model
    in eval mode.

    Args:
        model (nn.Module): the trained model (teacher).
        wavelet (AdaptiveWavelet or AdaptiveWavelet2d): the wavelet being learned.
        lam_l1 (float, optional): weight of the sparsity term. Default: 0.1
        lam_interp (float, optional): weight of the interpretation term. Default: 1.0
        lam_wave (float, optional): weight of the validity terms. Default: 1.0
        method (str, optional): ``"saliency"``, ``"input_x_gradient"`` or ``"cd"``.
                    Default: "saliency"
        target (int, Tensor or str, optional): None for a model with one output per
                    example (regression), a class index, a tensor of one index per
                    example, or ``"predicted"`` (each example's arg-max class).
                    Default: None
        dense (bool, optional): compute the transform as products with its matrices
                    (built from the filter once per call) instead of convolutions; the
                    same values, faster for short signals. Default: None (dense up to
                    128 samples)

    Examples::

        >>> wavelet = AdaptiveWavelet("db5", levels=3, init_noise=0.3)
        >>> loss_fn = AWDLoss(teacher, wavelet, lam_l1=0.1, lam_interp=0.05)
        >>> terms = loss_fn(x_batch)
        >>> terms["total"].backward()
    """

    def __init__(
        self,
        model: nn.Module,
        wavelet: Union[AdaptiveWavelet, AdaptiveWavelet2d],
        lam_l1: float = 0.1,
        lam_interp: float = 1.0,
        lam_wave: float = 1.0,
        method: str = "saliency",
        target: Any = None,
        dense: Optional[bool] = None,
    ) -> None:
        super().__init__(model)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
        if not isinstance(wavelet, (AdaptiveWavelet, AdaptiveWavelet2d)):
            raise TypeError(f"wavelet must be an AdaptiveWavelet or AdaptiveWavelet2d, got {type(wavelet).__name__}.")
        self.wavelet = wavelet  # the one submodule: its filter is what the loss trains
        self.hold(transform=wavelet.transform())  # a view of the wavelet, not a second copy
        self.lam_l1, self.lam_interp, self.lam_wave = lam_l1, lam_interp, lam_wave
        self.method, self.target, self.dense = method, target, dense
        self._teacher = _with_detached_parameters(model)
        self._cd = ContextualDecomposition(self._teacher) if method == "cd" else None

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        r"""
        Args:
            x (Tensor): a batch of inputs ``(B, ..., N)`` (or ``(B, ..., H, W)``).

        Returns:
            *dict* with ``total``, ``reconstruction``, the validity terms, ``sparsity``
            and ``interpretation`` (0-dim tensors; the graph is kept).
        """
        self.wavelet._check_input(x)
        s, x_hat, atoms = self._analyse(x)
        terms = {"reconstruction": _per_example(x - x_hat, power=2)}
        validity = validity_terms(self.wavelet.lowpass())
        terms.update(validity)
        terms["sparsity"] = self.lam_l1 * _per_example(s)
        if self.lam_interp:
            terms["interpretation"] = self.lam_interp * _per_example(self.attributions(x, s, atoms))
        else:
            terms["interpretation"] = s.new_zeros(())
        terms["total"] = (
            terms["reconstruction"] + self.lam_wave * sum(validity.values()) + terms["sparsity"] + terms["interpretation"]
        )
        if not torch.isfinite(terms["total"]):  # one sync per batch; a NaN filter is never a result
            bad = [k for k, v in terms.items() if k != "total" and not torch.isfinite(v)]
            why = " (the teacher's output or its gradient is not finite on this batch)" if "interpretation" in bad else ""
            raise ValueError(f"AWDLoss: the {', '.join(bad) or 'total'} term is NaN or infinite{why}.")
        return terms

    def _analyse(self, x: Tensor) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """``s = Psi x``, ``x_hat = Psi^-1 s`` and, on the dense path, the synthesis
        matrix (rows: the atoms ``psi_i``); for small signals as products with the
        transform's matrices (built once per call by transforming the identity), which is
        faster than batched convolutions there and gives the same values to rounding."""
        dims = 2 if isinstance(self.wavelet, AdaptiveWavelet2d) else 1
        size = x.shape[x.dim() - dims :]
        n = size.numel()
        dense = self.dense if self.dense is not None else n <= DENSE_MAX
        if not dense:
            s = self.transform(x)
            return s, self.transform.inverse(s), None
        analysis = self.transform(torch.eye(n, dtype=x.dtype, device=x.device).view(n, *size))  # (n, K)
        synthesis = self.transform.inverse(torch.eye(analysis.shape[-1], dtype=x.dtype, device=x.device))
        s = x.flatten(x.dim() - dims) @ analysis
        return s, (s @ synthesis.reshape(-1, n)).unflatten(-1, size), synthesis

    def attributions(self, x: Tensor, s: Tensor, atoms: Optional[Tensor] = None) -> Tensor:
        r"""The attributions of the model to the coefficients ``s = transform(x)``, shaped
        like ``s``, differentiable in the filter. ``atoms``: ``transform.inverse`` of the
        unit coefficient vectors, when known."""
        if self.method == "cd":
            return self._cd_scores(x, s, atoms)
        with torch.enable_grad():  # gradients are the attributions, under no_grad too (as in Captum)
            # df/ds = J^T grad f(x), J the Jacobian of Psi^-1. The model sees x plus Psi^-1 of
            # a zero-valued probe: its input carries J (so the filter's gradient flows) but
            # does not move with the filter, so no Hessian of f enters the filter's gradient
            # (x_hat + (x - x_hat).detach() has value x yet moves with it in autograd).
            leaf = s.detach().requires_grad_()
            probe = self._synthesise(leaf - leaf.detach(), atoms, x)
            out = self._teacher(x + probe)
            score = target_scores(out.unsqueeze(0), out, self.target, predicted=True)[0]
            (gradient,) = torch.autograd.grad(score.sum(), leaf, create_graph=True)
        return gradient.abs() if self.method == "saliency" else s * gradient

    def _synthesise(self, s: Tensor, atoms: Optional[Tensor], x: Tensor) -> Tensor:
        """``Psi^-1 s`` shaped like ``x``: a product with the synthesis matrix on the dense path."""
        if atoms is not None and atoms.shape[0] == s.shape[-1]:
            return (s @ atoms.reshape(atoms.shape[0], -1)).reshape(x.shape)
        return self.transform.inverse(s)

    def _cd_scores(self, x: Tensor, s: Tensor, atoms: Optional[Tensor]) -> Tensor:
        batch, shape = s.shape[0], s.shape[1:]
        groups = shape.numel()
        if atoms is None or atoms.shape[0] != groups:  # atoms psi_i = Psi^-1(e_i)
            basis = torch.eye(groups, dtype=s.dtype, device=s.device).view(groups, *shape)
            atoms = self.transform.inverse(basis)  # (G, *input shape)
        else:
            atoms = atoms.reshape(groups, *x.shape[1:])
        weights = s.reshape(batch, groups).t().reshape(groups, batch, *([1] * (x.dim() - 1)))
        relevant = weights * atoms.unsqueeze(1)  # (G, B, *input shape)
        out = self._cd.forward_decomposition(x, relevant=relevant)
        return target_scores(out.rel, out.full, self.target, predicted=True).t().reshape(batch, *shape)


def _with_detached_parameters(model: nn.Module):
    """The model as a function whose parameters are detached on every call: the loss
    trains the wavelet only, so ``backward()`` leaves the teacher's ``.grad`` alone, and
    nothing of the teacher (flags, parameters) is touched."""

    def teacher(*inputs: Tensor) -> Tensor:
        parameters = {name: p.detach() for name, p in model.named_parameters()}
        return torch.func.functional_call(model, parameters, inputs)

    return teacher


def _per_example(t: Tensor, power: int = 1) -> Tensor:
    """The batch mean of each example's sum of ``|t|^power``."""
    values = t.pow(2) if power == 2 else t.abs()
    return values.reshape(t.shape[0], -1).sum(1).mean()


# ------------------------------------------------------------ training


def _batches(data: Any, batch_size: int, generator: Optional[torch.Generator], shuffle: bool) -> Iterable[Tensor]:
    if torch.is_tensor(data):
        order = torch.randperm(data.shape[0], generator=generator) if shuffle else torch.arange(data.shape[0])
        for index in order.split(batch_size):
            yield data[index.to(data.device)]
        return
    for batch in data:  # a DataLoader: its own batch size; the inputs come first
        yield batch[0] if isinstance(batch, (list, tuple)) else batch


def _check_device(model: nn.Module, device: torch.device) -> None:
    parameter = next(model.parameters(), None)
    if parameter is not None and parameter.device != device:
        raise ValueError(
            f"the model is on {parameter.device} but the data is on {device}; move one of them "
            "(the wavelet follows the data)."
        )


def _epoch_loss(loss_fn: AWDLoss, data: Any, batch_size: int, generator, optimizer=None) -> Dict[str, float]:
    """One pass over ``data``: the mean of each term (weighted by batch size); a step per
    batch when an optimizer is given."""
    sums: Dict[str, Tensor] = {}
    count = 0
    parameters = list(loss_fn.wavelet.parameters())
    for batch in _batches(data, batch_size, generator, shuffle=optimizer is not None):
        terms = loss_fn(batch)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward(inputs=parameters)
            optimizer.step()
        for key, value in terms.items():
            sums[key] = sums.get(key, 0) + value.detach() * batch.shape[0]
        count += batch.shape[0]
    if count == 0:
        raise ValueError("the data holds no batches.")
    return {key: float(value) / count for key, value in sums.items()}


def fit_wavelet(
    model: nn.Module,
    data: Any,
    wavelet: Optional[Union[AdaptiveWavelet, AdaptiveWavelet2d]] = None,
    lam_l1: float = 0.1,
    lam_interp: float = 1.0,
    lam_wave: float = 1.0,
    lr: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 100,
    validation: Optional[Any] = None,
    patience: int = 5,
    progress: bool = True,
    method: str = "saliency",
    target: Any = None,
    generator: Optional[torch.Generator] = None,
) -> Tuple[Union[AdaptiveWavelet, AdaptiveWavelet2d], Dict[str, List[float]]]:
    r"""
    Adapt a wavelet to data and a trained model: Adam on the wavelet's parameter,
    minimising :class:`AWDLoss` over mini-batches. The wavelet is moved to the data's
    device (the model must be there already); nothing defaults to CUDA.

    Args:
        model (nn.Module): the trained model (teacher), in eval mode; not changed.
        data (Tensor or iterable): the inputs ``(n, ..., N)`` (shuffled into batches of
                    ``batch_size`` every epoch), or an iterable of batches such as a
                    ``DataLoader`` (inputs first in each batch; its own batch size).
        wavelet (AdaptiveWavelet, optional): the wavelet to adapt, in place.
                    Default: ``AdaptiveWavelet("db5")``
        lam_l1, lam_interp, lam_wave, method, target: as for :class:`AWDLoss`.
        lr (float, optional): Adam's learning rate. Default: 1e-3
        epochs (int, optional): the most epochs. Default: 10
        batch_size (int, optional): batch size for tensor data. Default: 100
        validation (Tensor or iterable, optional): held-out inputs; with it, training stops
                    after ``patience`` epochs without a lower validation loss and the best
                    filter is restored. Default: None
        patience (int, optional): see ``validation``. Default: 5
        progress (bool, optional): show a tqdm progress bar. Default: True
        generator (torch.Generator, optional): for the shuffling. Default: None

    Returns:
        *tuple* ``(wavelet, history)``: the adapted wavelet and a dict of per-epoch lists,
        one per loss term (training means), plus ``"validation"`` (validation totals)
        when validation data is given.

    Examples::

        >>> wavelet, history = fit_wavelet(teacher, x_train, AdaptiveWavelet("db5", levels=3),
        ...                                lam_interp=0.05, epochs=20, validation=x_val)
    """
    from tqdm.auto import tqdm

    if batch_size < 1:  # before the first batch is drawn: torch's split fails unclearly on 0
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    for name, value in (("epochs", epochs), ("patience", patience)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}.")
    first = next(iter(_batches(data, batch_size, None, shuffle=False)), None)
    if first is None or first.shape[0] == 0:  # else a StopIteration or a reshape error deep in the loss
        raise ValueError("the data holds no examples.")
    _check_device(model, first.device)
    if model.training:
        warnings.warn("the model is in training mode; AWD explains a fixed model: call model.eval() first.", stacklevel=2)
    wavelet = AdaptiveWavelet("db5") if wavelet is None else wavelet
    wavelet.to(first.device)
    loss_fn = AWDLoss(model, wavelet, lam_l1=lam_l1, lam_interp=lam_interp, lam_wave=lam_wave, method=method, target=target)
    optimizer = torch.optim.Adam(wavelet.parameters(), lr=lr)
    history: Dict[str, List[float]] = {}
    best, best_state, stale = math.inf, None, 0
    bar = tqdm(range(epochs), desc="AWD", disable=not progress)
    for _ in bar:
        for key, value in _epoch_loss(loss_fn, data, batch_size, generator, optimizer).items():
            history.setdefault(key, []).append(value)
        postfix = {"loss": f"{history['total'][-1]:.4g}"}
        if validation is not None:
            current = _epoch_loss(loss_fn, validation, batch_size, None)["total"]
            history.setdefault("validation", []).append(current)
            postfix["val"] = f"{current:.4g}"
            if current < best:
                best, best_state, stale = current, copy.deepcopy(wavelet.state_dict()), 0
            else:
                stale += 1
        bar.set_postfix(postfix)
        if validation is not None and stale >= patience:
            break
    if best_state is not None:
        wavelet.load_state_dict(best_state)
    return wavelet, history
