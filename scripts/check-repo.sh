#!/usr/bin/env bash
# Repository hygiene, run first by `make test` (and so by CI): nothing built goes into git.
# Fails on
#   - a tracked compiled executable or object (ELF, Mach-O, PE, Go archive), whatever its name;
#   - a tracked file with the executable bit that is not a script starting with "#!";
#   - a tracked file over 1 MiB, except fuzz corpora (testdata/fuzz/) and pinned front-end bundles
#     vendored under a vendor/ folder that also holds their licence (LICENSE*, LICENCE* or COPYING*).
set -euo pipefail
cd "$(dirname "$0")/.."
limit=$((1024 * 1024))
status=0
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue
  magic=$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')
  case "$magic" in
    7f454c46|cffaedfe|cefaedfe|feedfacf|feedface|cafebabe|4d5a*|213c6172)
      echo "check-repo: $f is a compiled binary (magic $magic); build outputs do not belong in git" >&2
      status=1; continue ;;
  esac
  mode=$(git ls-files -s -- "$f" | awk '{print $1}')
  if [ "$mode" = "100755" ] && [ "$(head -c 2 "$f")" != "#!" ]; then
    echo "check-repo: $f is executable but not a script" >&2
    status=1
  fi
  size=$(stat -c %s "$f")
  if [ "$size" -gt "$limit" ]; then
    case "$f" in
      */testdata/fuzz/*) continue ;;
    esac
    dir=$(dirname "$f")
    allowed=0
    while [ "$dir" != "." ] && [ "$dir" != "/" ]; do
      if [ "$(basename "$dir")" = "vendor" ]; then
        if ls "$dir"/LICENSE* "$dir"/LICENCE* "$dir"/COPYING* >/dev/null 2>&1 ||
           find "$dir" -maxdepth 2 \( -iname 'LICENSE*' -o -iname 'LICENCE*' -o -iname 'COPYING*' \) | grep -q .; then
          allowed=1
        fi
        break
      fi
      dir=$(dirname "$dir")
    done
    if [ "$allowed" -ne 1 ]; then
      echo "check-repo: $f is $size bytes (limit $limit); generated or built files do not belong in git" >&2
      status=1
    fi
  fi
done < <(git ls-files -z)
if [ "$status" -eq 0 ]; then echo "check-repo: ok ($(git ls-files | wc -l) tracked files)"; fi
exit $status
