"""CDEPRegularizer and the gradient penalties."""

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from captum_cd import CDEPRegularizer, UnsupportedOperationError, token_masks
from captum_cd.penalties import ExpectedGradientsPenalty, RRRPenalty
from reference_cd import reference_cd


def cnn():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 10), nn.ReLU(), nn.Linear(10, 4))


def pixel_masks():
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, :, 2, 3], masks[1, :, 5, 5], masks[2, :, :2, :2] = 1, 1, 1
    return masks


def test_image_form_equals_independent_cd_and_so_does_its_gradient():
    torch.manual_seed(0)
    model, x, masks = cnn(), torch.randn(5, 3, 8, 8), pixel_masks()
    reg = CDEPRegularizer(model, weight=2.0)
    penalty = reg(x, masks)
    (grad,) = torch.autograd.grad(penalty, model[0].weight)

    expected = 0.0
    for m in masks:
        beta, gamma = reference_cd(model, x, m, grad=True)
        expected = expected + torch.sigmoid(beta - gamma).mean()
    expected = 2.0 * expected
    (expected_grad,) = torch.autograd.grad(expected, model[0].weight)
    torch.testing.assert_close(penalty, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_shared_pass_gives_the_model_output_and_the_same_penalty():
    torch.manual_seed(1)
    model, x, masks = cnn(), torch.randn(4, 3, 8, 8), pixel_masks()
    reg = CDEPRegularizer(model)
    output, penalty = reg.output_and_penalty(x, masks)
    torch.testing.assert_close(output, model(x))
    torch.testing.assert_close(penalty, reg(x, masks))


def test_weight_zero_gives_exactly_the_vanilla_gradients():
    torch.manual_seed(2)
    model, x, y = cnn(), torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    vanilla = copy.deepcopy(model)
    F.cross_entropy(vanilla(x), y).backward()
    output, penalty = CDEPRegularizer(model, weight=0.0).output_and_penalty(x, pixel_masks(), target=y)
    (F.cross_entropy(output, y) + penalty).backward()
    for a, b in zip(model.parameters(), vanilla.parameters()):
        assert torch.equal(a.grad, b.grad)


def test_training_mode_is_kept_and_batch_norm_statistics_update_once():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * 36, 4)).train()
    twin = copy.deepcopy(model)
    x = torch.randn(6, 3, 8, 8)
    output, penalty = CDEPRegularizer(model).output_and_penalty(x, pixel_masks())
    assert model.training and all(m.training for m in model.modules())
    twin(x)  # one ordinary training-mode forward
    torch.testing.assert_close(model[1].running_mean, twin[1].running_mean)
    torch.testing.assert_close(model[1].running_var, twin[1].running_var)
    assert model[1].num_batches_tracked == twin[1].num_batches_tracked == 1
    assert torch.isfinite(penalty)


def test_per_example_text_and_target_forms():
    torch.manual_seed(4)
    model, x = cnn(), torch.randn(4, 3, 8, 8)
    cd_masks = torch.zeros(4, 1, 1, 8, 8)  # (B, R, ...): only examples 0 and 2 have a patch
    cd_masks[0, 0, :, :3, :3], cd_masks[2, 0, :, 4:, 4:] = 1, 1
    penalty = CDEPRegularizer(model, form="per_example")(x, cd_masks)
    expected = 0.0
    for b in (0, 2):
        beta, gamma = reference_cd(model, x[b : b + 1], cd_masks[b, 0], grad=True)
        expected = expected + torch.sigmoid(beta - gamma).mean() / 2
    torch.testing.assert_close(penalty, expected, atol=1e-5, rtol=1e-5)

    target = CDEPRegularizer(model, form="target", target_values=[1.0, 0.0, 0.5])(x, pixel_masks())
    expected = 0.0
    for m, t in zip(pixel_masks(), (1.0, 0.0, 0.5)):
        beta, gamma = reference_cd(model, x, m, grad=True)
        expected = expected + F.binary_cross_entropy_with_logits(beta - gamma, torch.full_like(beta, t))
    torch.testing.assert_close(target, expected, atol=1e-5, rtol=1e-5)

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm, self.out = nn.Embedding(20, 6), nn.LSTM(6, 5, batch_first=True), nn.Linear(5, 2)

        def forward(self, tokens):
            return self.out(self.lstm(self.embed(tokens))[0][:, -1])

    text = Text()
    tokens, labels = torch.randint(0, 20, (3, 7)), torch.tensor([0, 1, 1])
    decoys = torch.stack([token_masks([(2, 3)], 7)[0], torch.zeros(7), token_masks([(5, 6)], 7)[0]])  # (B, T)
    reg = CDEPRegularizer(text, layer=text.embed, form="text")
    penalty = reg(tokens, decoys, target=labels)
    rel, irrel = reg.cd.decompose(tokens, decoys[None, :, :, None])  # per-example token masks
    per_example = -F.logsigmoid(irrel[0, [0, 2], labels[[0, 2]]] - rel[0, [0, 2], labels[[0, 2]]])
    torch.testing.assert_close(penalty, per_example.mean())


def test_text_gradients_are_finite_where_a_step_input_is_zero():
    """A token whose vector is exactly 0 (a word without co-occurrences in PPMI vectors,
    not a padding index, so its row gets gradients): an LSTM step's relevant share is 0/0
    there, and its gradient must be 0, not NaN (a masked NaN still poisons the backward)."""
    torch.manual_seed(0)

    class ZeroWord(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 6)
            self.lstm, self.out = nn.LSTM(6, 5, batch_first=True), nn.Linear(5, 2)

        def forward(self, tokens):
            return self.out(self.lstm(self.embed(tokens))[0][:, -1])

    model = ZeroWord()
    with torch.no_grad():
        model.embed.weight[0] = 0.0
    tokens, labels = torch.tensor([[0, 3, 4, 5], [0, 0, 6, 7]]), torch.tensor([0, 1])
    decoys = torch.zeros(2, 4)
    decoys[0, 2], decoys[1, 3] = 1.0, 1.0
    reg = CDEPRegularizer(model, weight=100.0, layer=model.embed, form="text")
    logits, penalty = reg.output_and_penalty(tokens, decoys, target=labels)
    (F.cross_entropy(logits, labels) + penalty).backward()
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name


def test_clear_errors():
    model, x = cnn(), torch.randn(4, 3, 8, 8)
    reg = CDEPRegularizer(model)
    with pytest.raises(ValueError, match="does not fit"):
        reg(x, torch.ones(2, 1, 7, 8))
    with pytest.raises(ValueError, match="one label per example"):
        reg(x, pixel_masks(), target=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="form must be one of"):
        CDEPRegularizer(model, form="colour")

    class Unsupported(nn.Module):
        def forward(self, x):
            return torch.cumprod(x.flatten(1), 1)[:, :4]

    with pytest.raises(UnsupportedOperationError, match="cumprod"):
        CDEPRegularizer(Unsupported())(x, pixel_masks())


def test_subsample_and_autocast():
    torch.manual_seed(5)
    model, x = cnn(), torch.randn(8, 3, 8, 8)
    output, penalty = CDEPRegularizer(model, subsample=3).output_and_penalty(x, pixel_masks())
    assert output.shape == (8, 4) and torch.isfinite(penalty)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, penalty = CDEPRegularizer(model).output_and_penalty(x, pixel_masks())
    assert torch.isfinite(penalty) and torch.isfinite(output).all()
    penalty.float().backward()
    assert torch.isfinite(model[0].weight.grad).all()


def test_gradient_penalties_run_and_reach_the_weights():
    torch.manual_seed(6)
    model, x, y = cnn(), torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
    for penalty in (RRRPenalty(model, weight=1.0), ExpectedGradientsPenalty(model, weight=1.0, n_samples=3)):
        value = penalty(x, pixel_masks(), y)
        (grad,) = torch.autograd.grad(value, model[0].weight)
        assert value > 0 and grad.abs().sum() > 0
    # RRR by hand: the input gradient of the NLL, channels summed, squared, over the masked pixels.
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    expected = (g.sum(1, keepdim=True) ** 2 * pixel_masks().amax(0, keepdim=True)).sum()
    torch.testing.assert_close(RRRPenalty(model)(x, pixel_masks(), y), expected)


def _ddp_worker(rank, world, path, state, x, y, masks, store):
    # A file rendezvous: no port to collide with another run on the machine.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = cnn()
    model.load_state_dict(state)
    ddp = nn.parallel.DistributedDataParallel(model)
    shard = slice(rank * 2, rank * 2 + 2)
    output, penalty = CDEPRegularizer(ddp, weight=3.0).output_and_penalty(x[shard], masks)
    (F.cross_entropy(output, y[shard]) + penalty).backward()
    if rank == 0:
        torch.save([p.grad for p in model.parameters()], path)
    dist.destroy_process_group()


def test_distributed_data_parallel_gradients_equal_a_single_process(tmp_path):
    torch.manual_seed(7)
    model, x, y, masks = cnn(), torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,)), pixel_masks()
    state = copy.deepcopy(model.state_dict())
    path = str(tmp_path / "grads.pt")
    mp.spawn(_ddp_worker, args=(2, path, state, x, y, masks, str(tmp_path / "store")), nprocs=2, join=True)
    # One process, same data: DDP averages the two shards' gradients.
    grads = []
    for shard in (slice(0, 2), slice(2, 4)):
        model.zero_grad()
        output, penalty = CDEPRegularizer(model, weight=3.0).output_and_penalty(x[shard], masks)
        (F.cross_entropy(output, y[shard]) + penalty).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for ddp_grad, a, b in zip(torch.load(path), *grads):
        torch.testing.assert_close(ddp_grad, (a + b) / 2, atol=1e-6, rtol=1e-5)
