// Package packaging holds the tests of what operators run rather than what developers run: the
// static binary the container image ships (built by scripts/build-static.sh, as the Dockerfile
// builds it) run in an empty root, the Dockerfile's promises, and docker-compose.yml checked
// against the configuration the binary accepts. It has no code of its own.
package packaging
