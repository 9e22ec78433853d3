"""Probes at the edges: bad and unusual calls, each checked for a right number or a clear
error, and for leaving the user's model and torch's global state exactly as they were.

``Snapshot`` records everything a call could leave behind; ``probe`` runs a call between
two snapshots (refused calls included) and fails on any difference.
"""

import contextlib
import gc
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_cd import ContextualDecomposition
from captum_cd.attr.decomposition import current_context, Decomposition, OUTSIDE


# ---------------------------------------------------------------------- the snapshot


def _hooks(module: nn.Module) -> Dict[str, Any]:
    names = ["_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
             "_load_state_dict_pre_hooks"]  # fmt: skip
    return {n: list(getattr(module, n, {}).items()) for n in names}


def _flags(module: nn.Module) -> Dict[str, Any]:
    """Every instance attribute by name (a patched ``forward`` shows), with the value of the
    plain ones (``inplace``, ``p``, ``eps``, ...)."""
    plain = (bool, int, float, str, type(None))
    is_plain = lambda v: isinstance(v, plain) or (isinstance(v, tuple) and all(isinstance(u, plain) for u in v))  # noqa: E731
    return {k: (v if is_plain(v) else type(v)) for k, v in vars(module).items() if k != "training"}


class Snapshot:
    """Training flags, parameters and buffers (values, versions, requires_grad, grads),
    hooks, instance attributes (a patched ``forward``), and torch's global state."""

    def __init__(self, model: Optional[nn.Module]):
        self.model = model
        self.modules = []
        for name, m in (model.named_modules() if model is not None else []):
            tensors = {f"p.{k}": p for k, p in m.named_parameters(recurse=False)}
            tensors.update({f"b.{k}": b for k, b in m.named_buffers(recurse=False) if b is not None})
            self.modules.append((name, m, m.training, _flags(m), _hooks(m), {
                k: (t.detach().clone(), t._version, t.requires_grad, None if t.grad is None else t.grad.clone())
                for k, t in tensors.items()
            }))
        self.torch_state = _torch_state()

    def assert_same(self) -> None:
        for name, m, training, attrs, hooks, tensors in self.modules:
            where = f"module '{name}' ({type(m).__name__})"
            assert m.training == training, f"{where}: training flag changed"
            flags = _flags(m)
            assert flags.keys() == attrs.keys(), f"{where}: attributes changed: {flags.keys() ^ attrs.keys()}"
            assert flags == attrs, f"{where}: flags changed: {[k for k in flags if flags[k] != attrs[k]]}"
            assert _hooks(m) == hooks, f"{where}: hooks changed"
            now = {f"p.{k}": p for k, p in m.named_parameters(recurse=False)}
            now.update({f"b.{k}": b for k, b in m.named_buffers(recurse=False) if b is not None})
            assert now.keys() == tensors.keys(), f"{where}: parameters or buffers added or removed"
            for k, (value, version, requires_grad, grad) in tensors.items():
                t = now[k]
                assert torch.equal(t.detach(), value), f"{where}: {k} changed"
                assert t._version == version, f"{where}: {k} was written in place"
                assert t.requires_grad == requires_grad, f"{where}: {k}.requires_grad changed"
                assert (t.grad is None) == (grad is None), f"{where}: {k}.grad appeared or vanished"
                assert grad is None or torch.equal(t.grad, grad), f"{where}: {k}.grad changed"
        changed = _diff(self.torch_state, _torch_state())
        assert not changed, f"torch's global state changed: {changed}"


def _torch_state() -> Dict[str, Any]:
    context = current_context()
    return {
        "grad": torch.is_grad_enabled(),
        "inference": torch.is_inference_mode_enabled(),
        "dtype": torch.get_default_dtype(),
        "threads": torch.get_num_threads(),
        "rng": torch.get_rng_state(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "context": (context is OUTSIDE, len(OUTSIDE.softmax_outputs), len(OUTSIDE.scoped_rules), len(OUTSIDE.rules)),
        "torch_function": torch._C._is_torch_function_enabled(),
    }


def _diff(a: Dict[str, Any], b: Dict[str, Any]) -> list:
    same = lambda u, v: torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v  # noqa: E731
    return [k for k in a if not same(a[k], b[k])]


@contextlib.contextmanager
def probe(model: Optional[nn.Module]):
    """Fails if anything of ``model`` or of torch's global state differs after the block,
    whether the block returned or raised."""
    snapshot = Snapshot(model)
    try:
        yield snapshot
    finally:
        snapshot.assert_same()


def refused(model, call: Callable[[], Any], error=Exception, match: Optional[str] = None):
    """``call`` raises ``error`` matching ``match`` and leaves everything as it was."""
    with probe(model):
        with pytest.raises(error, match=match) as info:
            call()
    return info.value


def answered(model, call: Callable[[], Any]):
    with probe(model):
        return call()


# ---------------------------------------------------------------------- models


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


class Stem(nn.Module):
    """``lin2(edit(relu(lin1(x))))``: ``edit`` is the in-place code under test."""

    def __init__(self, edit: Callable):
        super().__init__()
        self.lin1, self.lin2, self.edit = nn.Linear(6, 8), nn.Linear(8, 3), edit

    def forward(self, x):
        return self.lin2(self.edit(torch.relu(self.lin1(x))))


def test_the_snapshot_notices_what_it_should():
    """The helper itself: each kind of change is caught (else every probe is void)."""
    changes = [
        lambda m: m.train(),
        lambda m: m[0].weight.data.add_(1),
        lambda m: m[0].weight.requires_grad_(False),
        lambda m: m[0].register_forward_hook(lambda *a: None),
        lambda m: m[0].register_forward_pre_hook(lambda *a: None),
        lambda m: setattr(m[0], "forward", m[0].forward),
        lambda m: setattr(m[1], "inplace", True),
        lambda m: torch.set_grad_enabled(False),
        lambda m: torch.rand(1),
        lambda m: OUTSIDE.softmax_outputs.__setitem__(0, None),
    ]
    for change in changes:
        model = mlp()
        grad = torch.is_grad_enabled()
        with pytest.raises(AssertionError):
            with probe(model):
                change(model)
        torch.set_grad_enabled(grad)
        OUTSIDE.softmax_outputs.clear()
    bn = nn.Sequential(nn.BatchNorm1d(3))
    with pytest.raises(AssertionError, match="running_mean changed"):
        with probe(bn):
            bn(torch.randn(4, 3))


# ---------------------------------------------------------------------- in-place through views

# Each pair: the same edit written in place through a view and written out of place.
EDITS = {
    "slice mul_": (lambda h: (h[:, :4].mul_(2), h)[1], lambda h: torch.cat([h[:, :4] * 2, h[:, 4:]], 1)),
    "view(-1)[:3] +=": (
        lambda h: [h.view(-1).__setitem__(slice(0, 3), h.view(-1)[:3].__iadd__(1)), h][1],
        lambda h: torch.cat([h.reshape(-1)[:3] + 1, h.reshape(-1)[3:]]).view(h.shape),
    ),
    "v = h[:, 2:]; v[:, 0] = 0": (
        lambda h: [h[:, 2:].__setitem__((slice(None), 0), 0), h][1],
        lambda h: torch.cat([h[:, :2], torch.zeros_like(h[:, 2:3]), h[:, 3:]], 1),
    ),
    "relu(slice, inplace)": (
        lambda h: (F.relu(h[:, :4].sub_(0.3), inplace=True), h)[1],
        lambda h: torch.cat([F.relu(h[:, :4] - 0.3), h[:, 4:]], 1),
    ),
    "t().add_": (lambda h: (h.t().add_(1), h)[1], lambda h: h + 1),
    "view of a view": (
        lambda h: (h.view(5, 2, 4)[:, 1].transpose(0, 1)[1:].mul_(-1), h)[1],
        lambda h: torch.cat([h[:, :5], -h[:, 5:], ], 1),
    ),
    "split then add_": (
        lambda h: (h.split(3, dim=1)[1].add_(2), h)[1],
        lambda h: torch.cat([h[:, :3], h[:, 3:6] + 2, h[:, 6:]], 1),
    ),
    ".data written": (lambda h: (h.data[:, 1:].mul_(2), h)[1], lambda h: torch.cat([h[:, :1], h[:, 1:] * 2], 1)),
    "detach() written": (lambda h: (h.detach().add_(1), h)[1], lambda h: h + 1),
    "base written, view read": (
        lambda h: [v := h[:, 2:], h.mul_(3), torch.cat([h[:, :2], v], 1)][2],
        lambda h: h * 3,
    ),
    "sibling views overlap": (
        lambda h: [a := h[:, :4], b := h[:, 2:6], a.mul_(2), torch.cat([b, h[:, 6:], h[:, :2]], 1)][3],
        lambda h: torch.cat([h[:, 2:4] * 2, h[:, 4:6], h[:, 6:], h[:, :2] * 2], 1),
    ),
}


def _edit_net(edit: Callable, reference: nn.Module) -> nn.Module:
    net = Stem(edit)
    net.load_state_dict(reference.state_dict())
    return net.eval()


@pytest.mark.parametrize("name", list(EDITS))
def test_in_place_through_a_view_matches_the_out_of_place_code(name):
    in_place, out_of_place = EDITS[name]
    reference = Stem(out_of_place).eval()
    net = _edit_net(in_place, reference)
    x, masks = torch.randn(5, 6), (torch.rand(4, 6) > 0.5).float()
    # torch refuses in-place writes into split's outputs under autograd; so does CD (below)
    with torch.no_grad() if name == "split then add_" else contextlib.nullcontext():
        expected_rel, expected_irrel = ContextualDecomposition(reference).decompose(x, masks)
        rel, irrel = answered(net, lambda: ContextualDecomposition(net).decompose(x, masks))
    torch.testing.assert_close(rel, expected_rel, rtol=0, atol=1e-6)
    torch.testing.assert_close(irrel, expected_irrel, rtol=0, atol=1e-6)
    with torch.no_grad():
        output = reference(x)
        torch.testing.assert_close(net(x.clone()), output)  # the edit itself is what we think
    torch.testing.assert_close(rel + irrel, output.expand_as(rel), rtol=0, atol=1e-5)  # completeness


def test_a_write_torch_refuses_is_an_error_that_names_the_view():
    net = _edit_net(EDITS["split then add_"][0], Stem(lambda h: h))
    x = torch.randn(5, 6)
    refused(net, lambda: ContextualDecomposition(net).decompose(x, torch.ones(1, 6)), match=r"view taken by torch\.Tensor\.split.*out of place")


def test_in_place_on_a_view_keeps_gradients():
    in_place, out_of_place = EDITS["slice mul_"]
    reference = Stem(out_of_place).eval()
    net = _edit_net(in_place, reference)
    x, masks = torch.randn(5, 6), torch.ones(1, 6)
    masks[0, :3] = 0
    grads = []
    for model in (reference, net):
        rel, _ = ContextualDecomposition(model).decompose(x, masks)
        grads.append(torch.autograd.grad(rel.sum(), model.lin1.weight)[0])
    torch.testing.assert_close(grads[0], grads[1])


def test_in_place_on_the_tensor_itself_still_works():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.relu = nn.Linear(6, 6), nn.Linear(6, 3), nn.ReLU(inplace=True)

        def forward(self, x):
            h = self.a(x)
            h += x
            return self.b(self.relu(h))

    net = Residual().eval()
    x, masks = torch.randn(4, 6), (torch.rand(3, 6) > 0.5).float()
    rel, irrel = answered(net, lambda: ContextualDecomposition(net).decompose(x, masks))
    with torch.no_grad():
        torch.testing.assert_close(rel + irrel, net(x).expand_as(rel))
        # out of place: the same numbers
        ref = lambda x: net.b(F.relu(net.a(x) + x))  # noqa: E731
    torch.testing.assert_close(rel, ContextualDecomposition(ref).decompose(x, masks)[0])


# ---------------------------------------------------------------------- threads


class Rendezvous(nn.Module):
    """Identity; every forward waits here until all threads arrive, so the calls are
    inside the model at the same time (hooks of every call installed)."""

    def __init__(self):
        super().__init__()
        self.barrier: Optional[threading.Barrier] = None

    def forward(self, x):
        if self.barrier is not None:
            self.barrier.wait(timeout=30)
        return x


def _threaded_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), Rendezvous(), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


def _jobs(net: nn.Module, x: torch.Tensor):
    """Calls that install different hooks on the same modules, and a plain forward."""
    import captum_cd

    masks, layer_masks = (torch.rand(3, 6) > 0.5).float(), (torch.rand(2, 8) > 0.5).float()
    plain = ContextualDecomposition(net)
    at_layer = ContextualDecomposition(net, layer=net[0])
    scoped = ContextualDecomposition(net, module_rules={"4": {torch.tanh: captum_cd.rules.relu_form}})
    replaced = ContextualDecomposition(net, module_rules={nn.Tanh: lambda module, h: h * 0.5})
    return {
        "plain": lambda: plain.decompose(x, masks),
        "layer": lambda: at_layer.decompose(x, layer_masks),
        "scoped rules": lambda: scoped.decompose(x, masks),
        "replaced forward": lambda: replaced.decompose(x, masks),
        "model(x)": lambda: (net(x),),
        # two forwards a call: the shape pass (its own hook) and one chunk of groups
        "layer attribute": lambda: (at_layer.attribute(x, target=1, feature_mask=torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]])),),
    }


FORWARDS_PER_CALL = {"layer attribute": 2}


def _bitwise_equal(a, b) -> bool:
    return all(type(u) is torch.Tensor and torch.equal(u, v) for u, v in zip(a, b)) and len(a) == len(b)


@pytest.mark.parametrize("repeats", [4])
def test_calls_from_several_threads_at_once_equal_single_threaded_runs(repeats):
    net = _threaded_net()
    x = torch.randn(4, 6)
    jobs = _jobs(net, x)
    with torch.no_grad():
        expected = {name: job() for name, job in jobs.items()}  # one at a time
    # the plain forward is the model's own output; CD's "plain" relevant + irrelevant is too
    torch.testing.assert_close(sum(expected["plain"]), expected["model(x)"][0].expand(3, -1, -1))

    def run(name):  # every thread passes the barrier equally often
        with torch.no_grad():
            return [jobs[name]() for _ in range(repeats // FORWARDS_PER_CALL.get(name, 1))]

    with probe(net):
        net[1].barrier = threading.Barrier(len(jobs))
        try:
            with ThreadPoolExecutor(len(jobs)) as pool:
                results = dict(zip(jobs, pool.map(run, list(jobs))))
        finally:
            net[1].barrier = None
    for name, outs in results.items():
        for out in outs:
            assert _bitwise_equal(out, expected[name]), name


def test_a_plain_forward_in_another_thread_is_not_decomposed_while_cd_runs():
    """The plain thread's forward runs while the CD call's hooks are installed."""
    net = _threaded_net()
    x = torch.randn(4, 6)
    jobs = _jobs(net, x)
    with torch.no_grad():
        expected = net(x)
    for name in ("layer", "scoped rules", "replaced forward"):
        net[1].barrier = threading.Barrier(2)
        try:
            with ThreadPoolExecutor(2) as pool, torch.no_grad():
                cd_call, plain_call = pool.submit(jobs[name]), pool.submit(net, x)
                out = plain_call.result()
                cd_call.result()
        finally:
            net[1].barrier = None
        assert type(out) is torch.Tensor and torch.equal(out, expected), name


# ---------------------------------------------------------------------- state left behind


@pytest.mark.parametrize("how", ["decompose", "attribute", "layer"])
def test_a_refused_training_batch_norm_has_not_run(how):
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).train()
    x = torch.randn(3, 4)
    calls = {
        "decompose": lambda: ContextualDecomposition(net).decompose(x, torch.ones(1, 4)),
        "attribute": lambda: ContextualDecomposition(net).attribute(x, target=0),
        "layer": lambda: ContextualDecomposition(net, layer=net[0]).attribute(x, target=0),
    }
    refused(net, calls[how], RuntimeError, r"module '1' \(BatchNorm1d\) is a batch norm in training mode.*model\.eval\(\)")


def test_softmax_of_a_decomposition_outside_a_call_keeps_nothing():
    net = mlp()
    out = ContextualDecomposition(net).forward_decomposition(torch.randn(2, 6), torch.ones(1, 6))
    with probe(net):  # the snapshot includes the size of the context outside calls
        probabilities = out.softmax(-1)
        torch.log_softmax(out, -1)
    assert type(probabilities) is torch.Tensor and not OUTSIDE.softmax_outputs


class Thresholded(nn.Module):
    """Reads its activation as constants (a comparison, softmax weights): the rules
    remember where, for the error an output made only of such reads gets."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        return self.b(h * (h > 0).to(h.dtype) * h.softmax(-1))


def decomposed_values_left_after(call: Callable[[], Any]) -> int:
    """How many Decompositions ``call`` leaves for the cyclic garbage collector."""
    gc.collect()
    gc.disable()
    try:
        call()
        return sum(type(o) is Decomposition for o in gc.get_objects())
    finally:
        gc.enable()


@pytest.mark.parametrize("how", ["attribute", "decompose", "decompose with grad"])
def test_a_call_leaves_no_decomposed_value_to_the_garbage_collector(how):
    """Values remember their call's context; if it kept a frame of the call (where a
    value was read as a constant), every value of the call would be in a reference cycle
    and outlive it until the cyclic collector runs: on an accelerator, memory that a loop
    of calls runs out of."""
    net, x = Thresholded().eval(), torch.randn(4, 6)
    calls = {
        "attribute": lambda: ContextualDecomposition(net).attribute(x, target=0),
        "decompose": lambda: ContextualDecomposition(net).decompose(x, torch.eye(6)[:3]),
        "decompose with grad": lambda: sum(ContextualDecomposition(net).decompose(x, torch.eye(6)[:3])).sum().backward(),
    }
    with torch.set_grad_enabled(how.endswith("grad")):
        assert decomposed_values_left_after(calls[how]) == 0


# ---------------------------------------------------------------------- silently wrong


@pytest.mark.parametrize("value", [2.0, -1.0, 1.5])
def test_mask_values_outside_0_1_are_refused(value):
    net = small_cnn()
    masks = torch.ones(1, 1, 8, 8)
    masks[0, 0, 0, 0] = value
    x = torch.randn(2, 1, 8, 8)
    refused(net, lambda: ContextualDecomposition(net).decompose(x, masks), ValueError, r"mask 0 has values outside \[0, 1\]")


def test_an_empty_group_scores_exactly_zero_also_on_a_zero_input():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(2.0), lin.bias.copy_(torch.tensor([4.0, -1.0]))
    masks = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    for x in (torch.zeros(2, 3), torch.randn(2, 3)):
        rel, irrel = answered(lin, lambda: ContextualDecomposition(lin).decompose(x, masks))
        assert torch.equal(rel[0], torch.zeros(2, 2))  # the empty group
        torch.testing.assert_close(rel + irrel, lin(x).detach().expand(3, -1, -1))
    # on a zero input every group is empty: a bias with nothing to split is irrelevant
    torch.testing.assert_close(rel[1], lin(x).detach() - irrel[1])
    rel, _ = ContextualDecomposition(lin).decompose(torch.zeros(1, 3), masks)
    assert torch.equal(rel, torch.zeros(3, 1, 2))


@pytest.mark.parametrize("forward", [lambda x: x.sum(1) + 1, lambda x: x.sum() + 1], ids=["per example", "scalar"])
def test_inputs_without_features_get_empty_attributions_as_in_captum(forward):
    from captum.attr import FeatureAblation

    x = torch.zeros(2, 0)
    expected = FeatureAblation(forward).attribute(x)
    attributions, delta = ContextualDecomposition(forward).attribute(x, return_convergence_delta=True)
    assert attributions.shape == expected.shape and torch.equal(delta, torch.zeros(expected.shape[0]))


def test_the_convergence_delta_of_a_scalar_output():
    net, x = mlp(), torch.randn(3, 6)
    attributions, delta = ContextualDecomposition(lambda x: net(x).sum()).attribute(x, return_convergence_delta=True)
    assert attributions.shape == (1, 6) and delta.shape == (1,) and float(delta.abs().max()) < 1e-5


def test_negative_targets_count_from_the_end_in_every_form():
    net, x = small_cnn(), torch.randn(2, 1, 8, 8)
    cd = ContextualDecomposition(net)
    expected = cd.attribute(x, target=torch.tensor([2, 1]))
    for target in (torch.tensor([-1, -2]), [-1, -2], [2, -2]):
        torch.testing.assert_close(answered(net, lambda: cd.attribute(x, target=target)), expected)
    torch.testing.assert_close(cd.attribute(x, target=-1), cd.attribute(x, target=2))


# ---------------------------------------------------------------------- errors that confuse


X = torch.randn(2, 1, 8, 8)
CNN = small_cnn()
CD = ContextualDecomposition(CNN)
COMPILED, SCRIPTED, TRACED = torch.compile(small_cnn()), torch.jit.script(small_cnn()), torch.jit.trace(small_cnn(), X)
SCRIPTED_INSIDE = nn.Sequential(torch.jit.script(nn.Linear(64, 3)))

CONFUSING = {
    "mask is a list": (lambda: CD.decompose(X, [torch.ones(1, 1, 8, 8)]), TypeError, "masks must be a tensor or a non-empty tuple of tensors; got list"),
    "mask tuple holds a list": (lambda: CD.decompose(X, ([1.0],)), TypeError, r"masks\[0\] is a list"),
    "inputs None": (lambda: CD.decompose(None, torch.ones(1, 1, 8, 8)), TypeError, "inputs must be a tensor"),
    "attribute inputs None": (lambda: CD.attribute(None, target=0), TypeError, "inputs must be a tensor"),
    "bool feature_mask": (lambda: CD.attribute(X, target=0, feature_mask=torch.ones(1, 1, 8, 8, dtype=torch.bool)), TypeError, "feature_mask 0 must hold integer group ids, not torch.bool"),
    "float feature_mask": (lambda: CD.attribute(X, target=0, feature_mask=torch.ones(8, 8)), TypeError, "integer group ids"),
    "empty batch with feature_mask": (lambda: CD.attribute(X[:0], target=0, feature_mask=torch.zeros(8, 8, dtype=torch.long)), ValueError, r"at least one\s+example"),
    "empty batch": (lambda: CD.decompose(X[:0], torch.ones(1, 1, 8, 8)), ValueError, "B >= 1"),
    "float target": (lambda: CD.attribute(X, target=1.7), TypeError, r"target 1.7 is not an output index"),
    "float target tensor": (lambda: CD.attribute(X, target=torch.tensor([0.0, 1.0])), TypeError, "integer output indices"),
    "float target list": (lambda: CD.attribute(X, target=[0.0, 1.0]), TypeError, "not an output index"),
    "bool target": (lambda: CD.attribute(X, target=True), TypeError, "not an output index"),
    "target on a scalar output": (lambda: ContextualDecomposition(lambda x: CNN(x).sum()).attribute(X, target=0), ValueError, r"output has shape \(\)"),
    "per-example ids, scalar output": (lambda: ContextualDecomposition(lambda x: CNN(x).sum()).attribute(X, feature_mask=torch.arange(2).view(2, 1, 1, 1).repeat(1, 1, 8, 8)), ValueError, "first dimension 1"),
    "interaction group counts": (lambda: CD.interactions(X, torch.ones(2, 1, 8, 8), torch.ones(3, 1, 8, 8), target=0), ValueError, "masks_a and masks_b need the same number of rows"),
    "compiled model": (lambda: ContextualDecomposition(COMPILED).decompose(X, torch.ones(1, 1, 8, 8)), TypeError, r"torch\.compile.*_orig_mod"),
    "compiled model, attribute": (lambda: ContextualDecomposition(COMPILED).attribute(X, target=0), TypeError, "_orig_mod"),
    "scripted model": (lambda: ContextualDecomposition(SCRIPTED).decompose(X, torch.ones(1, 1, 8, 8)), TypeError, "TorchScript"),
    "traced model": (lambda: ContextualDecomposition(TRACED).decompose(X, torch.ones(1, 1, 8, 8)), TypeError, "TorchScript"),
    "scripted submodule": (lambda: ContextualDecomposition(SCRIPTED_INSIDE).decompose(X.flatten(1), torch.ones(1, 64)), TypeError, r"module '0' \(RecursiveScriptModule\) is TorchScript"),
}


@pytest.mark.parametrize("name", list(CONFUSING))
def test_a_clear_error_that_names_the_argument(name):
    call, error, match = CONFUSING[name]
    refused(CNN, call, error, match)


def test_a_parameter_of_another_dtype_first_is_not_mistaken_for_the_models_dtype():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.zeros(3, dtype=torch.float64))  # unused by forward
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x)

    net, x = Mixed().eval(), torch.randn(3, 4)
    rel, irrel = answered(net, lambda: ContextualDecomposition(net).decompose(x, torch.ones(1, 4)))
    torch.testing.assert_close(rel + irrel, net(x).detach()[None])
    refused(net, lambda: ContextualDecomposition(net).decompose(x.half(), torch.ones(1, 4)), ValueError, "inputs are torch.float16")


# ---------------------------------------------------------------------- feature_mask shapes


FEATURE_MASK_SHAPES = [(8, 8), (1, 8, 8), (1, 1, 8, 8), (2, 1, 8, 8), (8,), (1, 8), (8, 1), (1, 1, 1, 8), (2, 1, 1, 8),
                       (2, 8, 8), (64,), (3, 1, 8, 8), (1, 1, 8, 8, 1), (1, 2, 1, 8, 8)]  # fmt: skip


@pytest.mark.parametrize("shape", FEATURE_MASK_SHAPES)
def test_feature_mask_shapes_are_those_feature_ablation_accepts(shape):
    """On a linear model without biases CD and FeatureAblation (baseline 0) agree exactly, so
    the same accepted shape must also mean the same groups."""
    from captum.attr import FeatureAblation

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3, bias=False)).eval()
    x = torch.randn(2, 1, 8, 8)
    ids = torch.arange(torch.Size(shape).numel()).view(shape) % 5
    try:
        expected = FeatureAblation(net).attribute(x, target=1, feature_mask=ids)
    except Exception:
        expected = None
    if expected is None:
        refused(net, lambda: ContextualDecomposition(net).attribute(x, target=1, feature_mask=ids), ValueError, "does not broadcast")
    else:
        got = answered(net, lambda: ContextualDecomposition(net).attribute(x, target=1, feature_mask=ids))
        torch.testing.assert_close(got, expected)


# ---------------------------------------------------------------------- CDEP


def _bn_cnn() -> nn.Module:
    """A model in training mode with batch norm: any pass it runs moves its statistics."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).train()


IMAGES, LABELS = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])


def _regions(*empty: int) -> torch.Tensor:
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, :, :2, :2], masks[1, :, 4:, 4:], masks[2, :, 3, :] = 1, 1, 1
    for r in empty:
        masks[r] = 0
    return masks


CDEP_SETTINGS = {
    "negative weight": (dict(weight=-1.0), "weight must be a finite number >= 0"),
    "NaN weight": (dict(weight=float("nan")), "weight must be a finite number >= 0"),
    "target_values above 1": (dict(form="target", target_values=[0.0, 1.5, 0.0]), r"target_values must be one number in \[0, 1\]"),
    "target_values NaN": (dict(form="target", target_values=[0.0, float("nan"), 0.0]), r"in \[0, 1\]"),
    "subsample 0": (dict(subsample=0), "subsample must be a positive integer"),
    "subsample -1": (dict(subsample=-1), "subsample must be a positive integer"),
}


@pytest.mark.parametrize("name", list(CDEP_SETTINGS))
def test_cdep_settings_are_checked_when_made(name):
    from captum_cd import CDEPRegularizer

    options, match = CDEP_SETTINGS[name]
    net = _bn_cnn()
    refused(net, lambda: CDEPRegularizer(net, **options), ValueError, match)


def _nan_images():
    x = IMAGES.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


CDEP_CALLS = {
    "target_values of the wrong length": (dict(form="target", target_values=[0.0, 1.0]), lambda r: r(IMAGES, _regions()), ValueError, "target_values has 2 entries for 3 regions"),
    "NaN input with subsample": (dict(subsample=2), lambda r: r.output_and_penalty(_nan_images(), _regions()), ValueError, "NaN or infinite"),
    "mask values outside [0, 1] with subsample": (dict(subsample=2), lambda r: r(IMAGES, 2 * _regions()), ValueError, r"outside \[0, 1\]"),
    "masks of the wrong shape with subsample": (dict(subsample=2), lambda r: r(IMAGES, torch.ones(3, 1, 7, 8)), ValueError, "does not fit"),
    "list target": (dict(form="text"), lambda r: r(IMAGES, _regions(), target=[0, 1, 2, 1]), TypeError, "target must be a tensor of integer labels"),
    "negative label": (dict(form="text"), lambda r: r(IMAGES, _regions(), target=torch.tensor([0, -1, 2, 1])), ValueError, "negative label"),
    "float labels": (dict(), lambda r: r(IMAGES, _regions(), target=LABELS.float()), TypeError, "integer labels"),
}


@pytest.mark.parametrize("name", list(CDEP_CALLS))
def test_cdep_refuses_before_the_model_runs(name):
    from captum_cd import CDEPRegularizer

    options, call, error, match = CDEP_CALLS[name]
    net = _bn_cnn()
    regularizer = CDEPRegularizer(net, **options)
    refused(net, lambda: call(regularizer), error, match)  # batch norm statistics untouched


def test_cdep_text_labels_beyond_the_classes():
    from captum_cd import CDEPRegularizer

    net = small_cnn()
    with pytest.raises(ValueError, match="label 5 but the model has 3 classes"):
        CDEPRegularizer(net, form="text")(torch.randn(2, 1, 8, 8), torch.ones(1, 1, 8, 8), target=torch.tensor([0, 5]))


@pytest.mark.parametrize("form", ["image", "target"])
def test_cdep_an_empty_region_adds_nothing(form):
    from captum_cd import CDEPRegularizer

    net = _bn_cnn().eval()
    options = dict(form=form, target_values=[0.0, 1.0, 0.0]) if form == "target" else dict(form=form)
    regularizer = CDEPRegularizer(net, **options)
    with torch.no_grad():
        with_empty = regularizer(IMAGES, _regions(1))
        regions = _regions()[[0, 2]]
        if form == "target":
            regularizer = CDEPRegularizer(net, form=form, target_values=[0.0, 0.0])
        without = regularizer(IMAGES, regions)
    torch.testing.assert_close(with_empty, without)
    assert without > 0


# ---------------------------------------------------------------------- AWD


def _awd_teacher(nan: bool = False) -> nn.Module:
    class Teacher(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 3)

        def forward(self, x):
            out = self.lin(x)
            return out * float("nan") if nan else out

    return Teacher().double().eval()


def _awd_data():
    return torch.randn(8, 16, dtype=torch.float64)


AWD_CALLS = {
    "NaN teacher": (True, dict(target=0), ValueError, "interpretation term is NaN or infinite.*teacher's output"),
    "NaN teacher with validation": (True, dict(target=0, validation=_awd_data()), ValueError, "NaN or infinite"),
    "epochs=-1": (False, dict(target=0, epochs=-1), ValueError, "epochs must be a positive integer"),
    "target beyond the outputs": (False, dict(target=5), ValueError, "target 5 is out of range"),
    "tensor target beyond the outputs": (False, dict(target=torch.tensor([3] * 4)), ValueError, "target 3 is out of range"),
    "cd target beyond the outputs": (False, dict(target=5, method="cd"), ValueError, "target 5 is out of range"),
}


@pytest.mark.parametrize("name", list(AWD_CALLS))
def test_fit_wavelet_refuses_rather_than_return_a_nan_filter(name):
    from captum_cd.wavelets import AdaptiveWavelet, fit_wavelet

    nan, options, error, match = AWD_CALLS[name]
    teacher, data = _awd_teacher(nan), _awd_data()
    wavelet = AdaptiveWavelet("db2", levels=2, dtype=torch.float64)
    before = wavelet.lowpass().detach().clone()
    generator = torch.Generator().manual_seed(0)  # the shuffling's own, not torch's global one
    with probe(teacher), pytest.raises(error, match=match):
        fit_wavelet(teacher, data, wavelet, epochs=options.pop("epochs", 2), batch_size=4, progress=False, generator=generator, **options)
    assert torch.isfinite(wavelet.lowpass()).all()
    assert torch.equal(wavelet.lowpass().detach(), before) or name == "NaN teacher with validation"


def test_awd_loss_says_when_its_total_is_nan():
    from captum_cd.wavelets import AdaptiveWavelet, AWDLoss

    loss = AWDLoss(_awd_teacher(nan=True), AdaptiveWavelet("db2", levels=2, dtype=torch.float64), target=0)
    with pytest.raises(ValueError, match="AWDLoss: the interpretation term"):
        loss(_awd_data())


# ---------------------------------------------------------------------- ACD and TRIM


def _acd():
    from captum_cd import AgglomerativeCD

    return AgglomerativeCD(small_cnn())


ACD_CALLS = {
    "float target": (lambda a, x: a.hierarchy(x, 1.7), TypeError, "target 1.7 is not a class index"),
    "float tensor target": (lambda a, x: a.hierarchy(x, torch.tensor([1.0])), TypeError, "integer class indices"),
    "percentile -5": (lambda a, x: a.hierarchy(x, 1, percentile=-5), ValueError, r"percentile must be a number in \[0, 100\]"),
    "percentile 150": (lambda a, x: a.hierarchy(x, 1, percentile=150), ValueError, r"\[0, 100\]"),
    "block_size 2.5": (lambda a, x: a.hierarchy(x, 1, block_size=2.5), ValueError, "block_size must be a positive integer"),
    "superpixels 0": (lambda a, x: a.hierarchy(x, 1, superpixels=0), ValueError, "superpixels must be a positive integer"),
    "perturbations_per_eval 0": (lambda a, x: a.hierarchy(x, 1, perturbations_per_eval=0), ValueError, "perturbations_per_eval must be a positive integer"),
    "NaN output": (lambda a, x: _nan_acd().hierarchy(x, 1), ValueError, "output is NaN or infinite"),
}


def _nan_acd():
    from captum_cd import AgglomerativeCD

    return AgglomerativeCD(lambda x: CNN(x) * float("nan"))


@pytest.mark.parametrize("name", list(ACD_CALLS))
def test_agglomerative_cd_arguments(name):
    call, error, match = ACD_CALLS[name]
    acd, x = _acd(), torch.randn(1, 1, 8, 8)
    refused(acd.cd.forward_func, lambda: call(acd, x), error, match)


def test_agglomerative_cd_tokens_must_match_the_sentence():
    from captum_cd import AgglomerativeCD

    embed = nn.Embedding(10, 4)
    model = nn.Sequential(embed, nn.Flatten(), nn.Linear(5 * 4, 2)).eval()
    acd, ids = AgglomerativeCD(model, layer=embed), torch.randint(0, 10, (1, 5))
    refused(model, lambda: acd.hierarchy(ids, 1, tokens=[["a", "b", "c"]]), ValueError, r"tokens\[0\] has 3 words for a sentence of 5 tokens")
    assert answered(model, lambda: acd.hierarchy(ids, 1, tokens=[list("abcde")])).tokens == list("abcde")


class _ShortInverse(torch.nn.Module):
    """A transform whose inverse drops a sample: broadcasting would hide it."""

    def forward(self, x):
        return torch.fft.rfft(x, norm="ortho").real

    def inverse(self, s):
        return torch.fft.irfft(s.to(torch.complex64), n=15, norm="ortho")[..., :1]


def test_trim_refuses_a_transform_whose_inverse_has_another_shape():
    from captum_cd import TRIM
    from captum_cd.transforms import Fourier1d

    net = nn.Sequential(nn.Linear(16, 2)).eval()
    x = torch.randn(3, 16)
    refused(net, lambda: TRIM(ContextualDecomposition(net), _ShortInverse()).attribute(x, target=0), ValueError, r"inverse gives shape \(1,\)")
    refused(net, lambda: TRIM(ContextualDecomposition(net), Fourier1d(20)).attribute(x, target=0), ValueError, r"inverse gives shape \(20,\) per example for inputs of shape \(16,\)")


# ---------------------------------------------------------------------- a key-value cache


def test_an_empty_cache_concatenated_with_a_decomposed_value():
    """Hugging Face decoders start their key-value cache as an empty 1-D tensor."""
    lin = nn.Linear(4, 4)
    cache = torch.empty(0)
    net = lambda x: torch.cat([cache, lin(x)], dim=-1)  # noqa: E731
    x = torch.randn(2, 4)
    rel, irrel = answered(lin, lambda: ContextualDecomposition(net).decompose(x, torch.ones(1, 4)))
    torch.testing.assert_close(rel + irrel, lin(x).detach()[None])


def test_out_arguments_are_refused_not_followed_silently():
    lin = nn.Linear(4, 4)

    def into_itself(x):
        h = lin(x)
        torch.add(h, 1, out=h)
        return h

    def into_another(x):
        h, o = lin(x), torch.zeros(2, 4)
        torch.mul(h, 2, out=o)
        return lin(o)

    x = torch.randn(2, 4)
    for model in (into_itself, into_another):
        with torch.no_grad():
            refused(lin, lambda: ContextualDecomposition(model).decompose(x, torch.ones(1, 4)), RuntimeError, r"with out= writes its result.*y = f\(x\)")
    refused(lin, lambda: ContextualDecomposition(lambda x: lin(x).as_strided((2, 2), (4, 1))).decompose(x, torch.ones(1, 4)), RuntimeError, "no rule for torch.Tensor.as_strided")


@pytest.mark.parametrize("options, match", [(dict(lr=0.0), "lr must be a finite number > 0"), (dict(lr=float("nan")), "lr must be"), (dict(patience=0), "patience must be a positive integer"), (dict(epochs=2.5), "epochs must be")])
def test_fit_wavelet_options(options, match):
    from captum_cd.wavelets import AdaptiveWavelet, fit_wavelet

    teacher, data, wavelet = _awd_teacher(), _awd_data(), AdaptiveWavelet("db2", levels=2, dtype=torch.float64)
    with probe(teacher), pytest.raises(ValueError, match=match):
        fit_wavelet(teacher, data, wavelet, progress=False, **options)


def test_perturbations_per_eval_zero():
    refused(CNN, lambda: CD.attribute(X, target=0, perturbations_per_eval=0), ValueError, "perturbations_per_eval must be a positive integer")


def test_hooks_are_gone_when_the_forward_raises():
    import captum_cd

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), Boom()).eval()
    x = torch.randn(2, 6)
    options = [dict(layer=net[0]), dict(module_rules={"1": {torch.tanh: captum_cd.rules.relu_form}}),
               dict(module_rules={nn.Tanh: lambda module, h: h})]  # fmt: skip
    for kwargs in options:
        refused(net, lambda: ContextualDecomposition(net, **kwargs).decompose(x, torch.ones(1, 8 if "layer" in kwargs else 6)), RuntimeError, "boom")
