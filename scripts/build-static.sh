#!/bin/sh
# Builds the static waqueue binary exactly as the container image does: the Dockerfile runs this
# script, and so does the packaging test (cmd/waqueue/internal/packaging), which then runs the
# binary in an empty root. Usage: scripts/build-static.sh OUTPUT
#
# CGO_ENABLED=0: a static binary that needs no libc (the image has none); SQLite is the pure-Go
# modernc.org/sqlite. -trimpath: no build paths in the binary. -buildvcs=auto: the VCS revision
# is stamped when the build context holds the repository's .git (see `waqueue version`).
# -ldflags '-s -w': no symbol table or DWARF (the build info stays).
set -eu
out=${1:?usage: scripts/build-static.sh OUTPUT}
cd "$(dirname "$0")/.."
CGO_ENABLED=0 exec go build -trimpath -buildvcs=auto -ldflags='-s -w' -o "$out" ./cmd/waqueue
