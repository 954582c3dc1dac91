#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a short time (FUZZTIME, default 3s), one at a time
# (go test -fuzz takes one target per run). The seed corpora under testdata/fuzz also run as plain
# tests in every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-3s}"
status=0
while IFS= read -r file; do
  pkg="$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/'); do
    echo "fuzz: $pkg $target ($FUZZTIME)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
      cat /tmp/fuzz-$$.log
      status=1
    fi
  done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | sort)
rm -f /tmp/fuzz-$$.log
exit $status
