# Mailwave — build, test and run. `make run` starts the whole platform on one
# machine; `make test` is what CI runs.

MODULES := pkg proto services/planner services/sender services/inbound-dsn \
           services/fbl-parser services/reputation-monitor tools
PKGS    := $(addsuffix /...,$(addprefix ./,$(MODULES)))
BUF     := cd proto && GOWORK=off go tool -modfile=../tools/protogen/go.mod buf

# Benchmark knobs: make bench N=20000 SIZE=10240 DKIM=off OUT=bench.json
N    ?= 20000
SIZE ?= 10240
DKIM ?= off
OUT  ?= bench-result.json

.PHONY: all build vet test test-short gen check-gen lint-proto run bench fmt clean

all: build

build:
	go build $(PKGS)

vet:
	go vet $(PKGS)

fmt:
	gofmt -l -w $(MODULES)

# Regenerate the protobuf code and lint the contract.
gen:
	$(BUF) lint
	$(BUF) generate

# Fails when the committed generated code differs from what `make gen` makes.
check-gen: gen
	@git diff --exit-code -- proto || { echo "generated code is stale: run make gen and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- proto)" || { git status --short -- proto; echo "make gen created files that are not committed"; exit 1; }

test: vet build check-gen
	@test -z "$$(gofmt -l $(MODULES))" || { gofmt -l $(MODULES); echo "gofmt would change the files above"; exit 1; }
	go test -race -shuffle=on -timeout 15m $(PKGS)

test-short:
	go test -short $(PKGS)

run:
	go run ./tools/cmd/devstack

bench:
	go run ./tools/cmd/bench -n $(N) -size $(SIZE) -dkim $(DKIM) -out $(OUT)

clean:
	rm -rf .data bin
