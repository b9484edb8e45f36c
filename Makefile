# hisp: a Direct secure-messaging gateway.
GO ?= go
FUZZTIME ?= 60s

PREFIX ?= /usr/local
CC ?= cc

.PHONY: build run install test test-deps test-postgres bench fuzz lint race cc-check

# SQLite (go-sqlite3) is C: without a C compiler Go would build a binary that
# fails at its first store access, so the build asks for cgo and says why.
build: cc-check
	CGO_ENABLED=1 $(GO) build -o hisp ./cmd/hisp

cc-check:
	@command -v $(CC) >/dev/null 2>&1 || command -v gcc >/dev/null 2>&1 || \
		{ echo "hisp needs a C compiler for SQLite (cgo): apt-get install gcc (or set CC)"; exit 2; }

# A complete two-domain Direct trial on loopback (data in ./hisp-data).
run: build
	./hisp sandbox

# Puts hisp on PATH: $(PREFIX)/bin/hisp (make install PREFIX=$$HOME/.local
# without root).
install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 hisp $(DESTDIR)$(PREFIX)/bin/hisp

test-deps:
	./scripts/test-deps.sh

# Installs what the tests need (Debian packages only when missing, and the
# pinned staticcheck), lints, then runs every test; fuzz targets replay their
# committed seed corpus.
test: test-deps
	$(MAKE) lint
	$(GO) test -count=1 ./...
	$(MAKE) test-postgres
	$(MAKE) race

# The store's tests again on PostgreSQL (a server of their own, started by
# internal/pgtest from the Debian postgresql package, stopped at the end).
test-postgres:
	HISP_TEST_STORE=postgres $(GO) test -count=1 ./store/

# The packages whose state goes between goroutines (the store's caches and
# group commits, the SMTP sessions and deliverer, the login limiter, the
# counters, the tracker), again under the race detector.
race:
	$(GO) test -race -count=1 ./store/ ./smtp/ ./internal/loginlimit/ ./internal/connlimit/ ./metrics/ ./track/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Runs each fuzz target for FUZZTIME.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

# gofmt, go vet and staticcheck (pinned in scripts/test-deps.sh, built into
# .tools/). Checks a package defers are listed in its staticcheck.conf.
STATICCHECK ?= .tools/staticcheck

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet ./...
	@test -x $(STATICCHECK) || ./scripts/test-deps.sh
	$(STATICCHECK) ./...
