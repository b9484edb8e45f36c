package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
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
	cfg, _, err := loadConfig(env, *cfgFile)
	if err != nil {
		return usageErr(env, "serve", err) // a setup error: exit 2
	}
	switch {
	case *data != "":
		cfg.Data = *data
	case env.getenv("HISP_DATA") != "":
		cfg.Data = env.getenv("HISP_DATA")
	}
	// A second server on the same data directory stops here, before it
	// opens the store or prints anything.
	unlock, err := lockDataDir(cfg.Data)
	if err != nil {
		return usageErr(env, "serve", err)
	}
	defer unlock()
	softMemoryLimit(env)
	ctx := env.ctx
	if ctx == nil {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
	}
	logger := slog.New(cfg.Log.Handler(env.stderr))
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

func softMemoryLimit(env *cliEnv) {
	if env.getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}

// loadConfig reads the configuration of hisp serve: the file named by
// --config (flagValue), else by HISP_CONFIG, else the defaults. given
// reports whether a file was read.
func loadConfig(env *cliEnv, flagValue string) (cfg config.Config, given bool, err error) {
	name := flagValue
	if name == "" && env.getenv != nil {
		name = env.getenv("HISP_CONFIG")
	}
	if name == "" {
		return config.Default(), false, nil
	}
	cfg, err = config.Load(name)
	return cfg, true, err
}
