#!/usr/bin/env bash
# check-rust-version.sh -- Cargo.toml's rust-version must be what the locked dependencies
# require (the highest rust-version among them), so the README's "Rust X or newer" is true.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
declared=$(sed -n 's/^rust-version *= *"\(.*\)"/\1/p' Cargo.toml)
required=$(cargo metadata --locked --format-version 1 2>/dev/null | python3 -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
versions = [p["rust_version"] for p in packages if p.get("rust_version") and p["name"] != "veil"]
print(max(versions, key=lambda v: tuple(int(x) for x in v.split("."))))')
if [[ "$declared" != "$required" ]]; then
  echo "rust-version in Cargo.toml is $declared, but the locked dependencies need $required." >&2
  echo "fix: set rust-version = \"$required\" in Cargo.toml (and the README's Rust version)." >&2
  exit 1
fi
grep -q "Rust $required or newer" README.md || {
  echo "README.md does not say \"Rust $required or newer\"; fix the Requirements section." >&2; exit 1; }
echo "rust-version $declared matches the locked dependencies"
