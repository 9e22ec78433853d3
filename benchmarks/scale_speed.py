"""CD beside Captum's methods at the sizes users work at: time and peak memory.

Models with random weights (nothing downloaded): ResNet-18 and ResNet-50 (torchvision's
definitions) on 3x224x224 images, a BERT-base-size encoder (12 layers, width 768, 12
heads) and a GPT-2-small-size decoder (12 layers, width 768, 12 heads, vocabulary
50257) from ``transformers`` on 64-token inputs. On every model the same 16 groups: a 4x4
grid of 56x56 blocks, or 16 spans of 4 tokens. Text models are explained from their input
embeddings (``inputs_embeds``), so every method sees the same float input.

Methods: CD (``attribute`` with the group ids as ``feature_mask``; on images also
without spatial windows, each group's convolutions over the whole map), FeatureAblation
(the same ids, 16 perturbations per pass), KernelShap (the same ids, 64 samples, 16 per
pass), IntegratedGradients, DeepLift and GradientShap (zero baselines; their step and
sample counts are printed, fewer than Captum's defaults to keep the run short).

Time: medians of interleaved repeats, as a ratio to a forward pass at the same batch in
the same process (the machine is shared; like is compared with like). Peak memory: the
most memory a call holds above what was held before it (on a GPU the allocator's peak;
on the CPU the process's resident memory, sampled every millisecond, with glibc told to
give large blocks back), as a ratio to the same measure of a forward pass. The first
(untimed) call of each method is the one measured for memory.

Device and dtype follow the inputs: ``--device cuda`` runs the same code on a GPU.

    python benchmarks/scale_speed.py                 # full (about 10-15 min on 2 cores)
    python benchmarks/scale_speed.py --quick         # tiny models, seconds (the tests run it)
    python benchmarks/scale_speed.py --device cuda   # the same on a GPU
    python benchmarks/scale_speed.py --batch 8 --models resnet18   # one model, another batch
"""

import argparse
import os
import sys
import time
import warnings
from typing import Callable, Dict, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:
    from benchmarks._memory import give_back_large_blocks, peak_bytes
    from benchmarks._timing import print_table, progress
except ImportError:  # run as a script from the benchmarks folder
    from _memory import give_back_large_blocks, peak_bytes
    from _timing import print_table, progress

if __name__ == "__main__":
    give_back_large_blocks()  # before torch: freed blocks go back, each peak is measured cleanly

import torch
from torch import nn

from captum_cd.compat import declare_missing_torchvision_ops  # noqa: E402

declare_missing_torchvision_ops()  # before torchvision or transformers import it

from captum.attr import DeepLift, FeatureAblation, GradientShap, IntegratedGradients, KernelShap  # noqa: E402

from captum_cd import ContextualDecomposition, grid_ids  # noqa: E402
from captum_cd.attr.windows import spatial_windows  # noqa: E402


class EmbeddingsToLogits(nn.Module):
    """A Hugging Face model as a function of its input embeddings, one logit row per example
    (a classifier's logits, or a decoder's next-token logits after the last token)."""

    def __init__(self, model: nn.Module, last_token: bool) -> None:
        super().__init__()
        self.model, self.last_token = model, last_token

    def forward(self, embeds):
        logits = self.model(inputs_embeds=embeds).logits
        return logits[:, -1] if self.last_token else logits


def image_model(name: str, quick: bool) -> nn.Module:
    import torchvision

    if quick:  # a ResNet of the same code with one block per stage
        return torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)
    return getattr(torchvision.models, name)()


def text_model(name: str, quick: bool) -> nn.Module:
    import transformers

    size = dict(n_layer=1, n_embd=32, n_head=2) if quick else {}
    if name == "bert":
        size = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64) if quick else {}
        config = transformers.BertConfig(num_labels=2, attn_implementation="eager", **size)
        return EmbeddingsToLogits(transformers.BertForSequenceClassification(config), last_token=False)
    config = transformers.GPT2Config(attn_implementation="eager", **({**size, "vocab_size": 1000} if quick else size))
    return EmbeddingsToLogits(transformers.GPT2LMHeadModel(config), last_token=True)


def cases(model: nn.Module, x: torch.Tensor, ids: torch.Tensor, target, steps: int) -> Dict[str, Callable[[], object]]:
    """Every method on the same input, target and (where it takes groups) group ids."""
    cd, fa, ks = ContextualDecomposition(model), FeatureAblation(model), KernelShap(model)
    ig, dl, gs = IntegratedGradients(model), DeepLift(model), GradientShap(model)
    zeros = torch.zeros_like(x)
    windows = {}
    if x.ndim == 4:  # images: the same call with each group's convolutions over the whole map
        windows["CD without windows (16 groups)"] = lambda: _dense(cd.attribute, x, target=target, feature_mask=ids)
    return {
        "forward": lambda: _no_grad(model, x),
        "CD (attribute, 16 groups)": lambda: cd.attribute(x, target=target, feature_mask=ids),
        **windows,
        "FeatureAblation (16 groups)": lambda: fa.attribute(x, target=target, feature_mask=ids, perturbations_per_eval=16),
        "KernelShap (16 groups, 64 samples)": lambda: ks.attribute(
            x, target=target, feature_mask=ids, n_samples=64, perturbations_per_eval=16
        ),
        f"IntegratedGradients ({steps} steps)": lambda: ig.attribute(
            x, zeros, target=target, n_steps=steps, internal_batch_size=steps * x.shape[0]
        ),
        "DeepLift": lambda: dl.attribute(x, zeros, target=target),
        f"GradientShap ({steps} samples)": lambda: gs.attribute(x, zeros, target=target, n_samples=steps),
    }


def measure(named: Dict[str, Callable[[], object]], repeats: int, device: torch.device) -> Dict[str, Tuple]:
    """(median seconds, peak bytes) of each case, or (None, why) where it fails."""
    peaks, failed = {}, {}
    for name, fn in named.items():
        progress(f"  {name}: memory (first call)")
        try:
            peaks[name] = peak_bytes(fn, device, sampled=True)
        except Exception as error:  # a method that cannot handle the model: reported, not hidden
            failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:70]}"
    runnable = {n: f for n, f in named.items() if n not in failed}
    samples: Dict[str, list] = {n: [] for n in runnable}
    for r in range(repeats):
        progress(f"  repeat {r + 1}/{repeats}")
        for name, fn in runnable.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    results = {n: (sorted(s)[len(s) // 2], peaks[n]) for n, s in samples.items()}
    results.update({n: (None, why) for n, why in failed.items()})
    return results


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _dense(fn, *args, **kwargs):
    with spatial_windows(False):
        return fn(*args, **kwargs)


MODELS = ("resnet18", "resnet50", "bert", "gpt2")


def run(quick: bool, device: torch.device, batch: int, repeats: int, steps: int, models=MODELS) -> Dict[str, Dict[str, Tuple]]:
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    results = {}
    side, block = (32, 8) if quick else (224, 56)
    for name in [m for m in ("resnet18", "resnet50") if m in models]:
        progress(f"{name}, {side}x{side}, batch {batch}")
        model = image_model(name, quick).to(device).eval()
        x = torch.randn(batch, 3, side, side, device=device)
        ids = grid_ids(side, side, block, device=device)  # 16 blocks
        results[f"{name} (torchvision), 3x{side}x{side}, batch {batch}"] = measure(cases(model, x, ids, 0, steps), repeats, device)
    tokens = 16 if quick else 64
    for name, label in [(m, label) for m, label in (("bert", "BERT-base-size encoder"), ("gpt2", "GPT-2-small-size decoder")) if m in models]:
        progress(f"{name}, {tokens} tokens, batch {batch}")
        model = text_model(name, quick).to(device).eval()
        width = model.model.config.hidden_size
        x = torch.randn(batch, tokens, width, device=device) * 0.02
        ids = (torch.arange(tokens, device=device) // (tokens // 16)).view(1, tokens, 1)  # 16 spans
        label = f"{label}{' (tiny)' if quick else ''}, {tokens} tokens, batch {batch}"
        results[label] = measure(cases(model, x, ids, 1, steps), repeats, device)
    return results


def report(results: Dict[str, Dict[str, Tuple]]) -> None:
    for title, measured in results.items():
        base_time, base_peak = measured["forward"]
        rows = []
        for name, (seconds, peak) in measured.items():
            if seconds is None:
                rows.append((name, "-", "-", "-", "-", f"failed: {peak}"))
                continue
            ratio = f"{peak / base_peak:.1f}x" if base_peak > 0 else "-"
            rows.append((name, f"{seconds * 1e3:.1f}", f"{seconds / base_time:.1f}x", f"{peak / 2**20:.0f}", ratio, ""))
        print_table(title, rows, ["method", "median ms", "time / forward", "peak MiB", "peak / forward", ""])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny models and inputs, 1 repeat")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 3, 1 with --quick)")
    parser.add_argument("--steps", type=int, default=16, help="IntegratedGradients steps and GradientShap samples")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=MODELS, help="a subset of the models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = args.repeats or (1 if args.quick else 3)
    print(
        f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, medians of {repeats} "
        f"timed repeats; IntegratedGradients {args.steps} steps, GradientShap {args.steps} samples"
    )
    report(run(args.quick, device, args.batch, repeats, args.steps, args.models))
