"""Peak memory of CD of 64 groups of one example, against a forward pass at batch 65
(issue 14's memory goal: no higher; the forward at batch 65 is also the floor of the time,
one ordinary pass and 64 relevant parts).

Models: the LeNet-sized CNN of ``cd_speed.py`` (64 blocks of an 8x8 grid of a 28x28
image), the LSTM and the transformer of ``text_speed.py`` (64 phrases of a 50-token
sentence, from the embedding) and ResNet-18 (torchvision's definition, random weights, 64
blocks of 28x28 pixels of a 3x224x224 image). CD is ``decompose`` without gradients.

Peak memory is what a call holds above what was held before it (inputs and masks are
made beforehand for both): on the CPU the process's resident memory, its kernel
high-water mark, with glibc told to give large blocks back (``benchmarks/_memory.py``);
on a GPU the allocator's peak. After one unmeasured call, the largest of the measured
calls' peaks is reported.

    python benchmarks/cd_memory.py [--quick] [--device cuda]
"""

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
if __name__ == "__main__":
    from benchmarks._memory import give_back_large_blocks

    give_back_large_blocks()  # before torch is imported

import torch  # noqa: E402

from captum_cd import ContextualDecomposition, token_masks  # noqa: E402

try:
    from benchmarks._memory import method, peak_bytes
    from benchmarks._timing import print_table, progress
    from benchmarks.cd_speed import block_masks
    from benchmarks.text_speed import LENGTH, LSTMClassifier, phrases, TransformerClassifier, VOCAB
except ImportError:  # run as a script from the benchmarks folder
    from _memory import method, peak_bytes
    from _timing import print_table, progress
    from cd_speed import block_masks
    from text_speed import LENGTH, LSTMClassifier, phrases, TransformerClassifier, VOCAB

from experiments.models import lenet  # noqa: E402

GROUPS = 64


def resnet18(quick: bool) -> torch.nn.Module:
    from captum_cd.compat import declare_missing_torchvision_ops

    declare_missing_torchvision_ops()  # this build's torchvision operators may not load
    import torchvision

    if quick:  # the same code with one block per stage
        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)
    return torchvision.models.resnet18()


def cases(quick: bool, device: torch.device):
    """(name, model, CD's layer, one example, the 64 groups, the batch of 65)."""
    side = 32 if quick else 224
    grid = block_masks(GROUPS, side).to(device)  # (64, 1, side, side)
    yield "LeNet, 1x28x28, 8x8 blocks", lenet(), None, torch.randn(1, 1, 28, 28), block_masks(GROUPS), torch.randn(65, 1, 28, 28)
    lstm = LSTMClassifier()
    spans = token_masks(phrases(GROUPS), LENGTH)
    text, text65 = torch.randint(0, VOCAB, (LENGTH, 1)), torch.randint(0, VOCAB, (LENGTH, 65))
    yield "LSTM (128), 50 tokens, 64 phrases", lstm, lstm.embed, text, spans[:, :, None, None], text65
    transformer = TransformerClassifier()
    tokens, tokens65 = torch.randint(0, VOCAB, (1, LENGTH)), torch.randint(0, VOCAB, (65, LENGTH))
    yield "Transformer (2 layers, 128), 50 tokens, 64 phrases", transformer, transformer.embed, tokens, spans, tokens65
    label = f"ResNet-18{' (1 block a stage)' if quick else ''}, 3x{side}x{side}, 8x8 blocks"
    yield label, resnet18(quick), None, torch.randn(1, 3, side, side), grid, torch.randn(65, 3, side, side)


def measure(fn, device: torch.device, repeats: int) -> int:
    fn()  # lazily built caches (kernels, primitives) are not the call's own memory
    return max(peak_bytes(fn, device) for _ in range(repeats))


def run(quick: bool, device: torch.device) -> list:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    repeats = 1 if quick else 3
    rows = []
    for name, model, layer, one, groups, batch65 in cases(quick, device):
        progress(name)
        model = model.to(device).eval()
        one, groups, batch65 = one.to(device), groups.to(device), batch65.to(device)
        if layer is not None:
            layer = layer.to(device)
        cd = ContextualDecomposition(model, layer=layer)
        with torch.no_grad():
            forward = measure(lambda: model(batch65), device, repeats)
            decompose = measure(lambda: cd.decompose(one, groups), device, repeats)
        rows.append((name, forward, decompose))
    return rows


def report(rows: list, device: torch.device) -> None:
    table = [(name, f"{f / 2**20:.2f}", f"{d / 2**20:.2f}", f"{d / f:.2f}x") for name, f, d in rows]
    title = f"Peak memory, CD of {GROUPS} groups of one example against a forward at batch {GROUPS + 1} ({device}, {method(device)})"
    print_table(title, table, ["model", "forward (batch 65) MiB", "CD, 64 groups MiB", "CD / forward"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ResNet with one block a stage at 32x32, one measured call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    report(run(args.quick, device), device)
