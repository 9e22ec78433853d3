"""Explaining a language model's output text: time and peak memory of
LLMContextualDecomposition against Captum's LLM attribution methods on the same inputs,
as ratios to one forward pass, side by side in one run.

Models (random weights): a GPT-2-small-size decoder (12 layers, width 768, 12 heads,
vocabulary 50,257) and a Llama-style one (12 layers, width 768, 12 query and 4 key-value
heads, SiLU-gated MLP of 2,048, RMSNorm, rotary positions, vocabulary 32,000). Prompts of
64 and 512 tokens (SST test sentences, through a byte-level BPE tokenizer trained here
on SST's training text), targets of 1 and 16 tokens; features: every token of the prompt
(``TextTokenInput``) or 8 spans of words (``TextTemplateInput`` with 8 values).

Methods, each through Captum's LLM API with its defaults:

- ``LLMContextualDecomposition`` (every target token from one pass);
- ``LLMAttribution(FeatureAblation)`` (a perturbed prompt per feature, the target
  teacher forced in the same pass: ``forward_in_tokens=False``);
- ``LLMAttribution(KernelShap)`` (25 samples, ``forward_in_tokens=False``; no per-token
  scores);
- ``LLMGradientAttribution(LayerIntegratedGradients)`` on the input embedding (50 steps,
  per target token; TextTokenInput only, so per-token features only).

Captum's default for the perturbation methods, decoding the target token by token with
the key-value cache (``use_cached_outputs=True``), is not used: with transformers 5 it
feeds the whole sequence again at every step on top of the cache, so its
log-probabilities differ from those of the cache-free path, and the positions run past
the model's limit for long prompts (an IndexError in GPT-2's position embedding at 64
prompt and 16 target tokens).
``forward_in_tokens=False`` (one pass per perturbation, as CD) agrees with the cache-free
token-by-token path and is the cheapest correct one.

The forward pass the ratios divide by is the model on the prompt and the target at batch
1, without the cache, its logits at the target positions only (what the methods need;
the logits of every position would make it slower and the ratios smaller). A method
slower than ``--slow`` seconds is timed once, the others ``--repeats`` times (medians).

Memory: CD of 64 groups in one pass (the 64 tokens of the short prompt; 64 spans of words
of the long one) against that forward at batch 65, peak above what was held before
(``benchmarks/_memory.py``).

    python benchmarks/llm_speed.py [--quick] [--models gpt2,llama] [--prompts 64,512]
        [--targets 1,16] [--methods cd,fa,ks,lig] [--features "every token,8 spans"]
        [--lig-batch N] [--threads 1]
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root: experiments/
if __name__ == "__main__":
    from benchmarks._memory import give_back_large_blocks

    give_back_large_blocks()  # before torch is imported

import torch  # noqa: E402

from captum_cd.compat import declare_missing_torchvision_ops  # noqa: E402

declare_missing_torchvision_ops()  # before transformers imports torchvision
import transformers  # noqa: E402
from captum.attr import (  # noqa: E402
    FeatureAblation,
    KernelShap,
    LayerIntegratedGradients,
    LLMAttribution,
    LLMGradientAttribution,
    TextTemplateInput,
    TextTokenInput,
)

from captum_cd import LLMContextualDecomposition  # noqa: E402
from experiments.language_model import bpe_tokenizer, sst_text  # noqa: E402

try:
    from benchmarks._memory import method as memory_method, peak_bytes
    from benchmarks._timing import print_table, progress
except ImportError:  # run as a script from the benchmarks folder
    from _memory import method as memory_method, peak_bytes
    from _timing import print_table, progress

METHODS = {"cd": "CD", "fa": "FeatureAblation", "ks": "KernelShap", "lig": "LayerIntegratedGradients"}
GROUPS = 64


def model(name: str, vocab: int, quick: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    if name == "gpt2":
        size = dict(n_embd=64, n_layer=2, n_head=4) if quick else {}
        config = transformers.GPT2Config(vocab_size=vocab if quick else 50257, n_positions=1024, **size, **ids)
    else:
        size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if not quick:
            size = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)
        config = transformers.LlamaConfig(vocab_size=vocab if quick else 32000, max_position_embeddings=1024, **size, **ids)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def prompt_text(tokenizer, length: int) -> str:
    """Text of SST test sentences that the tokenizer turns into ``length`` tokens (with ``<s>``)."""
    ids = tokenizer(" ".join(sst_text("test", 400)))["input_ids"][1:length]
    text = tokenizer.decode(ids).strip()
    while len(tokenizer(text)["input_ids"]) > length:
        text = text.rsplit(" ", 1)[0]
    return text


def spans(text: str, count: int) -> TextTemplateInput:
    """The text as ``count`` runs of words, the values of a template."""
    words = text.split(" ")
    bounds = [round(i * len(words) / count) for i in range(count + 1)]
    values = [" ".join(words[a:b]) for a, b in zip(bounds, bounds[1:])]
    return TextTemplateInput(" ".join(["{}"] * count), values=values)


def methods(llm, tokenizer, chosen, lig_batch=None):
    """name -> attribute(inp, target) for each chosen method."""
    out = {}
    if "cd" in chosen:
        cd = LLMContextualDecomposition(llm, tokenizer)
        out["CD"] = lambda inp, target: cd.attribute(inp, target=target)
    if "fa" in chosen:
        fa = LLMAttribution(FeatureAblation(llm), tokenizer)
        out["FeatureAblation"] = lambda inp, target: fa.attribute(inp, target=target, forward_in_tokens=False)
    if "ks" in chosen:
        ks = LLMAttribution(KernelShap(llm), tokenizer)
        out["KernelShap"] = lambda inp, target: ks.attribute(inp, target=target, forward_in_tokens=False)
    if "lig" in chosen:
        lig = LLMGradientAttribution(LayerIntegratedGradients(llm, llm.get_input_embeddings()), tokenizer)
        batch = {} if lig_batch is None else {"internal_batch_size": lig_batch}
        out["LayerIntegratedGradients"] = lambda inp, target: lig.attribute(inp, target=target, **batch)
    return out


def timed(fn, repeats: int, slow: float) -> float:
    """Median seconds of ``fn`` (after one untimed call); once only if it is slower than ``slow``."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    if first > slow:
        return first
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def forward_call(llm, sequence: torch.Tensor, kept: int):
    def call():
        with torch.no_grad():
            llm(input_ids=sequence, attention_mask=torch.ones_like(sequence), use_cache=False, logits_to_keep=kept)

    return call


def run_model(name, tokenizer, args) -> None:
    llm = model(name, len(tokenizer), args.quick)
    label = {"gpt2": "GPT-2-small-size", "llama": "Llama-style"}[name] + (" (2 layers, width 64)" if args.quick else "")
    chosen = methods(llm, tokenizer, args.methods, args.lig_batch)
    target_pool = tokenizer(" ".join(sst_text("dev", 40)))["input_ids"][1:]
    time_rows, memory_rows = [], []
    for length in args.prompts:
        text = prompt_text(tokenizer, length)
        inputs = {"every token": TextTokenInput(text, tokenizer), "8 spans": spans(text, 8)}
        inputs = {kind: inputs[kind] for kind in args.features}
        prompt = TextTokenInput(text, tokenizer).inp_tensor
        for target_length in args.targets:
            target = torch.tensor(target_pool[:target_length])
            sequence = torch.cat([prompt, target[None]], 1)
            forward = timed(forward_call(llm, sequence, target_length), max(args.repeats, 5), args.slow)
            time_rows.append((prompt.shape[1], target_length, "-", "forward", f"{1000 * forward:.1f}", "1.0x"))
            progress(f"{label}: {'  '.join(map(str, time_rows[-1]))}")
            for features, inp in inputs.items():
                for method, attribute in chosen.items():
                    if method == "LayerIntegratedGradients" and not isinstance(inp, TextTokenInput):
                        continue  # Captum's LLMGradientAttribution takes token inputs only
                    seconds = timed(lambda: attribute(inp, target), args.repeats, args.slow)
                    time_rows.append((prompt.shape[1], target_length, features, method, f"{1000 * seconds:.1f}", f"{seconds / forward:.1f}x"))
                    progress(f"{label}: {'  '.join(map(str, time_rows[-1]))}")
        if "cd" in args.methods:
            memory_rows.append(memory_row(llm, tokenizer, text, prompt, target_pool, args))
    title = f"{label}: time and ratio to a forward pass ({torch.get_num_threads()} thread(s))"
    print_table(title, time_rows, ["prompt", "target", "features", "method", "median ms", "time / forward"])
    print_table(
        f"{label}: peak memory of CD of G groups in one pass against a forward at batch G + 1 ({memory_method(torch.device('cpu'))})",
        memory_rows,
        ["prompt", "target", "groups G", "forward (batch G + 1) MiB", "CD MiB", "CD / forward"],
    )


def memory_row(llm, tokenizer, text, prompt, target_pool, args):
    """CD of 64 groups in one pass (the tokens of a prompt of at most 64, else 64 spans)
    against a forward at batch 65 (groups + 1)."""
    target_length = max(args.targets)
    target = torch.tensor(target_pool[:target_length])
    length = prompt.shape[1]
    inp = TextTokenInput(text, tokenizer) if length <= GROUPS else spans(text, GROUPS)
    count = min(length, GROUPS)
    cd = LLMContextualDecomposition(llm, tokenizer)
    batch = torch.cat([prompt, target[None]], 1).expand(count + 1, -1)
    forward = forward_call(llm, batch, target_length)
    decompose = lambda: cd.decompose(inp, target=target, perturbations_per_eval=count)  # noqa: E731
    device = torch.device("cpu")
    peaks = []
    for fn in (forward, decompose):
        fn()  # lazily built caches are not the call's own memory
        peaks.append(max(peak_bytes(fn, device) for _ in range(1 if args.quick else 2)))
    f, d = peaks
    groups = f"{count} ({'every token' if length <= GROUPS else 'spans'})"
    return (length, target_length, groups, f"{f / 2**20:.1f}", f"{d / 2**20:.1f}", f"{d / f:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2-layer models of width 64, a 32-token prompt, targets of 1 and 4")
    parser.add_argument("--models", default="gpt2,llama")
    parser.add_argument("--prompts", default=None, help="prompt lengths in tokens (default 64,512; quick: 64)")
    parser.add_argument("--targets", default=None, help="target lengths in tokens (default 1,16; quick: 1,4)")
    parser.add_argument("--methods", default="cd,fa,ks,lig", help=f"some of {','.join(METHODS)}")
    parser.add_argument("--features", default="every token,8 spans", help="some of: every token, 8 spans")
    parser.add_argument("--lig-batch", type=int, default=None, help="IG's internal_batch_size (default: its 50 steps at once)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow", type=float, default=60.0, help="a method slower than this many seconds is timed once")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.prompts = [int(p) for p in (args.prompts or ("32" if args.quick else "64,512")).split(",")]
    args.targets = [int(t) for t in (args.targets or ("1,4" if args.quick else "1,16")).split(",")]
    args.methods = args.methods.split(",")
    args.features = args.features.split(",")
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    tokenizer = bpe_tokenizer(sst_text("train", 3000), vocab_size=300 if args.quick else 2000)
    print(f"threads: {torch.get_num_threads()}; tokenizer: byte-level BPE of {len(tokenizer)} tokens trained on SST")
    for name in args.models.split(","):
        run_model(name, tokenizer, args)


if __name__ == "__main__":
    main()
