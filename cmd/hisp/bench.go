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
//	hisp bench [--concurrency N] [--messages M] [--size BYTES] --user U --password-file F --to R [--addr host:port]
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
	fs.IntVar(&o.ServerPID, "server-pid", 0, "process id of hisp serve, to report its peak RSS")
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
	r, err := loadgen.Run(ctx, o)
	if err != nil {
		return fail(env, "bench", err)
	}
	fmt.Fprint(env.stdout, r.String())
	if r.Failed > 0 {
		return 1
	}
	return 0
}
