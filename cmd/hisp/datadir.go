package main

// Shared plumbing of the admin commands (domain, cert, anchor, bundle): the
// data directory, flag parsing that lets flags and positional arguments
// interleave, errors, tables and JSON output.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/gateway"
	"github.com/hisp-project/hisp/ops"
	"github.com/hisp-project/hisp/store"
)

// defaultDataDir is the data directory when neither --data nor HISP_DATA
// names one.
const defaultDataDir = "./hisp-data"

// dataDir resolves the data directory: the --data flag, else the HISP_DATA
// environment variable, else ./hisp-data.
func dataDir(env *cliEnv, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if env.getenv != nil {
		if d := env.getenv("HISP_DATA"); d != "" {
			return d
		}
	}
	return defaultDataDir
}

// adminCmd is one admin subcommand's flags: --data for all, --json for the
// list commands, plus its own.
type adminCmd struct {
	env  *cliEnv
	name string // "domain add"
	args string // positional synopsis: "DOMAIN"
	fs   *flag.FlagSet
	data string
	// config is --config: the file of hisp serve, whose store (data,
	// [store] url and master_key_file) the command uses.
	config string
	json   bool
	// creates is set for the one admin command that may make a new store
	// (domain add); every other refuses a directory without one.
	creates bool
}

// newAdminCmd makes the flag set of "hisp <name>"; list commands get --json.
func newAdminCmd(env *cliEnv, name, args string, list bool) *adminCmd {
	c := &adminCmd{env: env, name: name, args: args}
	c.fs = flag.NewFlagSet("hisp "+name, flag.ContinueOnError)
	c.fs.SetOutput(env.stderr)
	c.fs.StringVar(&c.data, "data", "", "data `DIR` (default $HISP_DATA, else the config's data, else "+defaultDataDir+")")
	c.fs.StringVar(&c.config, "config", "", "configuration `file` of hisp serve (default $HISP_CONFIG): its store ([store] url, master_key_file, data) is the one used")
	if list {
		c.fs.BoolVar(&c.json, "json", false, "print JSON instead of a table")
	}
	c.fs.Usage = func() { c.usage(env.stderr) }
	return c
}

// usage prints the subcommand's synopsis, what it does and its flags.
func (c *adminCmd) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s %s %s [flags]\n", c.env.progName(), c.name, c.args)
	if d := subDoc(c.name); d != "" {
		fmt.Fprintf(w, "\n%s\n", wrapText(d, 76, ""))
	}
	fmt.Fprintln(w, "\nflags:")
	c.fs.SetOutput(w)
	c.fs.PrintDefaults()
	c.fs.SetOutput(c.env.stderr)
}

// parse parses args, flags anywhere among the positional arguments (Go's
// flag package alone stops at the first positional), and checks the count
// of positional arguments (max < 0: no limit). When ok is false the caller
// returns code: 0 for -h, else 2 with the usage printed.
func (c *adminCmd) parse(args []string, min, max int) (pos []string, code int, ok bool) {
	flags, pos := splitArgs(c.fs, args)
	if helpAsked(flags) {
		c.usage(c.env.stdout) // asked for: on standard output, exit 0
		return nil, 0, false
	}
	if err := c.fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, false
		}
		return nil, 2, false // the flag package printed the error and usage
	}
	if len(pos) < min || max >= 0 && len(pos) > max {
		fmt.Fprintf(c.env.stderr, "hisp %s: want %s\n", c.name, c.args)
		c.fs.Usage()
		return nil, 2, false
	}
	return pos, 0, true
}

// splitArgs separates flags (with their values) from positional arguments.
// A flag that takes a value takes the next argument unless written
// -flag=value; "--" ends the flags; unknown flags are left for fs.Parse to
// report.
func splitArgs(fs *flag.FlagSet, args []string) (flags, pos []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	return flags, pos
}

// adminGroup dispatches "hisp GROUP SUB ..." like subcommand, but also when
// --data DIR (or --json) comes before SUB.
func adminGroup(env *cliEnv, group string, args []string, subs map[string]func(*cliEnv, []string) int) int {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" || len(a) < 2 || a[0] != '-' {
			if i > 0 && a != "--" {
				rest := append([]string{a}, args[:i]...)
				args = append(rest, args[i+1:]...)
			}
			break
		}
		if name := strings.TrimLeft(a, "-"); name == "data" || name == "config" {
			i++ // its value
		}
	}
	return subcommand(env, group, args, subs)
}

// openStore opens the store of the command. Only a command that creates
// stores (c.creates) makes a new one; for the others a data directory (or
// PostgreSQL database) without a store is an error wrapping
// store.ErrNoStore, and nothing is created.
func (c *adminCmd) openStore(ctx context.Context) (*store.Store, error) {
	loc, err := c.location()
	if err != nil {
		return nil, err
	}
	if c.creates {
		return store.OpenAt(ctx, loc)
	}
	st, err := store.OpenExistingAt(ctx, loc)
	if errors.Is(err, store.ErrNoStore) {
		return nil, noStoreError{dir: loc.String(), prog: c.env.progName()}
	}
	return st, err
}

// location is where the command's store is: the config's (--config, else
// $HISP_CONFIG) when there is one, the data directory from --data, else
// $HISP_DATA, else the config's data; $HISP_STORE_URL over the config's
// [store] url. A config that does not load is a setup error.
func (c *adminCmd) location() (store.Location, error) {
	cfg, err := loadConfig(c.env, c.config)
	if err != nil {
		return store.Location{}, setupError{err}
	}
	storeOverrides(c.env, &cfg, c.data)
	return gateway.StoreLocation(cfg), nil
}

// storeOverrides sets over a config's store what the command line and the
// environment say, for hisp serve and the admin commands alike: the data
// directory from --data, else $HISP_DATA; the PostgreSQL URL from
// $HISP_STORE_URL. Without a config file the config's data directory is
// the default, ./hisp-data.
func storeOverrides(env *cliEnv, cfg *config.Config, dataFlag string) {
	getenv := env.getenv
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	switch {
	case dataFlag != "":
		cfg.Data = dataFlag
	case getenv("HISP_DATA") != "":
		cfg.Data = getenv("HISP_DATA")
	}
	if u := getenv("HISP_STORE_URL"); u != "" {
		cfg.Store.URL = u
	}
}

// setupError is an error of the command's setup (a config that does not
// load): exit code 2.
type setupError struct{ err error }

func (e setupError) Error() string { return e.err.Error() }
func (e setupError) Unwrap() error { return e.err }

// noStoreError is a data directory that holds no store, with what to do.
type noStoreError struct{ dir, prog string }

func (e noStoreError) Error() string {
	return fmt.Sprintf("no hisp data in %s: name the data directory with --data DIR or HISP_DATA (default %s), "+
		"or the store of hisp serve's config with --config FILE, or make one with %s domain add DOMAIN", e.dir, defaultDataDir, e.prog)
}

func (e noStoreError) Unwrap() error { return store.ErrNoStore }

// fail reports an error and returns its exit code: 2 for a setup error (no
// store in the data directory), else 1.
func (c *adminCmd) fail(err error) int {
	fmt.Fprintf(c.env.stderr, "hisp: %v\n", err)
	var setup setupError
	if errors.Is(err, store.ErrNoStore) || errors.As(err, &setup) {
		return 2
	}
	return 1
}

// usageError reports a malformed argument and returns exit code 2.
func (c *adminCmd) usageError(format string, a ...any) int {
	fmt.Fprintf(c.env.stderr, "hisp %s: %s\n", c.name, fmt.Sprintf(format, a...))
	return 2
}

// warn prints a warning that does not fail the command.
func (c *adminCmd) warn(format string, a ...any) {
	fmt.Fprintf(c.env.stderr, "hisp: warning: %s\n", fmt.Sprintf(format, a...))
}

// actor is who runs the command, as the audit log names them.
func (c *adminCmd) actor() string {
	actor := "cli"
	if u := c.env.getenv("USER"); u != "" {
		actor += ":" + u
	} else if u, err := user.Current(); err == nil {
		actor += ":" + u.Username
	}
	return actor
}

// withOps is withStore with the admin operations (package ops) of the
// command's user: the rules and the audit record are theirs.
func (c *adminCmd) withOps(f func(ctx context.Context, o *ops.Ops) int) int {
	return c.withStore(func(ctx context.Context, st *store.Store) int {
		o := ops.New(st, c.actor())
		o.Prog = c.env.progName()
		return f(ctx, o)
	})
}

// opFail reports an error of an operation: a malformed request is a usage
// error (exit 2), anything else fail's.
func (c *adminCmd) opFail(err error) int {
	if errors.Is(err, ops.ErrInvalid) {
		return c.usageError("%v", err)
	}
	return c.fail(err)
}

// warnAll prints an operation's warnings.
func (c *adminCmd) warnAll(warnings []string) {
	for _, w := range warnings {
		c.warn("%s", w)
	}
}

// requireDomain checks that a local domain exists, with an error that says
// how to add it.
func (c *adminCmd) requireDomain(ctx context.Context, st *store.Store, domain string) error {
	o := ops.New(st, c.actor())
	o.Prog = c.env.progName()
	_, err := o.RequireDomain(ctx, domain)
	return err
}

// audit records an admin action that is not an operation of package ops
// (a backup); a failure to record is only logged.
func (c *adminCmd) audit(ctx context.Context, st *store.Store, action, subject, reason string) {
	ops.New(st, c.actor()).Record(ctx, action, subject, reason)
}

// normalizeDomainArg normalizes a DOMAIN argument.
func normalizeDomainArg(c *adminCmd, arg string) (string, int, bool) {
	d, err := store.NormalizeDomain(arg)
	if err != nil {
		return "", c.usageError("%v", err), false
	}
	return d, 0, true
}

// parseID parses a numeric row id argument.
func parseID(c *adminCmd, what, arg string) (int64, int, bool) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return 0, c.usageError("invalid %s id %q: want a number as listed", what, arg), false
	}
	return id, 0, true
}

// parseOptionalDomain reads the [DOMAIN] argument of a list command: ""
// for all domains.
func parseOptionalDomain(c *adminCmd, args []string) (string, int, bool) {
	pos, code, ok := c.parse(args, 0, 1)
	if !ok || len(pos) == 0 {
		return "", code, ok
	}
	return normalizeDomainArg(c, pos[0])
}

// parseDomainID reads the DOMAIN ID arguments of a command on one entry
// (a bundle, an anchor) of a local domain.
func parseDomainID(c *adminCmd, what string, args []string) (string, int64, int, bool) {
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return "", 0, code, false
	}
	domain, code, ok := normalizeDomainArg(c, pos[0])
	if !ok {
		return "", 0, code, false
	}
	id, code, ok := parseID(c, what, pos[1])
	return domain, id, code, ok
}

// adminTable prints rows as aligned columns under a header.
func adminTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		for i, f := range r {
			if f == "" {
				r[i] = "-"
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// list prints a list command's result: v as JSON with --json, else the
// table; it returns the exit code.
func (c *adminCmd) list(v any, header []string, rows [][]string) int {
	var err error
	if c.json {
		err = adminJSON(c.env.stdout, v)
	} else {
		err = adminTable(c.env.stdout, header, rows)
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// adminJSON prints v as indented JSON.
func adminJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// day formats a time as a date, "-" for the zero time.
func day(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02")
}

// instant formats a time to the second, "-" for the zero time.
func instant(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// withStore opens the command's data directory, runs f with it and closes
// it; f returns the exit code.
func (c *adminCmd) withStore(f func(ctx context.Context, st *store.Store) int) int {
	ctx := context.Background()
	st, err := c.openStore(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer st.Close()
	return f(ctx, st)
}
