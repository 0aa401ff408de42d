"""Where do two CPUs' bits part? A few AdamW steps of AudioCNN on fixed data, every tensor of every step saved.

Run it natively and under an emulated CPU with the same settings, then compare (docs/reproducibility.md):

    export ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE
    .venv/bin/python .ci/isa_probe.py native.pt --no-onednn --exact-sqrt
    qemu-x86_64 -cpu Haswell .venv/bin/python .ci/isa_probe.py haswell.pt --no-onednn --exact-sqrt
    .venv/bin/python .ci/isa_probe.py --compare native.pt haswell.pt

`--exact-sqrt` steps with portable mode's AdamW (speciesclf.portable.ExactSqrtAdamW): a correctly rounded square
root; torch.sqrt on CPU is not correctly rounded, and its last bit differs between CPUs.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from speciesclf.models.cnn import build_model
from speciesclf.portable import ExactSqrtAdamW

STEPS = 3


def probe(exact_sqrt: bool) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 20, 500, generator=g), torch.randint(0, 89, (8,), generator=g)
    a = torch.randn(64, 300, generator=g).abs()
    out = {"op.sqrt": torch.sqrt(a), "op.exp": torch.exp(-a), "op.log": torch.log(a + 1e-3), "op.mm": a @ a.T}
    torch.manual_seed(0)
    model = build_model("AudioCNN", 89).train()
    args = {"lr": 2e-3, "weight_decay": 1e-4}
    opt = ExactSqrtAdamW(model.parameters(), **args) if exact_sqrt else torch.optim.AdamW(model.parameters(), **args)
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # the dropout masks
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        out |= {f"{step}.logits": logits.detach(), f"{step}.loss": loss.detach()}
        out |= {f"{step}.grad.{n}": p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        out |= {f"{step}.weight.{n}": p.detach().clone() for n, p in model.named_parameters()}
    return out


def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    for k in differing:
        n, most = (a[k] != b[k]).sum().item(), (a[k].double() - b[k].double()).abs().max().item()
        print(f"{k}: {n} of {a[k].numel()} differ, by up to {most:.3g}")
    print(f"{len(a) - len(differing)} of {len(a)} tensors identical")
    return 1 if any(not k.startswith("op.") for k in differing) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="+", help="the file to save; with --compare, the two files to compare")
    parser.add_argument("--compare", action="store_true")
    parser.add_argument("--no-onednn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    parser.add_argument("--exact-sqrt", action="store_true", help="AdamW with a correctly rounded square root")
    args = parser.parse_args()
    if args.compare:
        return compare(*(torch.load(f) for f in args.out))
    torch.backends.mkldnn.enabled = not args.no_onednn
    torch.save(probe(args.exact_sqrt), args.out[0])
    print(f"saved {args.out[0]}: ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN {not args.no_onednn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
