#!/usr/bin/env bash
# Runs every Go fuzz target of the module briefly (FUZZTIME, default 3000 executions: a count,
# not a duration, because a duration-bounded run can end with the fuzzing engine's own spurious
# "context deadline exceeded" on a loaded machine), one at a time (go test -fuzz takes one target
# per run). A run that fails only with that engine message, without a failing input, is repeated
# once. The seed corpora under testdata/fuzz also run as plain tests in every `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-3000x}"
status=0
while IFS= read -r file; do
  pkg="$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)\(f \*testing\.F\)' "$file" | sed -E 's/^func (Fuzz[A-Za-z0-9_]+).*/\1/'); do
    echo "fuzz: $pkg $target ($FUZZTIME)"
    ok=0
    for attempt in 1 2; do
      if go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >/tmp/fuzz-$$.log 2>&1; then
        ok=1; break
      fi
      if ! grep -q 'context deadline exceeded' /tmp/fuzz-$$.log || grep -q 'Failing input' /tmp/fuzz-$$.log; then
        break
      fi
      echo "fuzz: $target: engine deadline without a failing input; running it again"
    done
    if [ "$ok" -ne 1 ]; then
      cat /tmp/fuzz-$$.log
      status=1
    fi
  done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' . | sort)
rm -f /tmp/fuzz-$$.log
exit $status
