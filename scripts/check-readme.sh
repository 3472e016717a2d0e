#!/usr/bin/env bash
# check-readme.sh -- runs the README's "After the demo" commands exactly as written, in order,
# as a user pasting them would (after `make demo`). Any failing command fails the check.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
block=$(awk '/^## After the demo/ {section = 1; next}
             section && /^```sh/ {inside = 1; next}
             inside && /^```/ {exit}
             inside {print}' README.md)
[[ -n "$block" ]] || { echo "README.md has no sh block under '## After the demo'" >&2; exit 1; }
while IFS= read -r line; do
  [[ -n "$line" ]] || continue
  echo "\$ $line"
  bash -euo pipefail -c "$line" > /tmp/veil-readme-step.log 2>&1 || {
    cat /tmp/veil-readme-step.log >&2
    echo "README 'After the demo' command failed: $line" >&2
    exit 1
  }
  tail -n 3 /tmp/veil-readme-step.log | sed 's/^/    /'
done <<< "$block"
echo "README 'After the demo': every command worked"
