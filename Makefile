# waqueue — build, run, test, benchmark.
GO        ?= go
PKGS      ?= ./...
DATA_DIR  ?= .data
STATICCHECK_VERSION ?= v0.7.0
# A hang detector per test binary, not a speed limit: generous, because CI machines are shared
# (a package under -race at load 30 took 10 minutes).
TEST_TIMEOUT ?= 40m

.PHONY: all build build-static run hygiene test test-short test-race test-faults fuzz bench lint fmt vet clean

all: build

build:
	$(GO) build -o bin/waqueue ./cmd/waqueue

## ## build-static: the static binary the container image ships, built as the Dockerfile builds it.
build-static:
	./scripts/build-static.sh bin/waqueue-static

run: serve the API on localhost with the embedded SQLite store and the WhatsApp simulator.
run:
	$(GO) run ./cmd/waqueue serve --data-dir $(DATA_DIR)

## test: vet; every test under the race detector (volumes reduced with -short where the race
## detector makes them slow); then the full-volume tests without it; then a short run of every fuzz
## target. Tests start their own throwaway PostgreSQL (or use TEST_DATABASE_URL).
test: hygiene vet
	$(GO) test -race -short -timeout $(TEST_TIMEOUT) $(PKGS)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)
	./scripts/fuzz-short.sh

## test-faults: the fault tests that take minutes, behind the build tag "faults": the real binary
## killed with SIGKILL mid-broadcast and mid-clear and restarted (SQLite and PostgreSQL), PostgreSQL
## stopped under load; plus the package's other fault tests at full volume. See docs/reliability.md.
test-faults:
	$(GO) test -tags faults -count=1 -timeout $(TEST_TIMEOUT) ./cmd/waqueue/internal/faults/

## test-short: the quick loop (smaller volumes).
test-short:
	$(GO) test -short -timeout $(TEST_TIMEOUT) $(PKGS)

## bench: every benchmark against a throwaway durable PostgreSQL and SQLite; BENCH lines on stdout.
bench:
	$(GO) run ./cmd/waqueue bench all

## hygiene: nothing built goes into git (tracked binaries, files over 1 MiB outside vendor/ and fuzz corpora).
hygiene:
	./scripts/check-repo.sh

vet:
	$(GO) vet $(PKGS)

fmt:
	gofmt -w .

## lint: gofmt check, go vet and staticcheck (honnef.co/go/tools).
lint: vet
	@out=$$(gofmt -l . 2>&1); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

clean:
	rm -rf bin $(DATA_DIR)
