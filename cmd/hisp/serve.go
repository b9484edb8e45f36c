package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"

	"github.com/hisp-project/hisp/certs/devca"
	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/store"
)

func init() {
	register("serve", command{
		summary: "run the gateway: SMTP (backbone, submission), delivery, IMAP, DNS publishing, CRLs, bundles, tracking, API",
		run:     serveCmd,
	})
}

// serveCmd implements "hisp serve [--config hisp.toml] [--data DIR]".
func serveCmd(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("hisp serve", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	cfgFile := fs.String("config", "", "configuration `file` (TOML; default $HISP_CONFIG); without one, safe local defaults")
	data := fs.String("data", "", "data `DIR` (default $HISP_DATA, else the config's data, else ./hisp-data)")
	if code, ok := parseFlags(env, "serve", fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "hisp serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(env, *cfgFile)
	if err != nil {
		return usageErr(env, "serve", err) // a setup error: exit 2
	}
	storeOverrides(env, &cfg, *data)
	if env.getenv("HISP_STORE_URL") != "" {
		if err := cfg.Validate(); err != nil {
			return usageErr(env, "serve", fmt.Errorf("HISP_STORE_URL: %w", err))
		}
	}
	// A second server on the same data directory stops here, before it
	// opens the store or prints anything.
	unlock, err := lockDataDir(cfg.Data)
	if err != nil {
		return usageErr(env, "serve", err)
	}
	defer unlock()
	softMemoryLimit(env)
	stopProfile, err := cpuProfile(env)
	if err != nil {
		return usageErr(env, "serve", err)
	}
	defer stopProfile()
	ctx := env.ctx
	if ctx == nil {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	logger := slog.New(cfg.Log.Handler(env.stderr))
	warnCRLURLs(ctx, cfg, logger)
	if err := gateway.Run(ctx, cfg, logger, env.stdout); err != nil {
		return serveFailed(env, "serve", err)
	}
	return 0
}

// serveFailed reports why a server stopped: a listener address in use is a
// setup error (exit 2), anything else a failure (exit 1).
func serveFailed(env *cliEnv, cmd string, err error) int {
	if errors.Is(err, syscall.EADDRINUSE) {
		return usageErr(env, cmd, fmt.Errorf("%w: another hisp or another program listens there; stop it or change [listen] in the config", err))
	}
	return fail(env, cmd, err)
}

// defaultMemoryLimit is the Go heap's soft limit for a server when
// GOMEMLIMIT does not set one: the collector works harder near it, which
// keeps a burst of large messages from growing the process (it is soft:
// never an out-of-memory failure by itself).
const defaultMemoryLimit = 128 << 20

// defaultGCPercent is the collector's pace for a server when GOGC does not
// set one: the heap may grow to five times what is live before a
// collection instead of Go's twice. A server's live heap is small (a few
// MiB) and every message allocates its size several times over, so at
// Go's default the collector, and the page faults and madvise calls of
// memory freed and taken again, were a tenth of the CPU a submitted
// message costs; the soft memory limit still bounds the heap.
const defaultGCPercent = 400

// softMemoryLimit sets the heap's soft limit and the collector's pace
// unless GOMEMLIMIT and GOGC set them.
func softMemoryLimit(env *cliEnv) {
	if env.getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if env.getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
}

// cpuProfile starts a CPU profile of the whole run into the file
// $HISP_CPUPROFILE names, when it is set, for `go tool pprof` (the load
// figures in README were profiled so); stop ends it. A benchmarking aid,
// not a config key: it costs nothing unset.
func cpuProfile(env *cliEnv) (stop func(), err error) {
	name := env.getenv("HISP_CPUPROFILE")
	if name == "" {
		return func() {}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("HISP_CPUPROFILE: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("HISP_CPUPROFILE: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// loadConfig reads the configuration of hisp serve: the file named by
// --config (flagValue), else by HISP_CONFIG, else the defaults.
func loadConfig(env *cliEnv, flagValue string) (config.Config, error) {
	name := flagValue
	if name == "" && env.getenv != nil {
		name = env.getenv("HISP_CONFIG")
	}
	if name == "" {
		return config.Default(), nil
	}
	return config.Load(name)
}

// warnCRLURLs warns at start about certificates of the local CAs whose CRL
// distribution point is not where this server serves CRLs (public_url, else
// the admin listener): partners that check revocation refuse mail signed
// with them or sent to them (issued under another config, or before
// public_url was set).
func warnCRLURLs(ctx context.Context, cfg config.Config, logger *slog.Logger) {
	base := cfg.BaseURL()
	if base == "" {
		return // no listener serves CRLs
	}
	st, err := store.OpenExistingAt(ctx, gateway.StoreLocation(cfg))
	if err != nil {
		return // a new data directory
	}
	defer st.Close()
	list, err := st.Certificates(ctx, store.CertFilter{})
	if err != nil {
		return
	}
	cas := map[string]*x509.Certificate{}
	for _, c := range list {
		ca, ok := cas[c.Domain]
		if !ok {
			if rec, err := st.LocalCA(ctx, c.Domain); err == nil {
				ca, _ = rec.Parse()
			}
			cas[c.Domain] = ca
		}
		cert, err := c.Parse()
		if ca == nil || err != nil || cert.CheckSignatureFrom(ca) != nil {
			continue // not from the local CA: its CRL is another's business
		}
		want := devca.CRLURL(base, c.Domain)
		for _, u := range cert.CRLDistributionPoints {
			if u != want {
				logger.Warn("certificate names a CRL this server does not serve: partners checking revocation refuse it; "+
					"set public_url, or remove and issue it again (hisp cert remove ID; hisp cert issue OWNER)",
					"id", c.ID, "owner", c.Owner, "crl", u, "served", want)
			}
		}
	}
}
