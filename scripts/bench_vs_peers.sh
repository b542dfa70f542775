#!/usr/bin/env bash
# Side-by-side speed against the PyTorch / HuggingFace peers, interleaved on this machine.
#
#   scripts/bench_vs_peers.sh [--quick] [--only REGEX]
#
# - Peers run from a venv: $PEERS_PYTHON if set, else one created at
#   ${PEERS_VENV:-$HOME/.cache/dynmask-peers} from benches/peers/requirements.txt (~5.6 GiB:
#   torch's PyPI wheel is the CUDA build; it runs on CPU).
# - Ours: benches/peer_pairs.rs (built by `cargo bench --no-run`), one process per measurement,
#   like the peers.
# - Each comparison runs ours and the peer alternately, 5 pairs (2 with --quick); the ratio is
#   median(ours) vs median(peer), > 1 meaning we are faster. --quick also skips the secondary
#   shapes (L=1024, forward+backward, compiled FlexAttention), which run 2 pairs each anyway. A peer that cannot run (e.g.
#   compiled FlexAttention without a C++ compiler) is reported and skipped.
# - --only REGEX runs only the comparisons whose name matches (e.g. --only train_step).
# - Peak resident memory of every process is read with /usr/bin/time (when installed) and
#   reported beside the speed (median over the pairs, MB).
# - Prints a Markdown table (what docs/benchmarks.md quotes), then one JSON line per comparison:
#   {"bench": NAME, "ours": x, "peer": y, "unit": ..., "ratio": r, "ours_rss_mb": .., "peer_rss_mb": ..}.
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=5 FULL=1 ONLY=.
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) PAIRS=2 FULL= ;;
    --only) ONLY="$2"; shift ;;
    *) echo "usage: $0 [--quick] [--only REGEX]" >&2; exit 2 ;;
  esac
  shift
done

if [[ -n "${PEERS_PYTHON:-}" ]]; then
  PY="$PEERS_PYTHON"
else
  VENV="${PEERS_VENV:-$HOME/.cache/dynmask-peers}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r benches/peers/requirements.txt
  fi
  PY="$VENV/bin/python"
fi

# Build once, then run the binary itself (no cargo between pairs, and edits made while the
# script runs cannot trigger a rebuild mid-comparison).
OURS_BIN=$(cargo bench --workspace --bench peer_pairs --no-run --message-format=json 2>/dev/null \
  | "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "peer_pairs" and m.get("executable"):
        print(m["executable"])')
[[ -x "$OURS_BIN" ]] || { echo "could not build benches/peer_pairs.rs" >&2; exit 1; }
RESULTS=$(mktemp) RSS=$(mktemp)
trap 'rm -f "$RESULTS" "$RSS"' EXIT
# Runs "$@", printing its JSON line with the process's peak RSS (kB, 0 if unknown) added.
measured() {
  local line rss=0
  if [[ -x /usr/bin/time ]]; then
    line=$(/usr/bin/time -f '%M' -o "$RSS" "$@" 2>/dev/null | grep '^{') || return 1
    rss=$(tail -1 "$RSS")
  else
    line=$("$@" 2>/dev/null | grep '^{') || return 1
  fi
  echo "${line%\}}, \"rss_kb\": $rss}"
}
ours() { measured "$OURS_BIN" "$@"; }
peer() { measured "$PY" "$@"; }

# compare NAME HIGHER_IS_BETTER(1|0) -- OURS_ARGS -- PEER_ARGS
compare() {
  local name="$1" higher="$2"; shift 3
  [[ "$name" =~ $ONLY ]] || return 0
  local ours_args=() peer_args=()
  while [[ "$1" != "--" ]]; do ours_args+=("$1"); shift; done; shift
  peer_args=("$@")
  for ((i = 0; i < PAIRS; i++)); do
    local o p
    o=$(ours "${ours_args[@]}") || { echo "ours failed: $name" >&2; return; }
    p=$(peer "${peer_args[@]}") || { echo "peer unavailable: $name (${peer_args[*]})" >&2; return; }
    echo "{\"name\": \"$name\", \"higher\": $higher, \"ours\": $o, \"peer\": $p}" >> "$RESULTS"
    echo "  $name pair $((i + 1))/$PAIRS done" >&2
  done
}

compare mask_generation 1 -- mask_generation -- benches/peers/collator.py --format tensors
compare mask_generation_vs_dicts 1 -- mask_generation -- benches/peers/collator.py --format dicts
compare train_step_all_positions 1 -- train_step all -- benches/peers/hf_bert_step.py --json
compare train_step_masked_positions 1 -- train_step masked -- benches/peers/hf_bert_step.py --json
for mask in window128 documents4 none; do
  name="attention_${mask/documents4/documents}"
  name="${name/attention_none/attention_dense}"
  compare "${name}_L2048" 0 -- attention "$mask" 2048 fwd -- benches/peers/sdpa.py --mask "$mask" --len 2048
  # Secondary shapes, 2 pairs each (the table's `pairs` column says so): forward+backward and
  # compiled FlexAttention cost ~30-60 s per process.
  if [[ -n "$FULL" ]]; then
    PAIRS=2 compare "${name}_L1024" 0 -- attention "$mask" 1024 fwd -- benches/peers/sdpa.py --mask "$mask" --len 1024
    PAIRS=2 compare "${name}_L2048_fwd_bwd" 0 -- attention "$mask" 2048 fwd_bwd -- benches/peers/sdpa.py --mask "$mask" --len 2048 --backward
  fi
  if [[ -n "$FULL" ]] && command -v c++ >/dev/null; then
    PAIRS=2 compare "${name}_L2048_vs_flex_attention" 0 -- attention "$mask" 2048 fwd -- benches/peers/sdpa.py --mask "$mask" --len 2048 --flex
  fi
done

# RAW_OUT=path keeps every pair (docs/results/bench_vs_peers_pairs.jsonl is such a file).
[[ -n "${RAW_OUT:-}" ]] && cp "$RESULTS" "$RAW_OUT"

"$PY" - "$RESULTS" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = list(dict.fromkeys(r["name"] for r in rows))
print("| bench | ours (median) | peer (median) | unit | ratio (> 1: we are faster) | pairs | peak RSS ours / peer (MB) |")
print("|---|---|---|---|---|---|---|")
out = []
for n in names:
    rs = [r for r in rows if r["name"] == n]
    o = statistics.median(r["ours"]["value"] for r in rs)
    p = statistics.median(r["peer"]["value"] for r in rs)
    ratio = o / p if rs[0]["higher"] else p / o
    unit = rs[0]["ours"]["unit"]
    rss = [statistics.median(r[side].get("rss_kb", 0) for r in rs) / 1024 for side in ("ours", "peer")]
    rss_text = f"{rss[0]:,.0f} / {rss[1]:,.0f}" if min(rss) > 0 else "n/a"
    print(f"| {n} | {o:,.4g} | {p:,.4g} | {unit} | {ratio:.2f}x | {len(rs)} | {rss_text} |")
    out.append({"bench": n, "ours": o, "peer": p, "unit": unit, "ratio": round(ratio, 4),
                "ours_rss_mb": round(rss[0], 1), "peer_rss_mb": round(rss[1], 1)})
for o in out:
    print(json.dumps(o))
PYEOF
