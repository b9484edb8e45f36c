// Command hisp is a Direct secure-messaging gateway (a HISP): one binary that
// seals and opens Direct messages, discovers and validates certificates, and
// serves SMTP, IMAP, DNS and an admin page. This file holds only the command
// table; each command group lives in its own file.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// command is one top-level subcommand. run gets the arguments after the
// command name and returns the process exit code.
type command struct {
	summary string
	run     func(env *cliEnv, args []string) int
}

// cliEnv carries what a command may touch, so tests can run commands
// in-process with their own streams.
type cliEnv struct {
	// ctx, when set, ends long-running commands (serve, sandbox) instead
	// of a signal; tests set it.
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// prog is the program name printed in commands to copy ("./hisp");
	// "" is "hisp" (progName).
	prog string
}

// commands maps subcommand names to their implementations; files add
// themselves with register in an init function.
var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

func main() {
	env := &cliEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, prog: progNameOf(os.Args[0])}
	os.Exit(run(env, os.Args[1:]))
}

// run dispatches args to a subcommand and returns the exit code: 0 success,
// 1 failure of the operation, 2 usage or setup error. "help CMD [SUB]" is
// "CMD [SUB] --help" (help.go).
func run(env *cliEnv, args []string) int {
	args = moveGlobalFlags(args)
	if len(args) > 1 && args[0] == "help" {
		if _, ok := commands[args[1]]; ok {
			return run(env, append(append([]string{}, args[1:]...), "--help"))
		}
		fmt.Fprintf(env.stderr, "hisp: unknown command %q\n", args[1])
		usage(env, env.stderr)
		return 2
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		if len(args) == 0 {
			usage(env, env.stderr)
			return 2
		}
		usage(env, env.stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "hisp: unknown command %q\n", args[0])
		usage(env, env.stderr)
		return 2
	}
	return c.run(env, args[1:])
}

// moveGlobalFlags lets --data DIR come before the command name ("hisp
// --data DIR domain list") by moving it after the command's words, where
// each command parses it.
func moveGlobalFlags(args []string) []string {
	var global []string
	for len(args) > 0 {
		switch a := args[0]; {
		case (a == "--data" || a == "-data") && len(args) > 1:
			global, args = append(global, a, args[1]), args[2:]
		case strings.HasPrefix(a, "--data=") || strings.HasPrefix(a, "-data="):
			global, args = append(global, a), args[1:]
		default:
			if len(global) == 0 {
				return args
			}
			return append(append([]string{}, args...), global...)
		}
	}
	return global
}

// subcommand dispatches the second word of a command group such as
// "hisp message seal".
// "hisp GROUP --help" prints the group's usage (help.go) and exits 0; a
// missing or unknown subcommand prints it as an error, exit 2.
func subcommand(env *cliEnv, group string, args []string, subs map[string]func(*cliEnv, []string) int) int {
	if len(args) == 0 || subs[args[0]] == nil {
		names := make([]string, 0, len(subs))
		for n := range subs {
			names = append(names, n)
		}
		sort.Strings(names)
		if helpAsked(args) {
			groupUsage(env, env.stdout, group, names)
			return 0
		}
		if len(args) > 0 {
			fmt.Fprintf(env.stderr, "hisp %s: unknown subcommand %q\n", group, args[0])
		}
		groupUsage(env, env.stderr, group, names)
		return 2
	}
	return subs[args[0]](env, args[1:])
}
