#!/usr/bin/env bash
# Installs cargo-mutants (the mutation-testing tool of docs/testing.md) from the crate registry,
# at the version the figures in docs/testing.md were measured with. Idempotent.
set -euo pipefail
version="${CARGO_MUTANTS_VERSION:-27.1.0}"
if cargo mutants --version 2>/dev/null | grep -q "$version"; then
  echo "cargo-mutants $version already installed"
  exit 0
fi
cargo install --locked cargo-mutants --version "$version"
