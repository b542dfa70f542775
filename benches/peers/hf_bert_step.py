"""HuggingFace peer of `benches/model_step.rs`: one BertForMaskedLM training step (forward,
loss at ~15% masked positions, backward, AdamW) of the `bert-small-peer` configuration
(vocab 8192, hidden 256, 4 layers, 4 heads, intermediate 1024, max positions 512, dropout 0.1)
at batch 32 x 128 on 2 CPU threads. Prints training tokens/s (all 4,096 input tokens per step).

    python benches/peers/hf_bert_step.py [--json]   # versions: benches/peers/requirements.txt

`--device cuda` runs it on the GPU (scripts/bench_gpu.sh). With --json, prints one line {"bench": "train_step", "value": tokens/s, "unit": "tokens/s"}
(scripts/bench_vs_peers.sh).
"""
import json
import sys
import time

import torch
from transformers import BertConfig, BertForMaskedLM

torch.set_num_threads(2)
torch.manual_seed(0)
dev = torch.device("cuda" if "--device" in sys.argv and "cuda" in sys.argv else "cpu")
config = BertConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=1024, max_position_embeddings=512)
model = BertForMaskedLM(config).train().to(dev)
optim = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
ids = torch.randint(5, 8192, (32, 128)).to(dev)
labels = torch.where(torch.rand(32, 128, device=dev) < 0.15, ids, torch.full_like(ids, -100))

def step():
    optim.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=labels).loss
    loss.backward()
    optim.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()

for _ in range(3):
    step()
times = []
for _ in range(10):
    t = time.perf_counter()
    step()
    times.append(time.perf_counter() - t)
times.sort()
median = times[len(times) // 2]
if "--json" in sys.argv:
    print(json.dumps({"bench": "train_step", "value": 32 * 128 / median, "unit": "tokens/s",
                      "torch": torch.__version__}))
    sys.exit(0)
print(f"torch {torch.__version__}: step median {median:.3f} s, {32 * 128 / median:.0f} tokens/s "
      f"(min {times[0]:.3f} s, max {times[-1]:.3f} s)")
