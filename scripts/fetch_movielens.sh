#!/usr/bin/env bash
# Obtains MovieLens 100k (GroupLens, F. M. Harper and J. A. Konstan 2015) on *your* machine, in
# its standard `u.data` format: `user \t item \t rating \t timestamp`, 100,000 rows.
#
# MovieLens may not be redistributed, so dynmask never ships it. This script takes the copy that
# the RecBole wheel (recbole==1.2.1 on PyPI) carries as an atomic file,
# `recbole/dataset_example/ml-100k/ml-100k.inter` (a header line
# `user_id:token item_id:token rating:float timestamp:float`, then the rows of u.data in u.data's
# order), and converts it to u.data (the header dropped). By using the data you accept the
# MovieLens terms of use: https://files.grouplens.org/datasets/movielens/ml-100k-README.txt
#
# Usage: scripts/fetch_movielens.sh [OUT_DIR]     (default: data/movielens/ml-100k)
# Needs: python3 with pip. Writes OUT_DIR/u.data; prints its SHA-256 and row count.
set -euo pipefail

out_dir="${1:-data/movielens/ml-100k}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "downloading recbole==1.2.1 (wheel only, no dependencies) ..."
python3 -m pip download --quiet recbole==1.2.1 --no-deps --only-binary=:all: -d "$tmp"
wheel="$(ls "$tmp"/recbole-1.2.1-*.whl)"

mkdir -p "$out_dir"
python3 - "$wheel" "$out_dir/u.data" <<'PY'
import sys, zipfile

wheel, out = sys.argv[1], sys.argv[2]
member = "recbole/dataset_example/ml-100k/ml-100k.inter"
with zipfile.ZipFile(wheel) as z:
    lines = z.read(member).decode("utf-8").splitlines()
header = lines[0].split("\t")
expected = ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
if header != expected:
    sys.exit(f"unexpected header in {member}: {header} (expected {expected})")
rows = []
for n, line in enumerate(lines[1:], start=2):
    fields = line.split("\t")
    if len(fields) != 4 or not all(f.strip().isdigit() for f in fields):
        sys.exit(f"{member}: line {n} is not four integers: {line!r}")
    rows.append("\t".join(f.strip() for f in fields))
with open(out, "w", encoding="utf-8", newline="\n") as f:
    f.write("\n".join(rows) + "\n")
print(f"wrote {out}: {len(rows)} rows")
if len(rows) != 100_000:
    sys.exit(f"expected 100000 rows, got {len(rows)}")
PY

if command -v sha256sum >/dev/null; then
    sha256sum "$out_dir/u.data"
else
    shasum -a 256 "$out_dir/u.data"
fi
