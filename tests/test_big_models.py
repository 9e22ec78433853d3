"""CD and CDEP through the engines that run models too big for one device or one process:
activation checkpointing (torch.utils and Hugging Face), compiled modules, int8 dynamic
quantisation, Hugging Face accelerate's offloading, and FSDP (1 and 2) on gloo.

Each engine either gives what the plain model gives (CD values, CDEP gradients) or is
refused with an error that names the fix; none may change a number silently."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from captum_cd import CDEPRegularizer, ContextualDecomposition, DecompositionError, token_masks
from _zoo import assert_unchanged, snapshot

MASKS = torch.zeros(3, 1, 8, 8)
MASKS[0, :, :4], MASKS[1, :, 4:], MASKS[2, :, 2:6, 2:6] = 1, 1, 1


class Checkpointed(nn.Module):
    """conv - BN - ReLU outside, a checkpointed block (conv, BN, dropout, ReLU) inside: the
    block's input carries pending steps, and its BN and dropout need CD's training mode."""

    def __init__(self, use_reentrant=None):
        super().__init__()
        self.use_reentrant = use_reentrant
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Dropout(0.2), nn.ReLU())
        self.head = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = self.block(x) if self.use_reentrant is None else checkpoint(self.block, x, use_reentrant=self.use_reentrant)
        return self.head(x.flatten(1))


def _checkpointed(use_reentrant):
    torch.manual_seed(0)
    return Checkpointed(use_reentrant)


def _cdep_step(model, x, y, **options):
    """Gradients of one CDEP training step (dropout masks from a fixed seed)."""
    torch.manual_seed(1)
    output, penalty = CDEPRegularizer(model, weight=2.0, **options).output_and_penalty(x, MASKS)
    (F.cross_entropy(output, y) + penalty).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_non_reentrant_checkpointing_recomputes_cd_exactly(one_thread):
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    plain, checked = _checkpointed(None).eval(), _checkpointed(False).eval()
    rel, irr = ContextualDecomposition(checked).decompose(x, MASKS)  # grad enabled: a region is recorded
    expected_rel, expected_irr = ContextualDecomposition(plain).decompose(x, MASKS)
    torch.testing.assert_close(rel, expected_rel, rtol=0, atol=0)
    torch.testing.assert_close(irr, expected_irr, rtol=0, atol=0)

    expected = _cdep_step(plain.train(), x, y)
    grads = _cdep_step(checked.train(), x, y)
    assert all(g is not None for g in expected.values())
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)
    # The recomputation updates batch-norm statistics again, as it does in an ordinary step.
    ordinary = _checkpointed(False).train()
    torch.manual_seed(1)
    F.cross_entropy(ordinary(x), y).backward()
    torch.testing.assert_close(checked.block[1].running_var, ordinary.block[1].running_var)


@pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")
def test_reentrant_checkpointing_is_refused_naming_the_fix(one_thread):
    model = _checkpointed(True).train()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    before = snapshot(model)
    with pytest.raises(DecompositionError, match=r"reentrant activation checkpointing.*use_reentrant=False"):
        _cdep_step(model, x, y)
    assert_unchanged(model, before)  # the running statistics the block's first layers advanced are put back
    with torch.no_grad():  # attribution: no graph to lose, and the values are exact
        rel, _ = ContextualDecomposition(_checkpointed(True).eval()).decompose(x, MASKS)
        expected, _ = ContextualDecomposition(_checkpointed(None).eval()).decompose(x, MASKS)
    torch.testing.assert_close(rel, expected, rtol=0, atol=0)


def test_an_autograd_function_given_a_decomposed_value_is_refused(one_thread):
    class ReverseGradient(torch.autograd.Function):  # domain adaptation's identity with a backward of its own
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return -grad

    class Adversarial(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            return self.b(ReverseGradient.apply(F.relu(self.a(x))))

    with pytest.raises(DecompositionError, match=r"torch\.autograd\.Function \(ReverseGradientBackward\).*register_rule"):
        ContextualDecomposition(Adversarial()).decompose(torch.randn(3, 6), torch.eye(6)[:2])


def test_module_rules_inside_a_recomputation_are_refused(one_thread):
    from captum_cd.attr.rules import relu_form

    model, x = _checkpointed(False).eval(), torch.randn(2, 3, 8, 8)
    cd = ContextualDecomposition(model, module_rules={"block": {F.relu: relu_form}})
    rel, _ = cd.decompose(x, MASKS)
    with pytest.raises(DecompositionError, match=r"recomputes part of the model in backward.*rules="):
        rel.sum().backward()


def test_a_start_layer_inside_a_checkpointed_block_is_refused(one_thread):
    model = _checkpointed(False).train()
    with pytest.raises(DecompositionError, match=r"layer Conv2d runs inside an activation-checkpointed part"):
        CDEPRegularizer(model, layer=model.block[0])(torch.randn(2, 3, 8, 8), torch.ones(1, 8, 8, 8))
    CDEPRegularizer(model, layer=model.stem[0])(torch.randn(2, 3, 8, 8), torch.ones(1, 8, 8, 8)).backward()  # outside: fine


def test_a_gradient_hook_on_a_decomposed_value_sees_both_parts(one_thread):
    seen = []

    class Hooked(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            h = self.a(x)
            h.register_hook(lambda grad: seen.append(tuple(grad.shape)))
            return self.b(h)

    rel, irr = ContextualDecomposition(Hooked()).decompose(torch.randn(3, 6), torch.eye(6)[:4])
    (rel.sum() + 2 * irr.sum()).backward()
    assert sorted(seen) == [(3, 5), (4, 3, 5)]


def test_a_value_read_under_no_grad_keeps_its_graph(one_thread):
    """A pending step runs at its first reader; a reader under no_grad (a monitoring line,
    or an engine's autograd.Function) must not cache parts without their graph."""

    class Monitored(nn.Module):
        def __init__(self, monitor):
            super().__init__()
            self.monitor, self.a, self.b = monitor, nn.Linear(6, 5), nn.Linear(5, 2)

        def forward(self, x):
            h = F.relu(self.a(x))
            if self.monitor:
                with torch.no_grad():
                    self.seen = torch.cat([h, h]).full.abs().amax()
            return self.b(h)

    grads = []
    for monitor in (False, True):
        torch.manual_seed(0)
        model = Monitored(monitor)
        rel, _ = ContextualDecomposition(model).decompose(torch.randn(3, 6), torch.eye(6)[:4])
        rel.square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, monitored in zip(*grads):
        torch.testing.assert_close(monitored, plain, rtol=0, atol=0)


# ---------------------------------------------------------------------- Hugging Face


class Logits(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids):
        return self.model(input_ids=ids).logits


def _llama_step(use_reentrant):
    transformers = pytest.importorskip("transformers")  # in the test extra
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=3, pad_token_id=0,
    )
    llama = transformers.LlamaForSequenceClassification(config).double().train()
    if use_reentrant is not None:
        llama.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    ids = torch.randint(1, 50, (3, 8), generator=torch.Generator().manual_seed(1))
    reg = CDEPRegularizer(Logits(llama), layer=llama.model.embed_tokens, form="text")
    output, penalty = reg.output_and_penalty(ids, token_masks([(1, 3), (4, 6)], 8), target=torch.tensor([0, 1, 2]))
    (F.cross_entropy(output, torch.tensor([0, 1, 2])) + penalty).backward()
    return {name: p.grad for name, p in llama.named_parameters()}


def test_hugging_face_gradient_checkpointing(one_thread):
    expected = _llama_step(None)
    assert all(g is not None for g in expected.values())
    grads = _llama_step(False)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-9, atol=1e-15, msg=name)
    with pytest.raises(DecompositionError, match="gradient_checkpointing_kwargs=.*'use_reentrant': False"):
        _llama_step(True)


# ---------------------------------------------------------------------- compiled and quantised


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def _compiled_in_place():
    model = _mlp()
    model.compile()
    return model


def _compiled_submodule():
    model = _mlp()
    model[0] = torch.compile(model[0])
    return model


@pytest.mark.parametrize(
    "make, says",
    [
        (_compiled_in_place, r"the model is compiled in place \(module\.compile\(\)\).*uncompiled instance"),
        (_compiled_submodule, r"module '0' \(OptimizedModule\) is compiled with torch\.compile.*_orig_mod"),
        (lambda: torch.compile(_mlp()), r"the model is compiled with torch\.compile.*_orig_mod"),
    ],
    ids=["in place", "submodule", "wrapper"],
)
def test_compiled_modules_are_refused_or_run_eagerly(one_thread, make, says):
    model, x, masks = make(), torch.randn(4, 16), torch.eye(16)[:5]
    with pytest.raises(TypeError, match=r"(?=.*set_stance\(\"force_eager\"\))" + says):
        ContextualDecomposition(model).decompose(x, masks)
    with torch.compiler.set_stance("force_eager"):  # the fix the message names: exact
        rel, irr = ContextualDecomposition(model).decompose(x, masks)
    expected_rel, expected_irr = ContextualDecomposition(_mlp()).decompose(x, masks)
    torch.testing.assert_close(rel, expected_rel, rtol=0, atol=0)
    torch.testing.assert_close(irr, expected_irr, rtol=0, atol=0)


def test_int8_dynamic_quantisation_is_refused_by_name(one_thread):
    with pytest.warns(UserWarning):  # torch deprecates its quantised tensors
        model = torch.ao.quantization.quantize_dynamic(_mlp(), {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(DecompositionError, match=r"no rule for quantized\.linear_dynamic, called in module '0'"):
        ContextualDecomposition(model).decompose(torch.randn(2, 16), torch.eye(16)[:3])


def test_a_compiled_function_inside_the_model_is_named(one_thread):
    relu = torch.compile(F.relu)

    class CallsCompiled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 4)

        def forward(self, x):
            return relu(self.linear(x))

    with pytest.raises(Exception, match=r"a function compiled with torch\.compile received decomposed values.*force_eager"):
        ContextualDecomposition(CallsCompiled()).decompose(torch.randn(2, 16), torch.eye(16)[:3])


# ---------------------------------------------------------------------- accelerate


@pytest.fixture
def accelerate():
    return pytest.importorskip("accelerate")  # in the test extra


def _offloaded_cases(accelerate, directory):
    """Each of accelerate's big-model inference engines, on a fresh copy of the MLP."""
    yield "cpu_offload", accelerate.cpu_offload(_mlp(), execution_device=torch.device("cpu"))
    yield "disk_offload", accelerate.disk_offload(_mlp(), os.path.join(directory, "disk"), execution_device=torch.device("cpu"))
    device_map = {"0": "cpu", "1": "cpu", "2": "disk"}
    yield "dispatch_model", accelerate.dispatch_model(_mlp(), device_map, offload_dir=os.path.join(directory, "dispatch"))
    from safetensors.torch import save_file

    path = os.path.join(directory, "mlp.safetensors")
    save_file(_mlp().state_dict(), path)
    with accelerate.init_empty_weights():
        empty = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    yield "load_checkpoint_and_dispatch", accelerate.load_checkpoint_and_dispatch(
        empty, path, device_map=device_map, offload_folder=os.path.join(directory, "loaded")
    )


def test_accelerate_offloading_gives_the_plain_models_decomposition(one_thread, accelerate, tmp_path):
    x, masks = torch.randn(4, 16), torch.eye(16)[:5]
    with torch.no_grad():
        expected = ContextualDecomposition(_mlp()).decompose(x, masks)
    for name, model in _offloaded_cases(accelerate, str(tmp_path)):
        hooks = [getattr(m, "_hf_hook", None) for m in model.modules()]
        with torch.no_grad():
            rel, irr = ContextualDecomposition(model).decompose(x, masks)
        torch.testing.assert_close(rel, expected[0], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(irr, expected[1], rtol=0, atol=0, msg=name)
        assert [getattr(m, "_hf_hook", None) for m in model.modules()] == hooks, name
        assert all(p.device.type == "meta" for p in model[2].parameters()), name  # still offloaded


# ---------------------------------------------------------------------- FSDP on gloo


class LayerScale(nn.Module):
    """``x * gamma`` with a parameter: a pending step whose context is a parameter."""

    def __init__(self, width):
        super().__init__()
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, width))

    def forward(self, x):
        return x * self.gamma


def _sharded_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), LayerScale(32), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))


def _shard(model, engine):
    """One FSDP unit per layer (the gathered parameters of a layer are freed after it)."""
    units = [m for m in model if isinstance(m, (nn.Linear, LayerScale))]
    if engine == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        for unit in units:
            fully_shard(unit)
        return fully_shard(model)
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return FullyShardedDataParallel(model, auto_wrap_policy=ModuleWrapPolicy({nn.Linear, LayerScale}), device_id=torch.device("cpu"))


def _full_parameters(model, engine):
    if engine == "fsdp2":
        return {name: p.full_tensor() for name, p in model.named_parameters()}
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(model):
        return {name.replace("_fsdp_wrapped_module.", ""): p.detach().clone() for name, p in model.named_parameters()}


FSDP_X, FSDP_Y = torch.randn(4, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 3])
FSDP_MASKS = torch.zeros(2, 16)
FSDP_MASKS[0, :8], FSDP_MASKS[1, 8:] = 1, 1


def _fsdp_cases(x, y):
    """What each rank computes: CD in eval and the gradients of a CDEP training step."""
    results = {}
    for engine in ("fsdp2", "fsdp1"):
        model = _shard(_sharded_mlp(), engine).eval()
        with torch.no_grad():
            results[engine, "cd"] = ContextualDecomposition(model).decompose(x, FSDP_MASKS)[0]
        output, penalty = CDEPRegularizer(model.train(), weight=2.0).output_and_penalty(x, FSDP_MASKS)
        (F.cross_entropy(output, y) + penalty).backward()
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        results[engine, "step"] = _full_parameters(model, engine)
    return results


def _fsdp_worker(rank, world, port, path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shard = slice(rank * 2, rank * 2 + 2)
        torch.save(_fsdp_cases(FSDP_X[shard], FSDP_Y[shard]), f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _spawn(worker, world, *args, timeout=120):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.spawn(worker, args=(world, port, *args), nprocs=world, join=False)
    try:
        for _ in range(timeout * 10):
            if context.join(timeout=0.1):
                return
        pytest.fail(f"the distributed workers did not finish within {timeout} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_fsdp_cd_and_a_cdep_step_equal_a_single_process(one_thread, tmp_path):
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP is not available")
    if not hasattr(torch.distributed.fsdp, "fully_shard"):
        pytest.skip("FSDP2 (torch.distributed.fsdp.fully_shard) needs torch >= 2.6")
    path = str(tmp_path / "results")
    _spawn(_fsdp_worker, 2, path)
    ranks = [torch.load(f"{path}.{rank}") for rank in range(2)]
    # One process, same data: each rank's CD of its shard, and one SGD step (lr 1) with the
    # shards' gradients averaged.
    model = _sharded_mlp().eval()
    step = {name: p.detach().clone() for name, p in model.named_parameters()}
    for rank, shard in enumerate((slice(0, 2), slice(2, 4))):
        with torch.no_grad():
            expected = ContextualDecomposition(model).decompose(FSDP_X[shard], FSDP_MASKS)[0]
        for engine in ("fsdp2", "fsdp1"):
            torch.testing.assert_close(ranks[rank][engine, "cd"], expected, rtol=1e-6, atol=1e-7, msg=engine)
        model.zero_grad()
        output, penalty = CDEPRegularizer(model.train(), weight=2.0).output_and_penalty(FSDP_X[shard], FSDP_MASKS)
        (F.cross_entropy(output, FSDP_Y[shard]) + penalty).backward()
        model.eval()
        for name, p in model.named_parameters():
            step[name] -= p.grad / 2
    for engine in ("fsdp2", "fsdp1"):
        stepped = ranks[0][engine, "step"]
        assert stepped.keys() == step.keys(), engine
        for name, value in stepped.items():
            torch.testing.assert_close(value, step[name], rtol=1e-5, atol=1e-7, msg=f"{engine} {name}")
