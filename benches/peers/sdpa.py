"""PyTorch peers of `dynmask`'s masked attention: `scaled_dot_product_attention` with a dense
boolean mask (what HF models do on CPU), and compiled FlexAttention with a block mask when a C++
compiler is present (`--flex`). Shape B4 H8 D64 f32, L from `--len`, masks `none`, `window128`
(causal band of 128 keys: q - 128 < k <= q) and `documents4` (four equal documents,
block-diagonal, not causal). Forward, or forward + backward with `--backward`. 2 threads.

Prints one JSON line: {"bench": "attention_<mask>_L<len>[_bwd]", "value": median ms, "unit": "ms"}.

    python benches/peers/sdpa.py --mask window128 --len 2048
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--mask", choices=["none", "window128", "documents4"], required=True)
p.add_argument("--len", type=int, default=2048)
p.add_argument("--backward", action="store_true")
p.add_argument("--flex", action="store_true", help="compiled FlexAttention instead of SDPA")
p.add_argument("--reps", type=int, default=5)
p.add_argument("--device", default="cpu", help="cpu (2 threads) or cuda (scripts/bench_gpu.sh)")
args = p.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
dev = torch.device(args.device)
B, H, D, L = 4, 8, 64, args.len
q, k, v = ((torch.rand(B, H, L, D) * 2 - 1).to(dev) for _ in range(3))
doc = torch.arange(L, device=dev) // (L // 4)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def allowed(qi, ki):
    if args.mask == "window128":
        return (ki <= qi) & (qi - ki < 128)
    if args.mask == "documents4":
        return doc[qi] == doc[ki]
    return torch.ones_like(qi, dtype=torch.bool)


if args.flex:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    def mask_mod(b, h, qi, ki):
        return allowed(qi, ki)

    block = None if args.mask == "none" else create_block_mask(mask_mod, None, None, L, L,
                                                               device=args.device)
    attend = torch.compile(flex_attention)

    def fwd(q, k, v):
        return attend(q, k, v, block_mask=block)
else:
    pos = torch.arange(L, device=dev)
    dense = None if args.mask == "none" else allowed(pos[:, None], pos[None, :])

    def fwd(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=dense)


def once():
    if args.backward:
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        fwd(qq, kk, vv).sum().backward()
    else:
        with torch.no_grad():
            fwd(q, k, v)


for _ in range(2):
    once()
sync()
times = []
for _ in range(args.reps):
    t = time.perf_counter()
    once()
    sync()
    times.append(time.perf_counter() - t)
times.sort()
suffix = "_bwd" if args.backward else ""
print(json.dumps({"bench": f"attention_{args.mask}_L{L}{suffix}",
                  "value": 1e3 * times[len(times) // 2], "unit": "ms",
                  "peer": "flex_attention" if args.flex else "sdpa", "torch": torch.__version__}))
