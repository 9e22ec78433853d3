"""Contextual decomposition (CD) as a Captum attribution method, and the engine's entry:
:meth:`ContextualDecomposition.forward_decomposition` runs the model on
:class:`~captum_cd.Decomposition` values (or starts them at ``layer``) with the call's
context and module rules installed. Groups, masks and targets are :mod:`captum_cd.attr.groups`."""

import contextlib
import copy
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from captum.attr import Attribution
from captum.log import log_usage
from torch import nn, Tensor
from torch.futures import Future
from tqdm.auto import tqdm

from captum_cd.attr._captum_compat import (
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
    DecompositionAttribution,
    TargetType,
    TensorOrTupleOfTensorsGeneric,
)
from captum_cd.attr.decomposition import (
    current_context,
    Decomposition,
    DecompositionContext,
    CALLERS_HOOKS,
    decomposition_context,
    saved_tensor_hooks,
    windowed,
)
from captum_cd.attr.engines import check_history
from captum_cd.attr.errors import compiled, compiled_message, DecompositionError, runs_eagerly
from captum_cd.attr.finite import check_output
from captum_cd.attr.groups import (
    as_tensors,
    check_masks,
    check_pairs,
    groups_from_ids,
    largest_over_groups,
    masks_for_examples,
    one_hot_groups,
    output_scores,
    passes,
    relevant_parts,
    rows_per_pass,
    same_rows,
    target_for_examples,
    target_scores,
)
from captum_cd.attr.module_rules import ModuleKey, module_rules_installed

TensorOrTuple = Union[Tensor, Tuple[Tensor, ...]]
_NOT_RECOMPUTABLE = (
    "module_rules act through module hooks that exist only during the CD call's forward pass. Give "
    "function rules for the whole model (rules=) instead, or turn checkpointing off for this pass"
)


class ContextualDecomposition(DecompositionAttribution, Attribution):
    r"""
    Contextual decomposition (CD) [Murdoch et al. 2018; Singh et al. 2019] splits every
    activation of a forward pass into the contribution of a group of input features
    (``relevant``, beta) and everything else (``irrelevant``, gamma: the other features,
    the biases, and the interactions with them), with ``relevant + irrelevant`` equal to
    the model's output. It scores *groups* of features, and their interactions, for the
    cost of about one forward pass: one ordinary pass shared by all groups plus the
    propagation of the relevant parts of G groups, batched together.

    The decomposition follows the model's own code, torch function by torch function
    (``F.relu`` in ``forward``, residual ``+``, ``view``, a module used twice, data-
    dependent control flow), with one rule per function
    (:mod:`captum_cd.rules`). A function without a rule raises an error naming it
    and where the model called it; nothing is skipped silently.

    The model is used as it is: its mode, parameters, hooks and flags are left alone.
    Dropout or batch norm in training mode raise an error (call ``model.eval()``); a
    model whose output is a softmax raises unless ``stop_at_softmax=True``.

    More details: https://arxiv.org/abs/1801.05453 and https://arxiv.org/abs/1806.05337
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        layer: Optional[nn.Module] = None,
        rules: Optional[Dict[Callable, Callable]] = None,
        module_rules: Optional[Dict[ModuleKey, Union[Callable, Dict[Callable, Callable]]]] = None,
        stop_at_softmax: bool = False,
    ) -> None:
        r"""
        Args:

            model (nn.Module or Callable): The model (or any function of tensors built
                        from torch functions) to decompose. It must return one tensor.
            layer (nn.Module, optional): Start the decomposition at the output of this
                        module instead of at the inputs: relevant = mask * output of
                        ``layer``, irrelevant = the rest. Needed for integer inputs
                        (``layer=model.embedding``) and useful to decompose from an
                        intermediate feature map. Masks are then shaped like the
                        layer's output. ``layer`` must run once per forward pass.
                        Default: None
            rules (dict, optional): Rules for torch functions that replace the global
                        ones (:func:`captum_cd.register_rule`) for this model only,
                        ``{torch function: rule}``.
                        Default: None
            module_rules (dict, optional): Rules that apply to one module only. Keys
                        are a module, a module class (every instance in the model) or
                        a qualified name (``"encoder.0"``). A value is either a dict of
                        function rules that hold while that module runs (for example
                        ``{F.gelu: captum_cd.rules.relu_form}``) or a callable
                        ``rule(module, *args, **kwargs)`` that replaces the module's
                        forward for decomposed inputs and returns its output (a
                        :class:`~captum_cd.Decomposition`).
                        Default: None
            stop_at_softmax (bool, optional): CD is defined on logits. If True and the
                        model's output is a softmax or log-softmax of decomposed
                        logits, those logits are decomposed instead (so
                        ``relevant + irrelevant`` equals the logits). If False, such a
                        model raises an error that says so.
                        Default: False
        """
        super().__init__(model)
        self.layer = layer
        self.rules = dict(rules or {})
        self.module_rules = dict(module_rules or {})
        self.stop_at_softmax = stop_at_softmax
        # LayerContextualDecomposition(attribute_to_layer_input=True) starts at the layer's inputs.
        self._at_layer_input = False
        # Set on the copy attribute_future runs: the forward returns a Future of its output.
        self._awaits_future = False

    # ------------------------------------------------------------------ decompose

    def decompose(
        self,
        inputs: TensorOrTuple,
        masks: TensorOrTuple,
        additional_forward_args: Optional[object] = None,
    ) -> Tuple[Tensor, Tensor]:
        r"""
        Decomposes the model's output for G feature groups in one batched pass.

        Args:

            inputs (Tensor or tuple[Tensor, ...]): Input of the model, batch first,
                        shape ``(B, *features)``. Several inputs as a tuple.
            masks (Tensor or tuple[Tensor, ...]): One feature group per row: shape
                        ``(G, *features)`` (shared by the batch) or ``(G, B, *features)``
                        (per example); dimensions of size 1 broadcast (``(G, 1, H, W)``
                        over colour channels). 1 marks the group's features; values in
                        between scale the feature's share. With a tuple of inputs, a
                        tuple of masks with the same G. With ``layer``, masks are over
                        the layer's output instead.
            additional_forward_args (Any, optional): Further arguments of the model,
                        passed after the inputs and never decomposed.
                        Default: None

        Returns:
            2-element tuple of **relevant**, **irrelevant**:

            - **relevant** (*Tensor*): the contribution of each group, shape
              ``(G, B, *output_shape)``.
            - **irrelevant** (*Tensor*): everything else, same shape;
              ``relevant + irrelevant`` equals ``model(inputs)`` up to rounding.

        With grad enabled the autograd graph is kept (training through CD, as the CDEP
        regulariser does); under ``torch.no_grad()`` nothing is kept.

        Examples::

            >>> cd = ContextualDecomposition(net)
            >>> masks = torch.zeros(2, 1, 28, 28)
            >>> masks[0, :, :14], masks[1, :, 14:] = 1, 1   # top and bottom halves
            >>> relevant, irrelevant = cd.decompose(images, masks)
            >>> relevant.shape   # (2 groups, batch, 10 classes)
        """
        out = self.forward_decomposition(inputs, masks, additional_forward_args)
        rel = out.rel
        return rel, out.full - rel

    def forward_decomposition(
        self,
        inputs: TensorOrTuple,
        masks: Optional[TensorOrTuple] = None,
        additional_forward_args: Optional[object] = None,
        training: str = "error",
        relevant: Optional[TensorOrTuple] = None,
    ) -> Decomposition:
        r"""
        Like :meth:`decompose`, but returns the output as a
        :class:`~captum_cd.Decomposition`: ``.full`` is the model's ordinary output
        (so a training step can use it for its loss too) and ``.rel`` the relevant parts.

        Args:

            training (str, optional): What a training-mode batch norm or dropout does:
                        ``"error"`` refuses (attribution), ``"batch"`` decomposes with
                        the batch statistics of the ordinary pass and one dropout mask
                        for both parts (training through CD).
                        Default: "error"
            relevant (Tensor or tuple[Tensor, ...], optional): The relevant parts of the
                        inputs given directly, shape ``(G, *input.shape)``, instead of
                        ``masks`` (``relevant = mask * input``); TRIM passes
                        ``T^-1(M s)`` this way. Default: None
        """
        inputs = _format_tensor_into_tuples(inputs)
        args = _format_additional_forward_args(additional_forward_args) or ()
        model = self.forward_func if isinstance(self.forward_func, nn.Module) else None
        check_model(self.forward_func, training)
        check_inputs(inputs, decomposed=self.layer is None, model=model)
        if (masks is None) == (relevant is None):
            raise ValueError("give exactly one of masks and relevant.")
        if _no_groups(masks if relevant is None else relevant):  # an empty decomposition, as G = 0 asks
            if self.layer is None and relevant is None:
                check_masks(as_tensors(masks, "masks"), inputs, "inputs")
            out = self.forward_func(*inputs, *args)
            return Decomposition(out, out.new_zeros((0, *out.shape)))
        out = self._run(inputs, masks, relevant, args, training, model)
        # A second pass to find where parts stopped being finite must not move batch statistics.
        locate = None if training == "batch" else lambda: self._run(inputs, masks, relevant, args, training, model, True)
        check_output(out, locate)
        return out

    def _run(self, inputs, masks, relevant, args, training: str, model, check_each_op: bool = False) -> Decomposition:
        """The model's forward pass on decomposed values, in the call's context."""
        context = DecompositionContext(
            model=model, training=training, stop_at_softmax=self.stop_at_softmax, rules=self.rules,
            caller_hooks=saved_tensor_hooks(), not_recomputable=_NOT_RECOMPUTABLE if self.module_rules else None,
            check_each_op=check_each_op,
        )
        try:
            with decomposition_context(context), module_rules_installed(self.forward_func, self.module_rules, context), \
                    running_statistics_kept_on_error(model):
                if self.layer is None:
                    parts = relevant_parts(inputs, masks, relevant)
                    decomposed = tuple(windowed(x, rel) for x, rel in zip(inputs, parts))
                    out = self.forward_func(*decomposed, *args)
                else:
                    with _decompose_at(self.layer, masks, relevant, self._at_layer_input) as calls:
                        out = self.forward_func(*inputs, *args)
                    if calls != [1]:
                        raise DecompositionError(layer_ran_message(model, self.layer, calls[0]))
            out = context.model_output(self._awaited(out))
        finally:
            context.close()
        if torch.is_grad_enabled():
            with torch._C.DisableTorchFunctionSubclass():
                check_history((out,), {}, context)
        return out

    def _awaited(self, out: Any) -> Any:
        """The forward's output; under :meth:`attribute_future`, the value of its Future."""
        if not self._awaits_future:
            return out
        if not isinstance(out, torch.futures.Future):
            raise TypeError(
                "attribute_future needs a forward_func that returns a torch.futures.Future of its "
                f"output (as Captum's does); this one returned a {type(out).__name__}: call attribute."
            )
        return out.wait()

    # ------------------------------------------------------------------ attribute

    @log_usage()
    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: None = None,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        feature_mask: Union[None, Tensor, Tuple[Tensor, ...]] = None,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
        return_convergence_delta: bool = False,
        enable_cross_tensor_attribution: bool = True,
    ) -> Union[TensorOrTupleOfTensorsGeneric, Tuple[TensorOrTupleOfTensorsGeneric, Tensor]]:
        r"""
        Each feature receives the CD score of its group: the relevant part of the
        target output when the group alone is decomposed.

        The positional order is Captum's (``inputs, baselines, target,
        additional_forward_args, feature_mask``, as in FeatureAblation), so a call
        written for FeatureAblation or IntegratedGradients means the same here.

        Args:

            inputs (Tensor or tuple[Tensor, ...]): Input for which attributions are
                        computed; dimension 0 is the batch. With ``layer``, the model's
                        inputs (attributions are then over the layer's output).
            baselines (None): CD needs no baseline (the rest of the input is the
                        irrelevant part, not a reference). Must be None; the
                        argument exists so positional calls keep Captum's order.
                        Default: None
            target (int, tuple, Tensor, or list, optional): Output indices for which
                        the scores are returned, in any of Captum's forms: an int or
                        tuple for every example, or a tensor or list with one entry
                        per example. As in FeatureAblation, every element of the
                        selected output gets a row of attributions: one number per
                        example gives attributions shaped like the inputs; a scalar
                        or a row for the whole batch (a loss, a metric: a sum over the
                        batch is linear, so CD decomposes it), or several outputs per
                        example, give one row per element (the groups then span the
                        batch). Default: None (the whole output)
            additional_forward_args (Any, optional): Further arguments of the model,
                        not decomposed. Default: None
            feature_mask (Tensor or tuple[Tensor, ...], optional): Integer group ids,
                        as in Captum's FeatureAblation: shaped like the input or
                        broadcastable to it as in torch (missing dimensions are
                        leading ones: ``(H, W)`` over ``(B, C, H, W)``; where that does
                        not fit, a mask that starts with the batch dimension gets
                        trailing ones: ``(1, T)`` over an embedding ``(B, T, E)``).
                        Features with the same id (across the inputs of a tuple, too)
                        form one group. Default: None (every scalar feature is its own
                        group)
            perturbations_per_eval (int, optional): How many groups go through one
                        batched pass (each pass holds at most
                        ``perturbations_per_eval * batch`` rows, as in
                        FeatureAblation); bounds memory. Default: None (as many as
                        keep groups times batch size at most 1024)
            show_progress (bool, optional): Show a tqdm progress bar over the
                        batched passes. Default: False
            return_convergence_delta (bool, optional): Also return, per row of the
                        attributions, ``relevant + irrelevant - output`` at the
                        target, the group with the largest deviation (see
                        :meth:`compute_convergence_delta`); CD is exact, so it is 0
                        up to rounding. Default: False
            enable_cross_tensor_attribution (bool, optional): Whether an id of
                        ``feature_mask`` names one group across all the inputs (as
                        Captum 0.9's FeatureAblation always does) or, if False, a
                        group of its own input only (the meaning of False in
                        earlier Captum releases). Default: True

        Returns:
            *Tensor* or *tuple[Tensor, ...]* of **attributions** shaped like
            ``inputs`` (like the layer's output with ``layer``; with a first
            dimension of the selected output's size for an output that is not one
            number per example), or with ``return_convergence_delta`` a 2-element
            tuple of **attributions** and **delta** (*Tensor* with one entry per row
            of the attributions).

        Examples::

            >>> cd = ContextualDecomposition(net)
            >>> # 4x4 blocks of a 28x28 image as groups
            >>> ids = torch.arange(49).view(7, 7).repeat_interleave(4, 0).repeat_interleave(4, 1)
            >>> attr = cd.attribute(images, target=labels, feature_mask=ids[None, None])
            >>> attr = cd.attribute(images, None, labels, None, ids[None, None])  # Captum's order
        """
        check_no_baselines(baselines, type(self).__name__)
        is_tuple = _is_tuple(inputs)
        inputs = _format_tensor_into_tuples(inputs)
        shapes = self._feature_shapes(inputs, additional_forward_args)
        batch = inputs[0].shape[0]
        if feature_mask is None:
            n_groups, group_masks, assign = one_hot_groups(shapes, batch, inputs[0].device)
        else:
            ids = tuple(m.to(inputs[0].device) for m in _format_tensor_into_tuples(feature_mask))
            n_groups, group_masks, assign = groups_from_ids(ids, shapes, batch, enable_cross_tensor_attribution)
        # Whole examples may go through a pass alone only where every input follows the batch.
        splittable = additional_forward_args is None and all(x.shape[0] == batch for x in inputs)
        bar = tqdm(desc=f"{self.get_name()} attribution", disable=not show_progress)
        with torch.no_grad(), bar:
            reference = None
            if return_convergence_delta and not self.stop_at_softmax:
                reference = self._reference_output(inputs, additional_forward_args)
            scores, deltas = self._group_scores(
                inputs, target, additional_forward_args, (n_groups, group_masks, shapes),
                rows_per_pass(perturbations_per_eval, batch), splittable, return_convergence_delta, reference, bar,
            )  # fmt: skip
        if self.layer is not None:  # shaped like the layer's value: a tensor, or a tuple of several
            is_tuple = len(shapes) > 1
        attributions = _format_output(is_tuple, assign(scores))
        if return_convergence_delta:
            return attributions, largest_over_groups(deltas)
        return attributions

    def _group_scores(self, inputs, target, args, groups, per_pass, splittable, with_delta, reference, bar):
        """The scores ``(G, n)`` of all groups (and with ``with_delta`` their deviations), in
        batched passes. The first pass holds the whole batch. Where its output has one
        number per example, the other groups may go through in passes of whole examples,
        so an example's ordinary pass runs once however many passes its groups need; each
        such pass is checked against the whole batch's output, and if its rows differ (the
        output was a statistic of the batch after all), the groups go over the whole batch."""
        n_groups, group_masks, shapes = groups
        batch = inputs[0].shape[0]

        def run(start, stop, examples):
            part = inputs if examples is None else tuple(x[examples] for x in inputs)
            masks = masks_for_examples(group_masks(start, stop), shapes, examples)
            out = self.forward_decomposition(part, masks, args)
            part_target = target_for_examples(target, examples, batch)
            scores = output_scores(out.rel, out.full, part_target)
            delta = None
            if with_delta:
                part_reference = reference if reference is None or examples is None else reference[examples]  # (a scalar has no rows)
                deviation, output = self._deviation(out.rel, out.full - out.rel, out.full, part_reference)
                delta = output_scores(deviation, output, part_target)
            bar.update()
            return out.full, scores, delta

        first = min(per_pass, n_groups)
        whole, scores, delta = run(0, first, None)
        all_scores = scores.new_empty(n_groups, scores.shape[1])
        all_deltas = delta.new_empty(all_scores.shape) if with_delta else None

        def fill(start, stop, rows, scores, delta):
            all_scores[start:stop, rows] = scores
            if with_delta:
                all_deltas[start:stop, rows] = delta

        def follow(plan) -> bool:
            """Runs ``plan``; False where examples alone give other rows than in the whole batch."""
            bar.total = bar.n + len(plan)
            bar.refresh()
            for start, stop, examples in plan:
                full, scores, delta = run(start, stop, examples)
                if examples is not None and not same_rows(full, whole[examples]):
                    return False
                fill(start, stop, slice(None) if examples is None else examples, scores, delta)
            return True

        fill(0, first, slice(None), scores, delta)
        split = splittable and whole.ndim > 0 and whole.shape[0] == batch and scores.shape[1] == batch
        if not follow(passes(first, n_groups, per_pass, batch, split)):
            follow(passes(first, n_groups, per_pass, batch, False))  # the output is a statistic of the batch
        return all_scores, all_deltas

    @log_usage()
    def attribute_future(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        baselines: None = None,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
        feature_mask: Union[None, Tensor, Tuple[Tensor, ...]] = None,
        perturbations_per_eval: Optional[int] = None,
        show_progress: bool = False,
        enable_cross_tensor_attribution: bool = True,
    ) -> Future:
        r"""
        :meth:`attribute` for a ``forward_func`` that returns a ``torch.futures.Future``
        of its output, with the arguments of Captum's
        ``FeatureAblation.attribute_future``. CD follows the forward's own computation,
        so each Future is waited for where the forward returns it, and its value must be
        computed from the decomposed inputs in this process (a forward that runs the model
        elsewhere, over RPC, returns values CD cannot follow, and the call says so).

        Returns:
            *Future* of the **attributions** :meth:`attribute` returns, completed.

        Examples::

            >>> cd = ContextualDecomposition(net_returning_a_future)
            >>> attr = cd.attribute_future(images, target=labels).wait()
        """
        awaiting = copy.copy(self)  # the flag on a copy: other calls on self are unaffected
        awaiting._awaits_future = True
        attributions = awaiting.attribute(
            inputs, baselines, target, additional_forward_args, feature_mask, perturbations_per_eval, show_progress,
            enable_cross_tensor_attribution=enable_cross_tensor_attribution,
        )  # fmt: skip
        result: Future = Future()
        result.set_result(attributions)
        return result

    def compute_convergence_delta(
        self,
        attributions: Tuple[Tensor, Tensor],
        inputs: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
    ) -> Tensor:
        r"""
        CD's completeness error, Captum's convergence delta:
        ``relevant + irrelevant - output`` at the target, where ``output`` is an
        ordinary forward pass of the model (with ``stop_at_softmax``, the logits of
        the decomposition's own pass). CD is exact, so this is 0 up to rounding; a
        larger value means a rule computed the ordinary activation wrongly.

        Args:

            attributions (tuple[Tensor, Tensor]): The pair ``(relevant,
                        irrelevant)`` that :meth:`decompose` returns, each of shape
                        ``(G, B, *output_shape)``. (The scores of :meth:`attribute`
                        alone do not determine the irrelevant parts; use its
                        ``return_convergence_delta=True`` instead.)
            inputs (Tensor or tuple[Tensor, ...]): The inputs that were decomposed.
            target (int, tuple, Tensor, or list, optional): As in :meth:`attribute`.
                        Default: None (the output is one number per example)
            additional_forward_args (Any, optional): As in :meth:`attribute`.

        Returns:
            *Tensor* of **deltas**, shape ``(B,)``: for each example, the deviation
            of the group that deviates most (signed).
        """
        if not (isinstance(attributions, tuple) and len(attributions) == 2):
            raise TypeError(
                "attributions must be the pair (relevant, irrelevant) that decompose() returns; "
                "for attribute() pass return_convergence_delta=True."
            )
        relevant, irrelevant = attributions
        inputs = _format_tensor_into_tuples(inputs)
        with torch.no_grad():
            full = relevant + irrelevant
            reference = None if self.stop_at_softmax else self._reference_output(inputs, additional_forward_args)
            deviation, output = self._deviation(relevant, irrelevant, full[0], reference)
            if target is None and deviation.shape[2:].numel() != 1:  # the largest over the output
                per_example = deviation.flatten(2).gather(2, deviation.flatten(2).abs().argmax(2, keepdim=True))[..., 0]
            else:
                per_example = target_scores(deviation, output, target)
            return largest_over_groups(per_example)

    def _reference_output(self, inputs: Tuple[Tensor, ...], additional_forward_args) -> Tensor:
        """The model's ordinary output, computed without any decomposition."""
        args = _format_additional_forward_args(additional_forward_args) or ()
        return self._awaited(self.forward_func(*inputs, *args))

    def _deviation(self, relevant: Tensor, irrelevant: Tensor, full: Tensor, reference) -> Tuple[Tensor, Tensor]:
        """``relevant + irrelevant - output``, shape ``(G, *output_shape)``, and the output
        it is measured against."""
        output = full if reference is None or self.stop_at_softmax else reference
        if output.shape != relevant.shape[1:]:
            raise ValueError(
                f"relevant parts of shape {tuple(relevant.shape)} do not fit the model's output of "
                f"shape {tuple(output.shape)}; expected (G, *{tuple(output.shape)})."
            )
        return relevant + irrelevant - output.unsqueeze(0), output

    def interactions(
        self,
        inputs: TensorOrTuple,
        masks_a: TensorOrTuple,
        masks_b: TensorOrTuple,
        target: TargetType = None,
        additional_forward_args: Optional[object] = None,
    ) -> Tensor:
        r"""
        The interaction of pairs of feature groups, ``CD(A u B) - CD(A) - CD(B)``, for
        P pairs in one batched pass of 3P groups.

        Args:

            inputs (Tensor or tuple[Tensor, ...]): As in :meth:`decompose`.
            masks_a (Tensor or tuple[Tensor, ...]): The first group of each pair, as
                        masks in :meth:`decompose` (P rows).
            masks_b (Tensor or tuple[Tensor, ...]): The second group of each pair.
            target (int, tuple, Tensor, or list, optional): As in :meth:`attribute`.
                        Default: None (the whole output)
            additional_forward_args (Any, optional): As in :meth:`decompose`.

        Returns:
            *Tensor* of **interactions**: shape ``(P, B)`` with a target,
            ``(P, B, *output_shape)`` without.
        """
        masks_a, masks_b = _format_tensor_into_tuples(masks_a), _format_tensor_into_tuples(masks_b)
        pairs = check_pairs(masks_a, masks_b)
        stacked = []
        for a, b in zip(masks_a, masks_b):
            a, b = torch.broadcast_tensors(a.to(torch.float64), b.to(torch.float64))
            stacked.append(torch.cat([torch.maximum(a, b), a, b]))
        out = self.forward_decomposition(inputs, tuple(stacked), additional_forward_args)
        scores = out.rel if target is None else target_scores(out.rel, out.full, target)
        union, alone_a, alone_b = scores.unflatten(0, (3, pairs))
        return union - alone_a - alone_b

    # ------------------------------------------------------------------ internals

    def _feature_shapes(self, inputs: Tuple[Tensor, ...], additional_forward_args) -> List[torch.Size]:
        """Shapes of what is decomposed, batch included (the layer's output with ``layer``).
        Validates the inputs and the model first: with ``layer`` this runs the model."""
        check_model(self.forward_func)
        check_inputs(inputs, self.layer is None, self.forward_func if isinstance(self.forward_func, nn.Module) else None)
        if self.layer is None:
            return [x.shape for x in inputs]
        shapes: List[torch.Size] = []
        # The hooks record only this pass: other threads may run the model meanwhile.
        context = DecompositionContext(model=self.forward_func, collects=False)

        def record(module: nn.Module, value: Any) -> None:
            if current_context() is context and not shapes:
                shapes.extend(x.shape for x in layer_values(module, value, self._at_layer_input))

        if self._at_layer_input:
            hook = self.layer.register_forward_pre_hook(record)
        else:
            hook = self.layer.register_forward_hook(lambda m, a, out: record(m, out))
        try:
            with torch.no_grad(), decomposition_context(context):
                self.forward_func(*inputs, *(_format_additional_forward_args(additional_forward_args) or ()))
        finally:
            hook.remove()
        return shapes


# ---------------------------------------------------------------------- helpers


def _no_groups(parts) -> bool:
    """Whether masks or relevant parts (a tensor or a tuple) hold no group (G = 0)."""
    first = parts[0] if isinstance(parts, tuple) and parts else parts
    return isinstance(first, Tensor) and first.ndim > 0 and first.shape[0] == 0


def check_no_baselines(baselines: object, method: str) -> None:
    """CD has no baselines; a positional call in Captum's order puts them second."""
    if baselines is None:
        return
    labels = isinstance(baselines, (int, list)) or (
        isinstance(baselines, Tensor) and not baselines.is_floating_point()
    )
    hint = (
        " It looks like labels: pass them as target= (positionally, Captum's order is "
        "inputs, baselines, target, ...)."
        if labels
        else ""
    )
    raise ValueError(
        f"{method} takes no baselines (the rest of the input is the irrelevant part, not a "
        f"reference); baselines must be None, got {type(baselines).__name__}.{hint}"
    )


def check_model(forward_func: Callable, training: str = "error") -> None:
    """Refuses models CD cannot follow, and training-mode batch norms before they run (a
    refused call must not have advanced their statistics)."""
    if compiled(forward_func) and not runs_eagerly():
        raise TypeError(compiled_message("the model", forward_func))
    if isinstance(forward_func, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise TypeError(
            "the model is TorchScript (scripted or traced); its code runs inside TorchScript, where "
            "CD cannot follow it and no rule applies. Pass the Python module it was made from."
        )
    if not isinstance(forward_func, nn.Module):
        return
    for name, m in forward_func.named_modules():
        where = f"module '{name or '<the model itself>'}' ({type(m).__name__})"
        if isinstance(m, torch.jit.ScriptModule):
            raise TypeError(f"{where} is TorchScript, which CD cannot follow; use the Python module it was made from.")
        if m is not forward_func and compiled(m) and not runs_eagerly():
            raise TypeError(compiled_message(where, m))
        stats = isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        if training == "error" and stats and m.training and m.running_mean is not None:
            raise DecompositionError(
                f"{where} is a batch norm in training mode: its output depends on the whole batch "
                "and a forward pass updates its running statistics. Call model.eval() before "
                "attributing (CD never changes the mode behind your back); to decompose during "
                "training use CDEPRegularizer."
            )


@contextlib.contextmanager
def running_statistics_kept_on_error(model: Optional[nn.Module]) -> Iterator[None]:
    """Puts back the running statistics of training-mode normalisation layers when the call
    fails: a call refused halfway (an unsupported function, reentrant checkpointing) must
    not have advanced the statistics of the layers that ran before it. Only the normalisation
    layers in training mode are copied (a few numbers a channel), only in training mode."""
    norms = [] if model is None else [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase) and m.training and m.track_running_stats
    ]
    saved = [{name: b.clone() for name, b in m.named_buffers(recurse=False) if b is not None} for m in norms]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        raise


def check_inputs(inputs: Tuple[Tensor, ...], decomposed: bool, model: Optional[nn.Module]) -> None:
    if not isinstance(inputs, tuple) or not inputs:
        raise TypeError(f"inputs must be a tensor or a non-empty tuple of tensors; got {type(inputs).__name__}.")
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor):
            raise TypeError(f"input {i} is a {type(x).__name__}; inputs must be tensors.")
        if x.ndim == 0 or (x.shape[0] == 0 and all(y.numel() == 0 for y in inputs if isinstance(y, Tensor))):
            raise ValueError(
                f"input {i} has shape {tuple(x.shape)}; inputs are batch first with at least one "
                "example (shape (B, *features), B >= 1; an empty input, such as a sparse list, "
                "only beside others that hold examples)."
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"input {i} contains NaN or infinite values; CD of such an input is undefined.")
        if decomposed and not x.is_floating_point():
            raise TypeError(
                f"input {i} has dtype {x.dtype}; only floating-point inputs can be decomposed. "
                "For token ids pass layer=model.<embedding> to start after the embedding."
            )
    # (Parameters on the meta device are offloaded: an engine such as accelerate loads them per call.)
    params = [p for p in model.parameters() if p.is_floating_point() and not p.is_meta] if model is not None else []
    x = next((x for x in inputs if x.is_floating_point()), None)
    if params and x is not None:
        devices, dtypes = {p.device for p in params}, {p.dtype for p in params}
        if x.device not in devices:
            raise ValueError(
                f"the inputs are on {x.device} but the model's parameters are on "
                f"{', '.join(sorted(map(str, devices)))}; move one to the other (model.to(device) "
                "or inputs.to(device))."
            )
        if decomposed and x.dtype not in dtypes:  # a model may keep some parameters in another dtype
            raise ValueError(
                f"the inputs are {x.dtype} but the model's parameters are "
                f"{', '.join(sorted(map(str, dtypes)))}; convert one (inputs.to(dtype) or model.to(dtype))."
            )


def layer_ran_message(model: Optional[nn.Module], layer: nn.Module, calls: int) -> str:
    """Why ``layer`` did not start the decomposition, naming the modules that share its
    weight where it never ran (a tied embedding that the forward pass does not call, as
    T5's ``shared``: the encoder embeds with its own ``embed_tokens``)."""
    message = (
        f"layer {type(layer).__name__} ran {calls} times in the forward pass; the decomposition "
        "starts at its output, so it must run exactly once."
    )
    weight = getattr(layer, "weight", None)
    modules = model.named_modules() if model is not None and weight is not None and calls == 0 else ()
    twins = [name for name, m in modules if m is not layer and getattr(m, "weight", None) is weight]
    if twins:
        message += (
            f" Modules that share its weight: {', '.join(repr(n) for n in twins)}; the model "
            f"embeds with one of them: pass layer=model.{twins[0]}."
        )
    return message


def layer_values(layer: nn.Module, value: Any, at_input: bool) -> Tuple[Tensor, ...]:
    """What a decomposition that starts at ``layer`` decomposes: all its positional inputs
    (``at_input``) or its output, one tensor or a tuple of them, as Captum's layer methods
    take them. Each must be a floating-point tensor."""
    values = value if isinstance(value, tuple) else (value,)
    where = "positional input" if at_input else "output"
    if not values:
        raise DecompositionError(f"layer {type(layer).__name__} was called without positional inputs; there is nothing to decompose.")
    for i, x in enumerate(values):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            kind = f"a {x.dtype} tensor" if isinstance(x, Tensor) else f"a {type(x).__name__}"
            raise DecompositionError(
                f"layer {type(layer).__name__}'s {where} {i} is {kind}; the decomposition starts at every "
                f"{where} of the layer, so each must be a floating-point tensor. Start where the values "
                "are floating point (at an embedding's output, not at its token ids)."
            )
    return values


@contextlib.contextmanager
def _decompose_at(layer: nn.Module, masks, relevant=None, at_input: bool = False) -> Iterator[List[int]]:
    """Starts the decomposition at ``layer`` (its output, or with ``at_input`` its inputs,
    :func:`layer_values`) while the current call runs. Entered inside
    the call's context; the hooks act only for that context, so other threads running
    the model meanwhile (plainly or in their own CD call) are not affected."""
    calls = [0]
    owner = current_context()

    def check_not_recomputed(module):
        if torch.is_grad_enabled() and owner.caller_hooks is not CALLERS_HOOKS and saved_tensor_hooks() != owner.caller_hooks:
            raise DecompositionError(
                f"layer {type(module).__name__} runs inside an activation-checkpointed part of the model: "
                "backward recomputes that part without the decomposition starting at the layer. Start "
                "at a layer outside the checkpointed blocks (the embedding), or turn checkpointing off there."
            )

    def start(module, value):
        if current_context() is not owner:
            return None
        calls[0] += 1
        check_not_recomputed(module)
        values = layer_values(module, value, at_input)
        what = "the layer's inputs" if at_input else "the layer's outputs"
        parts = relevant_parts(values, masks, relevant, what)
        decomposed = tuple(Decomposition(x, rel) for x, rel in zip(values, parts))
        return decomposed if at_input or isinstance(value, tuple) else decomposed[0]

    if at_input:
        handle = layer.register_forward_pre_hook(start)
    else:
        handle = layer.register_forward_hook(lambda module, args, output: start(module, output))
    try:
        yield calls
    finally:
        handle.remove()


