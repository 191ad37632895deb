# kiln — `make help` lists the targets.
SHELL        := /bin/bash
GO           ?= go
BIN          := $(CURDIR)/bin
DATA_DIR     ?= $(CURDIR)/.work/kiln
API_LISTEN   ?= 127.0.0.1:8080
FUZZTIME     ?= 20s
# Integration tests (root, namespaces, QEMU): a run pattern narrows them.
IT_RUN       ?= .
IT_TIMEOUT   ?= 75m
# The tests drive tools that live in sbin (ip, dnsmasq, kea-dhcp4, perfdhcp,
# mkfs.ext4); a non-login shell's PATH may lack it.
export PATH  := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build kilnd, kiln and the static kiln-init into ./bin
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/kilnd ./cmd/kiln
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags=-s -o $(BIN)/kiln-init ./cmd/kiln-init

.PHONY: run
run: build ## Run kilnd on a local data dir (.work/kiln), API on 127.0.0.1:8080
	@mkdir -p $(DATA_DIR)
	@echo "kilnd: data dir $(DATA_DIR); in another shell: export KILN_SERVER=http://$(API_LISTEN) KILN_DATA_DIR=$(DATA_DIR); ./bin/kiln host list"
	$(BIN)/kilnd --data-dir $(DATA_DIR) --api-listen $(API_LISTEN)

.PHONY: lint
lint: build ## go vet, a gofmt check and systemd-analyze verify of the units
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	systemd/verify.sh $(BIN)

PREFIX  ?= /usr/local
UNITDIR ?= /etc/systemd/system

.PHONY: install
install: build ## Install binaries into PREFIX/bin and the systemd units (kilnd, nightly refresh)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR) $(DESTDIR)/etc/kiln
	install -m 0755 $(BIN)/kilnd $(BIN)/kiln $(BIN)/kiln-init $(DESTDIR)$(PREFIX)/bin/
	sed 's#/usr/local/bin/#$(PREFIX)/bin/#g' systemd/kilnd.service > $(DESTDIR)$(UNITDIR)/kilnd.service
	sed 's#/usr/local/bin/#$(PREFIX)/bin/#g' systemd/kiln-refresh.service > $(DESTDIR)$(UNITDIR)/kiln-refresh.service
	install -m 0644 systemd/kiln-refresh.timer $(DESTDIR)$(UNITDIR)/
	test -e $(DESTDIR)/etc/kiln/kilnd.env || install -m 0644 systemd/kilnd.env $(DESTDIR)/etc/kiln/
	test -e $(DESTDIR)/etc/kiln/refresh.env || install -m 0644 systemd/refresh.env $(DESTDIR)/etc/kiln/
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now kilnd kiln-refresh.timer"

.PHONY: deps
deps: ## Install the Debian packages the tests need (only what is missing)
	integration/deps.sh test

.PHONY: test
test: deps lint ## Install what the tests need, then run every test: unit, fuzz (bounded), integration
	KILN_REQUIRE_TOOLS=1 $(GO) test -race -timeout 20m ./...
	$(MAKE) --no-print-directory -C images check
	$(MAKE) --no-print-directory fuzz
	$(MAKE) --no-print-directory integration

.PHONY: unit
unit: ## Unit tests only (no root, no QEMU)
	$(GO) test -timeout 20m ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 20s)
	$(GO) test -run '^$$' -fuzz '^FuzzHandle$$' -fuzztime $(FUZZTIME) ./pkg/dhcp
	$(GO) test -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) ./pkg/tftp
	$(GO) test -run '^$$' -fuzz '^FuzzOpen$$' -fuzztime $(FUZZTIME) ./pkg/squashfs

.PHONY: integration
integration: build 
	@if [ "$$(id -u)" != 0 ]; then echo "integration tests need root (network namespaces, mounts, QEMU)"; exit 1; fi
	@mkdir -p .work
	KILN_REQUIRE_TOOLS=1 KILN_BIN=$(BIN) $(GO) test -tags integration -count=1 -timeout $(IT_TIMEOUT) -run '$(IT_RUN)' -v ./integration 2>&1 | \
		tee $(CURDIR)/.work/integration.log | grep --line-buffered -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|_test.go:' ; exit $${PIPESTATUS[0]}

LAB_HOSTS ?= 3

.PHONY: lab
lab: ## A virtual rack: kilnd + LAB_HOSTS QEMU hosts with ipmi_sim BMCs, reimaged and reverted (root)
	@if [ "$$(id -u)" != 0 ]; then echo "make lab needs root (network namespaces, taps, QEMU)"; exit 1; fi
	integration/deps.sh lab
	$(MAKE) --no-print-directory build images
	$(GO) run ./integration/kiln-lab up -bin $(BIN) -dir $(CURDIR)/lab -hosts $(LAB_HOSTS)

.PHONY: lab-down
lab-down: ## Remove every namespace, process and file of the lab
	@if [ "$$(id -u)" != 0 ]; then echo "make lab-down needs root"; exit 1; fi
	$(GO) run ./integration/kiln-lab down -dir $(CURDIR)/lab

DEBIAN_VERSION ?= test

.PHONY: test-debian
test-debian: build ## Build the Debian 12 image and netboot it to multi-user in QEMU (slow, root)
	integration/deps.sh test debian
	$(MAKE) -C images debian VERSION=$(DEBIAN_VERSION)
	KILN_DEBIAN_IMAGE=$(CURDIR)/images/build/debian-12-$(DEBIAN_VERSION).squashfs $(MAKE) --no-print-directory integration IT_RUN=TestDebianImage

.PHONY: bench
bench: build images ## kiln against dnsmasq, Kea, nginx, tftpd-hpa side by side (root; not part of make test)
	@if [ "$$(id -u)" != 0 ]; then echo "make bench needs root (network namespaces)"; exit 1; fi
	integration/deps.sh bench
	@mkdir -p .work
	$(GO) run ./integration/bench/kiln-bench -bin $(BIN) -out .work/bench.md $(BENCH_FLAGS)

.PHONY: images
images: ## Build the test image (two versions) under images/build
	$(MAKE) -C images testimage VERSION=1
	$(MAKE) -C images testimage VERSION=2

.PHONY: clean
clean: ## Remove build outputs (not the image cache)
	rm -rf $(BIN) .work
	$(MAKE) -C images clean
