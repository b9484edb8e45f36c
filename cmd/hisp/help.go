package main

// Help: "hisp help CMD [SUB]" is "hisp CMD [SUB] --help", so the two print
// the same. Asked-for help goes to standard output with exit code 0; a
// usage error prints it to standard error with exit code 2.
//
// Exit codes of every command: 0 success, 1 the operation failed, 2 usage
// or setup error (a malformed argument, an unreadable config, a data
// directory without a store, a port in use).

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// cmdDoc describes a command or subcommand for its help: the positional
// synopsis and what it does.
type cmdDoc struct {
	args, text string
}

// docs describe every command without subcommands and every subcommand,
// by name as typed ("cert issue"). TestHelp checks that each dispatched
// subcommand has one.
var docs = map[string]cmdDoc{
	"serve": {"", "Runs the gateway: SMTP backbone and submission, outbound delivery with retries, IMAP, " +
		"DNS CERT publishing, the admin page and API, CRLs of the local CAs, trust bundle refresh and delivery tracking. " +
		"The configuration comes from --config, else $HISP_CONFIG, else safe local defaults (loopback listeners); " +
		"the data directory from --data, else $HISP_DATA, else the config's data. A data directory without a store is set up."},
	"sandbox": {"", "Sets up (once) and serves a complete two-domain Direct trial on loopback: hospital.localhost " +
		"(alice) and clinic.localhost (bob), each with its own data directory under DIR, local CA, certificate, DNS server " +
		"and trust in the other; then prints how to send and read a message. DIR remembers its ports: a later run reuses " +
		"them, and a different --port-base is refused (remove DIR to start over)."},
	"bench": {"--to ADDRESS [flags]", "Load generator: concurrent SMTP submissions to a running hisp; reports " +
		"throughput, latency and the ratio to the RSA signing ceiling of this machine. Exit 1 when a message failed."},
	"discover": {"ADDRESS", "Finds the certificates of a Direct address (the local store for local domains, " +
		"else DNS CERT address- and domain-bound, then LDAP found by SRV), prints each step and each certificate " +
		"with its verdict and why. Exit 0 only when a trusted certificate was found."},
	"check": {"DOMAIN [flags]", "A conformance self-check of a Direct domain as partners see it: its MX hosts answer SMTP " +
		"with STARTTLS, its certificates are published in DNS CERT records (over UDP and TCP) and LDAP, each is valid for Direct " +
		"(binding, key usage, key size, chain to the domain's anchor, CRL reachable and current, expiry horizon), and, with the " +
		"data directory, a message sealed to the domain opens with its own key. One PASS, FAIL or SKIP line per check; " +
		"exit 0 when none failed (--strict: and none was skipped), 1 when one did, 2 on a usage error."},
	"track": {"[MESSAGE-ID]", "Without MESSAGE-ID, the latest sent messages with each recipient's state " +
		"(queued, relayed, processed, dispatched, failed); with one, that message and each recipient's history."},
	"backup": {"DIR", "Copies the data directory into the new directory DIR while hisp serve runs: " +
		"a consistent copy of the database, the master key and the other files. Serving with --data DIR restores it."},

	"policy add": {"DOMAIN (NAME RULE | --preset directtrust) [--direction in|out|both]", "Adds a trust policy rule to a local domain: " +
		"certificates of signers (in), recipients (out) or both must meet it besides chaining to an anchor, or they are refused " +
		"with the rule's name. RULE combines policy(OID), key-usage(...), ext-key-usage(...), key-type(...), key-size(>=N), " +
		"issuer(\"text\"), subject(\"text\"), san(...) with and, or, not; --preset directtrust adds DirectTrust's four rules."},
	"policy list":   {"[DOMAIN]", "Lists the trust policy rules, of one domain or all, each with what it asks in plain words."},
	"policy remove": {"DOMAIN NAME ...", "Removes trust policy rules of a local domain by name."},

	"domain add":    {"DOMAIN", "Adds a local Direct domain; on a data directory without a store, makes the store."},
	"domain list":   {"", "Lists the local domains with their counts of addresses, certificates, anchors and bundles."},
	"domain remove": {"DOMAIN", "Removes a local domain and everything of it: addresses, mailboxes, keys, anchors, bundles."},

	"address add":    {"ADDRESS --password-file FILE", "Adds a local Direct address: a mailbox and a login (SMTP submission, IMAP)."},
	"address list":   {"[DOMAIN|ADDRESS]", "Lists local addresses with their mailbox use and quota."},
	"address remove": {"ADDRESS", "Removes an address, its mailbox and its login."},
	"address passwd": {"ADDRESS --password-file FILE", "Sets the password of an address."},
	"address quota":  {"ADDRESS [SIZE]", "Shows the mailbox quota of an address and its use, or sets it: SIZE such as 500MB, none or 0 for no limit, default for the [limits] mailbox_quota."},

	"cert import": {"ADDRESS|DOMAIN (--pkcs12 FILE [--password-file FILE] | --cert CERT.pem --key KEY.pem)",
		"Imports a key and certificate for an address (address-bound: SAN rfc822Name) or a domain (organization-bound: SAN dNSName), checked against Direct's rules."},
	"cert issue": {"ADDRESS|DOMAIN", "Issues a trial certificate from the domain's local CA (made on first use). " +
		"Its CRL distribution point is public_url/crl/DOMAIN.crl, public_url from the config of --config, else $HISP_CONFIG " +
		"(default: the admin listener's address), so that it matches the server; --crl-url overrides."},
	"cert ca":     {"DOMAIN", "Prints the local CA certificate of a domain in PEM (made on first use), to add as an anchor elsewhere."},
	"cert list":   {"[ADDRESS|DOMAIN]", "Lists certificates with subject, SAN, issuer, expiry, key usage and fingerprint; keys are never printed."},
	"cert remove": {"ID", "Removes a certificate and its key; one from the domain's local CA is also revoked on its CRL."},

	"anchor add":    {"DOMAIN FILE", "Adds the trust anchors in FILE (PEM or DER) to a local domain, for inbound, outbound or both directions."},
	"anchor list":   {"[DOMAIN]", "Lists trust anchors with direction, subject, expiry, fingerprint and source (file or bundle)."},
	"anchor remove": {"DOMAIN ID|FINGERPRINT|FILE ...", "Removes trust anchors of a domain by id, fingerprint or the file they came from."},

	"bundle add":     {"DOMAIN URL|FILE", "Adds a trust bundle (PKCS#7 .p7b, DER or PEM, optionally CMS-signed) from an HTTPS URL or a file, refreshed on an interval."},
	"bundle list":    {"[DOMAIN]", "Lists trust bundles with their anchors, last refresh and last error."},
	"bundle remove":  {"DOMAIN ID", "Removes a trust bundle and the anchors that came from it."},
	"bundle refresh": {"DOMAIN ID", "Fetches a trust bundle now, as the server does on its interval: a success replaces its anchors, a failure keeps the last good ones."},
	"bundle show":    {"DOMAIN ID", "Shows a trust bundle with the anchors it holds now: subject, expiry, fingerprint."},

	"queue list":  {"", "Lists the outbound queue: each message's recipients, state, attempts and last reply."},
	"queue retry": {"ID", "Makes a queued message's waiting recipients due now."},
	"queue drop":  {"ID", "Drops a queued message; its sender gets no DSN."},

	"relay add":    {"NAME --password-file FILE --domain DOMAIN", "Adds a relay account: an EHR's login that may send for any address of its domains, optionally only from some networks or with a client certificate."},
	"relay list":   {"", "Lists relay accounts with their domains and restrictions."},
	"relay remove": {"NAME", "Removes a relay account."},

	"admin add":    {"NAME --password-file FILE", "Adds an account of the admin web page."},
	"admin list":   {"", "Lists the admin web page's accounts."},
	"admin remove": {"NAME", "Removes an admin account."},

	"token add":    {"NAME [--domain D ...] [--admin]", "Adds a bearer token of the HTTP API: limited to the tracking of some domains with --domain, every operation of the API with --admin; the token is printed once, last, on its own line."},
	"token list":   {"", "Lists API tokens (names and scopes, never the tokens)."},
	"token remove": {"NAME", "Removes an API token."},

	"webhook add":    {"DOMAIN|ADDRESS URL --secret-file FILE", "Adds a webhook: every state change of the messages sent by ADDRESS (or any address of DOMAIN) is POSTed to URL as JSON, signed with HMAC-SHA256 under the secret."},
	"webhook list":   {"", "Lists webhooks with their targets and pending deliveries."},
	"webhook remove": {"ID", "Removes a webhook."},

	"message seal": {"--sign-cert C.pem --sign-key K.pem --to R.pem [--to ...] < in > out",
		"Seals a plain RFC 5322 message into a Direct message: wrapped, signed, then encrypted to every recipient certificate."},
	"message open": {"--cert C.pem --key K.pem [--anchor A.pem ...] < in > out",
		"Opens a Direct message: decrypts, verifies the signature (against the anchors when given) and writes the inner message; the verdict goes to standard error. Exit 1 when it fails."},
}

// subDoc returns the description of a command by name; "" if none.
func subDoc(name string) string { return docs[name].text }

// progName is the name to print in commands a user may copy: as invoked
// ("./hisp" after make, a full path), or "hisp" when found on PATH (after
// make install) or unknown.
func (e *cliEnv) progName() string {
	if e.prog == "" {
		return "hisp"
	}
	return e.prog
}

// progNameOf derives progName from os.Args[0].
func progNameOf(arg0 string) string {
	if arg0 == "" || !strings.ContainsRune(arg0, filepath.Separator) || strings.Contains(arg0, "go-build") {
		return "hisp" // on PATH, or go run's temporary binary
	}
	return arg0
}

// helpAsked reports whether args ask for help (-h, -help or --help before
// any "--").
func helpAsked(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// usage prints the general usage: every command with its summary.
func usage(env *cliEnv, w io.Writer) {
	p := env.progName()
	fmt.Fprintf(w, "usage: %s COMMAND [ARGS]\n       %s help COMMAND   (or %s COMMAND --help): its subcommands and flags\n\ncommands:\n", p, p, p)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
The data directory comes from --data DIR (before or after the command), else
$HISP_DATA, else the data of the config (--config FILE, else $HISP_CONFIG),
else ./hisp-data. With a config, commands use its store: a PostgreSQL
database ([store] url, or $HISP_STORE_URL) that several nodes share, with
the master key file it names. Only domain add, sandbox and serve make a new
store; other commands refuse one that holds no hisp data.

exit codes: 0 success, 1 the operation failed, 2 usage or setup error
`)
}

// groupUsage prints the usage of a command with subcommands: each with its
// synopsis and description.
func groupUsage(env *cliEnv, w io.Writer, group string, subs []string) {
	p := env.progName()
	fmt.Fprintf(w, "usage: %s %s SUBCOMMAND [ARGS] [flags]\n\n%s\n\nsubcommands:\n", p, group, commands[group].summary)
	for _, s := range subs {
		d, ok := docs[group+" "+s]
		if !ok {
			d.text = "(no description)"
		}
		fmt.Fprintf(w, "  %s %s %s\n%s\n", p, group, strings.TrimSpace(s+" "+d.args), wrapText(d.text, 74, "      "))
	}
	if group != "message" { // the admin groups
		fmt.Fprint(w, "\nEach takes --data DIR; list subcommands take --json.")
	}
	fmt.Fprintf(w, "\n%s %s SUBCOMMAND --help: its flags.\n", p, group)
}

// flagUsage prints the usage of a command with a plain flag set: synopsis,
// description and flags.
func flagUsage(env *cliEnv, w io.Writer, name string, fs *flag.FlagSet) {
	d := docs[name]
	args := d.args
	if args == "" {
		args = "[flags]"
	}
	fmt.Fprintf(w, "usage: %s %s %s\n", env.progName(), name, args)
	if d.text != "" {
		fmt.Fprintf(w, "\n%s\n", wrapText(d.text, 76, ""))
	}
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(env.stderr)
}

// parseFlags parses the flags of a command with a plain flag set. When ok
// is false the caller returns code: 0 after help was asked for (printed on
// standard output), 2 for a malformed flag.
func parseFlags(env *cliEnv, name string, fs *flag.FlagSet, args []string) (code int, ok bool) {
	if helpAsked(args) {
		flagUsage(env, env.stdout, name, fs)
		return 0, false
	}
	fs.SetOutput(env.stderr)
	fs.Usage = func() { flagUsage(env, env.stderr, name, fs) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}

// wrapText wraps s at width columns, each line after indent.
func wrapText(s string, width int, indent string) string {
	var b strings.Builder
	line := indent
	for _, w := range strings.Fields(s) {
		if len(line) > len(indent) && len(line)+1+len(w) > width {
			b.WriteString(line + "\n")
			line = indent
		}
		if len(line) > len(indent) {
			line += " "
		}
		line += w
	}
	b.WriteString(line)
	return b.String()
}
