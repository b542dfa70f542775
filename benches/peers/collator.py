"""HuggingFace peer of our Bernoulli `BatchMasker` (mask-core): `DataCollatorForLanguageModeling`
at batch 256 x seq 128, vocab 30522, `[CLS] ... [SEP]` then 0-20% `[PAD]`, mlm_probability 0.15
with 80/10/10, on one thread (ours is single-threaded too).

Input formats (`--format`):
- `dicts`: a list of 256 dicts with `input_ids` and a precomputed `special_tokens_mask`, the
  format `Trainer` feeds it (the collator pads, stacks and masks);
- `tensors`: pre-built `[256, 128]` id and special-mask tensors given straight to
  `torch_mask_tokens`, its fastest path (no padding or stacking).

Prints one JSON line: {"bench": "mask_generation_<format>", "value": tokens/s, "unit": "tokens/s"}
(median of --reps timed calls after 3 warm-up calls).

    python benches/peers/collator.py --format tensors
"""
import argparse
import json
import os
import tempfile
import time

import torch
from transformers import BertTokenizerFast, DataCollatorForLanguageModeling

BATCH, SEQ, VOCAB = 256, 128, 30522

p = argparse.ArgumentParser()
p.add_argument("--format", choices=["dicts", "tensors"], default="tensors")
p.add_argument("--reps", type=int, default=20)
args = p.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)

with tempfile.TemporaryDirectory() as tmp:
    vocab = os.path.join(tmp, "vocab.txt")
    with open(vocab, "w") as f:
        specials = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
        f.write("\n".join(specials.get(i, f"w{i}") for i in range(VOCAB)) + "\n")
    tok = BertTokenizerFast(vocab_file=vocab)
collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15, return_tensors="pt")

gen = torch.Generator().manual_seed(1)
ids = torch.randint(1000, 30000, (BATCH, SEQ), generator=gen)
special = torch.zeros(BATCH, SEQ, dtype=torch.bool)
lengths = SEQ - torch.randint(0, SEQ // 5, (BATCH,), generator=gen)
for r, n in enumerate(lengths.tolist()):
    ids[r, 0], ids[r, n - 1] = 101, 102
    ids[r, n:] = 0
    special[r, 0] = special[r, n - 1] = True
    special[r, n:] = True
dicts = [{"input_ids": ids[r].tolist(), "special_tokens_mask": special[r].int().tolist()}
         for r in range(BATCH)]


def once():
    if args.format == "tensors":
        collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special.clone())
    else:
        collator(dicts)


for _ in range(3):
    once()
times = []
for _ in range(args.reps):
    t = time.perf_counter()
    once()
    times.append(time.perf_counter() - t)
times.sort()
median = times[len(times) // 2]
print(json.dumps({"bench": f"mask_generation_{args.format}", "value": BATCH * SEQ / median,
                  "unit": "tokens/s", "torch": torch.__version__}))
