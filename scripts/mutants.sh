#!/usr/bin/env bash
# Mutation testing (docs/testing.md). Not part of CI: a maintainer runs it.
#
#   scripts/mutants.sh core [K/N]       mask-core in full, or shard K of N (e.g. 0/8; round-robin,
#                                       so any set of shards is an even sample of the mutants)
#   scripts/mutants.sh hotspots [K/N]   the burn crates' numeric hot spots (.cargo/mutants-hotspots.toml)
#   scripts/mutants.sh core all --re REGEX   further arguments go to cargo-mutants: here, re-test
#                                       only the named mutants (e.g. the survivors of earlier shards)
#
# Uses the shared target directory (CARGO_TARGET_DIR, as CI does), so burn is not rebuilt in
# cargo-mutants' scratch copy. Cargo names a workspace's artifacts by paths relative to the
# workspace root, so the scratch copy writes the same files as this checkout: run no other
# build of this workspace into that directory meanwhile (it would swap mutated and unmutated
# binaries between the two), or give the other build its own CARGO_TARGET_DIR. Results go to mutants/<what>[-K-of-N]/mutants.out/
# (outcomes.json, caught.txt, missed.txt, timeout.txt, unviable.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/dynmask-target}"
scripts/install_mutants.sh
what="${1:-core}"
shard="${2:-}"
extra=("${@:3}")
[ "$shard" = all ] && shard=
out="mutants/$what${shard:+-${shard/\//-of-}}"
mkdir -p "$out"
args=(--no-shuffle --output "$out" "${extra[@]}")
# --sharding is only accepted together with --shard (the full run takes neither).
[ -n "$shard" ] && args+=(--sharding round-robin --shard "$shard")
case "$what" in
  core)
    # Unit and integration tests (doctests only restate examples); release, like CI.
    cargo mutants --package mask-core --test-package mask-core --profile release \
      --timeout-multiplier 3 "${args[@]}" -- --lib --tests ;;
  hotspots)
    cargo mutants --workspace --config .cargo/mutants-hotspots.toml "${args[@]}" ;;
  *) echo "usage: $0 core|hotspots [K/N]" >&2; exit 2 ;;
esac
