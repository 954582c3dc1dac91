# waqueue — build, run, test, benchmark.
GO        ?= go
PKGS      ?= ./...
DATA_DIR  ?= .data
STATICCHECK_VERSION ?= v0.7.0
TEST_TIMEOUT ?= 20m

.PHONY: all build run test test-short test-race fuzz bench lint fmt vet clean

all: build

build:
	$(GO) build -o bin/waqueue ./cmd/waqueue

## run: serve the API on localhost with the embedded SQLite store and the WhatsApp simulator.
run:
	$(GO) run ./cmd/waqueue serve --data-dir $(DATA_DIR)

## test: vet, then every test under the race detector (starts its own throwaway PostgreSQL).
test: vet
	$(GO) test -race -timeout $(TEST_TIMEOUT) $(PKGS)

## test-short: the quick loop (smaller volumes).
test-short:
	$(GO) test -short -timeout $(TEST_TIMEOUT) $(PKGS)

## bench: every benchmark against a throwaway durable PostgreSQL and SQLite; BENCH lines on stdout.
bench:
	$(GO) run ./cmd/waqueue bench all

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
