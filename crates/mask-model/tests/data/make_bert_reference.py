"""Reference numbers for mask-model's PyTorch conformance test.

Builds a tiny HF `BertForMaskedLM` (vocab 50, hidden 32, 2 layers, 4 heads, intermediate 64,
max positions 32, exact-erf GELU, eps 1e-12) with random weights (every parameter, including
norms and biases, drawn so that nothing is trivially 0 or 1), runs a padded batch in eval mode
and writes weights + inputs + logits + gradients of `sum(logits * dout)` (float32, and float64
from the same widened weights) to `bert_reference.safetensors`.

Produced with torch 2.15.0 and transformers 5.24.0:
    python make_bert_reference.py
"""
import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM

torch.manual_seed(0)
config = BertConfig(
    vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=32, hidden_act="gelu",
    layer_norm_eps=1e-12, type_vocab_size=2, attn_implementation="eager",
)
model = BertForMaskedLM(config).eval()
with torch.no_grad():
    for name, p in model.named_parameters():
        if "LayerNorm.weight" in name:
            p.copy_(1.0 + 0.2 * torch.randn_like(p))
        else:
            p.copy_(0.2 * torch.randn_like(p))
    model.tie_weights()

ids = torch.randint(1, 50, (2, 12))
lengths = torch.tensor([12, 7])
attention_mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
ids[1, 7:] = 0
out = model(input_ids=ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(ids))
# Gradients of sum(logits * dout) for a few parameters (backward conformance, exact-erf GELU).
dout = torch.randn_like(out.logits)
(out.logits * dout).sum().backward()
GRADS = [
    "bert.embeddings.word_embeddings.weight",
    "bert.encoder.layer.0.attention.self.query.weight",
    "bert.encoder.layer.0.intermediate.dense.weight",
    "bert.encoder.layer.1.output.LayerNorm.weight",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.bias",
]
params = dict(model.named_parameters())

state = {k: v.detach().contiguous() for k, v in model.state_dict().items()
         if k not in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
         and "position_ids" not in k}
state["input.ids"] = ids.to(torch.int64)
state["input.lengths"] = lengths.to(torch.int64)
state["output.logits"] = out.logits.detach().contiguous()
state["grad.dout"] = dout.contiguous()
for name in GRADS:
    state["grad." + name] = params[name].grad.detach().clone()
# The same in float64 (weights and dout widened from the float32 values above): separates
# formula differences from float32 accumulation differences.
m64 = model.double()
m64.zero_grad()
out64 = m64(input_ids=ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(ids))
(out64.logits * dout.double()).sum().backward()
params64 = dict(m64.named_parameters())
for name in GRADS:
    state["grad64." + name] = params64[name].grad.detach().clone()
save_file(state, "bert_reference.safetensors")
print({k: tuple(v.shape) for k, v in state.items() if not k.startswith("bert.encoder")})
