"""Reference tensors for mask-attn's PyTorch conformance tests (`attn_reference.safetensors`,
layout in `attn_reference.README.md`).

q, k, v, dout ~ N(0, 1) (seed 0), six masks over L = 64 positions, and for each mask:
PyTorch SDPA's output and its gradients of sum(out * dout), compiled FlexAttention's output,
and a float64 direct computation (output and logsumexp; fully masked rows give 0 and -inf).

Produced with torch 2.15.0 on CPU:
    python make_attn_reference.py            # regenerate and compare with the committed file
    python make_attn_reference.py --write    # overwrite the committed file
"""
import argparse
import math
import pathlib

import torch
from safetensors.torch import load_file, save_file
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

HERE = pathlib.Path(__file__).parent
FILE = HERE / "attn_reference.safetensors"
B, H, L, D = 1, 2, 64, 16
SCALE = 1.0 / math.sqrt(D)


def masks(hidden_keys):
    """mask[b, h, i, j] = True iff query i may attend key j, per kind."""
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    dropped = torch.zeros(L, dtype=torch.bool)
    dropped[hidden_keys] = True
    kinds = {
        "none": torch.ones(L, L, dtype=torch.bool),
        "causal_bool": j <= i,
        "is_causal": j <= i,  # the same mask, through SDPA's is_causal=True
        "sliding_window": (i - j >= 0) & (i - j < 16),
        "token_drop": ~dropped[None, :].expand(L, L),
        "document": (i // 16) == (j // 16),
        "padded_rows": (i < 48) & (j < 48),
    }
    return {name: m.expand(B, H, L, L).contiguous() for name, m in kinds.items()}


def direct64(q, k, v, mask):
    """softmax(q k^T * scale, masked) v in float64; empty rows give 0 and logsumexp -inf."""
    s = (q.double() @ k.double().transpose(-1, -2)) * SCALE
    s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse[..., None]).nan_to_num(0.0)
    return p @ v.double(), lse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", action="store_true", help="overwrite the committed file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    q, k, v, dout = (torch.randn(B, H, L, D) for _ in range(4))
    hidden_keys = torch.randperm(L)[: L // 2]
    out = {"q": q, "k": k, "v": v, "dout": dout}
    flex = torch.compile(flex_attention)
    for name, mask in masks(hidden_keys).items():
        out[f"mask.{name}"] = mask.to(torch.uint8)
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        if name == "is_causal":
            o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, is_causal=True)
        else:
            o = torch.nn.functional.scaled_dot_product_attention(qg, kg, vg, attn_mask=mask)
        (o * dout).sum().backward()
        out[f"sdpa.{name}"] = o.detach()
        out[f"sdpa_dq.{name}"] = qg.grad
        out[f"sdpa_dk.{name}"] = kg.grad
        out[f"sdpa_dv.{name}"] = vg.grad
        ref, lse = direct64(q, k, v, mask)
        out[f"ref64.{name}"] = ref
        out[f"lse64.{name}"] = lse
        if name != "is_causal":
            m2 = mask[0, 0]
            block = create_block_mask(lambda b, h, qi, ki: m2[qi, ki], B, H, L, L, device="cpu")
            out[f"flex.{name}"] = flex(q, k, v, block_mask=block).detach()
    out = {n: t.contiguous() for n, t in out.items()}
    if args.write:
        save_file(out, FILE)
        print(f"wrote {FILE}")
        return
    committed = load_file(FILE)
    assert sorted(committed) == sorted(out), "tensor names differ"
    worst = 0.0
    for n in sorted(out):
        a, b = out[n].double(), committed[n].double()
        finite = torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), finite), n
        diff = (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0
        worst = max(worst, diff)
        if diff > 0:
            print(f"{n}: max |new - committed| = {diff:.3g}")
    print(f"{len(out)} tensors; largest difference from the committed file {worst:.3g}")


if __name__ == "__main__":
    main()
