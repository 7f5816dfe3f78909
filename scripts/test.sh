#!/usr/bin/env bash
# Runs every test of the workspace: unit, property, conformance, end-to-end,
# ReasonChip interoperability (with the real Python package), doc tests.
# Installs the Python peers first (idempotent; about a minute the first time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/python-peers.sh
cargo test --workspace --all-features "$@"
