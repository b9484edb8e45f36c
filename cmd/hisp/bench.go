package main

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"syscall"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/loadgen"
)

func init() {
	register("bench", command{
		summary: "load generator: concurrent SMTP submissions, throughput and latency against the RSA signing ceiling",
		run:     benchCmd,
	})
}

// benchCmd implements
//
//	hisp bench [--concurrency N] [--messages M] [--size BYTES] [--reuse=false|--compare-reuse] [--server-pid P [--db-pid Q]] --user U --password-file F --to R [--addr host:port]
func benchCmd(env *cliEnv, args []string) int {
	fs := flag.NewFlagSet("hisp bench", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	var o loadgen.Options
	var to multiFlag
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:5587", "submission `host:port`")
	fs.StringVar(&o.User, "user", "", "login (the sender's address)")
	pwFile := fs.String("password-file", "", "`FILE` whose first line is the password")
	fs.StringVar(&o.From, "from", "", "sender address (default --user)")
	fs.Var(&to, "to", "recipient address (repeatable)")
	fs.IntVar(&o.Concurrency, "concurrency", 16, "concurrent SMTP clients")
	fs.IntVar(&o.Messages, "messages", 1000, "messages to send in all")
	fs.IntVar(&o.Size, "size", 10240, "message size in bytes")
	fs.StringVar(&o.StartTLS, "starttls", "auto", "auto, require or off")
	fs.BoolVar(&o.Reuse, "reuse", true, "send all of a client's messages over one connection")
	fs.BoolVar(&o.NoResume, "no-resume", false, "a full TLS handshake on every connection (no session resumption)")
	compare := fs.Bool("compare-reuse", false, "run twice, reused connections then a connection per message, and report the ratios")
	fs.IntVar(&o.ServerPID, "server-pid", 0, "process id of hisp serve, to report its CPU per message and peak RSS")
	fs.IntVar(&o.DBPID, "db-pid", 0, "process id of the PostgreSQL server (postmaster) of a node on a PostgreSQL store, to report its CPU per message (its backends included)")
	if code, ok := parseFlags(env, "bench", fs, args); !ok {
		return code
	}
	if len(to) == 0 || fs.NArg() > 0 {
		fmt.Fprintln(env.stderr, "hisp bench: need --to ADDRESS (and no positional arguments)")
		return 2
	}
	o.To = to
	if *pwFile != "" {
		pw, err := certfile.ReadPasswordFile(*pwFile)
		if err != nil {
			return fail(env, "bench", err)
		}
		o.Password = pw
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *compare {
		o.Reuse = true
	}
	r, err := loadgen.Run(ctx, o)
	if err != nil {
		return fail(env, "bench", err)
	}
	fmt.Fprint(env.stdout, r.String())
	failed := r.Failed
	if *compare {
		// The same load with a connection, STARTTLS and AUTH per message,
		// against the ceilings just measured.
		o.Reuse, o.NoCeiling = false, true
		r2, err := loadgen.Run(ctx, o)
		if err != nil {
			return fail(env, "bench", err)
		}
		r2.RSASignPerSecond, r2.RSASignCPU, r2.SealPerSecond = r.RSASignPerSecond, r.RSASignCPU, r.SealPerSecond
		if r.RSASignPerSecond > 0 {
			r2.Ratio = r2.PerSecond / r.RSASignPerSecond
		}
		if r.SealPerSecond > 0 {
			r2.SealRatio = r2.PerSecond / r.SealPerSecond
		}
		fmt.Fprint(env.stdout, "\nA connection per message:\n", r2.String())
		fmt.Fprintf(env.stdout, "\nper-connection / reused: %.2f of the throughput", r2.PerSecond/r.PerSecond)
		if r.ServerCPUPerMessage > 0 && r2.ServerCPUPerMessage > 0 {
			fmt.Fprintf(env.stdout, ", %.2f× the server CPU per message", float64(r2.ServerCPUPerMessage)/float64(r.ServerCPUPerMessage))
		}
		fmt.Fprintln(env.stdout)
		failed += r2.Failed
	}
	if failed > 0 {
		return 1
	}
	return 0
}
