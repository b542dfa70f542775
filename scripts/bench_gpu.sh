#!/usr/bin/env bash
# GPU figures, for a machine with an NVIDIA GPU (Vulkan driver for wgpu, CUDA for the peers).
#
#   scripts/bench_gpu.sh [--quick]
#
# Runs our attention and train-step measurements on wgpu (benches/peer_pairs.rs with
# DYNMASK_PEER_BACKEND=wgpu: block-sparse kernel for attention, burn's fused kernel where it
# applies) and the PyTorch CUDA peers (SDPA with a dense mask, HF BertForMaskedLM) on the same
# machine, interleaved, 3 pairs (1 with --quick), and prints the same JSON lines as
# scripts/bench_vs_peers.sh: {"bench": NAME, "ours": x, "peer": y, "unit": ..., "ratio": r}.
# Peers come from $PEERS_PYTHON or a venv built from benches/peers/requirements.txt (torch's
# PyPI wheel is the CUDA build). Sized to finish in under 8 minutes on one H100-class GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=3
[[ "${1:-}" == "--quick" ]] && PAIRS=1

if [[ -n "${PEERS_PYTHON:-}" ]]; then
  PY="$PEERS_PYTHON"
else
  VENV="${PEERS_VENV:-$HOME/.cache/dynmask-peers}"
  [[ -x "$VENV/bin/python" ]] || { python3 -m venv "$VENV"; "$VENV/bin/pip" install -q -r benches/peers/requirements.txt; }
  PY="$VENV/bin/python"
fi
"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"; print("peer device:", torch.cuda.get_device_name(0))'

OURS_BIN=$(cargo bench --bench peer_pairs --no-run --message-format=json 2>/dev/null \
  | "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "peer_pairs" and m.get("executable"):
        print(m["executable"])')
export DYNMASK_PEER_BACKEND=wgpu
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

compare() {
  local name="$1" higher="$2"; shift 3
  local ours_args=() peer_args=()
  while [[ "$1" != "--" ]]; do ours_args+=("$1"); shift; done; shift
  peer_args=("$@")
  for ((i = 0; i < PAIRS; i++)); do
    local o p
    o=$("$OURS_BIN" "${ours_args[@]}" 2>/dev/null | grep '^{') || { echo "ours failed: $name" >&2; return; }
    p=$("$PY" "${peer_args[@]}" 2>/dev/null | grep '^{') || { echo "peer failed: $name" >&2; return; }
    echo "{\"name\": \"$name\", \"higher\": $higher, \"ours\": $o, \"peer\": $p}" >> "$RESULTS"
  done
}

compare gpu_train_step_all_positions 1 -- train_step all -- benches/peers/hf_bert_step.py --json --device cuda
compare gpu_train_step_masked_positions 1 -- train_step masked -- benches/peers/hf_bert_step.py --json --device cuda
for mask in window128 documents4 none; do
  compare "gpu_attention_${mask}_L2048" 0 -- attention "$mask" 2048 fwd -- benches/peers/sdpa.py --mask "$mask" --len 2048 --device cuda
  compare "gpu_attention_${mask}_L2048_fwd_bwd" 0 -- attention "$mask" 2048 fwd_bwd -- benches/peers/sdpa.py --mask "$mask" --len 2048 --backward --device cuda
done

"$PY" - "$RESULTS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for n in dict.fromkeys(r["name"] for r in rows):
    rs = [r for r in rows if r["name"] == n]
    o = statistics.median(r["ours"]["value"] for r in rs)
    p = statistics.median(r["peer"]["value"] for r in rs)
    ratio = o / p if rs[0]["higher"] else p / o
    print(json.dumps({"bench": n, "ours": o, "peer": p, "unit": rs[0]["ours"]["unit"],
                      "ratio": round(ratio, 4), "pairs": len(rs)}))
PYEOF
