package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hisp-project/hisp/certs/certfile"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
	"github.com/hisp-project/hisp/trust"
)

func init() {
	register("message", command{
		summary: "seal a plain message into a Direct message, or open one (files, for admins and support)",
		run: func(env *cliEnv, args []string) int {
			return subcommand(env, "message", args, map[string]func(*cliEnv, []string) int{
				"seal": messageSeal,
				"open": messageOpen,
			})
		},
	})
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// identityFlags are the ways a command is given a certificate and its key.
type identityFlags struct {
	cert, key, pkcs12, passwordFile string
}

func (f *identityFlags) load(certFlag, keyFlag string) (*certfile.Identity, error) {
	switch {
	case f.pkcs12 != "":
		if f.cert != "" || f.key != "" {
			return nil, fmt.Errorf("give either --pkcs12 or --%s and --%s, not both", certFlag, keyFlag)
		}
		return certfile.LoadPKCS12(f.pkcs12, f.passwordFile)
	case f.cert != "" && f.key != "":
		return certfile.LoadPEM(f.cert, f.key)
	default:
		return nil, fmt.Errorf("need --%s and --%s, or --pkcs12 and --password-file", certFlag, keyFlag)
	}
}

func newFlagSet(env *cliEnv, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

func messageSeal(env *cliEnv, args []string) int {
	fs := newFlagSet(env, "hisp message seal")
	name := "message seal"
	var id identityFlags
	var to multiFlag
	fs.StringVar(&id.cert, "sign-cert", "", "signing certificate (PEM; more certificates after the first are its chain)")
	fs.StringVar(&id.key, "sign-key", "", "signing private key (PEM: PKCS#1, PKCS#8 or EC)")
	fs.StringVar(&id.pkcs12, "pkcs12", "", "signing certificate and key as PKCS#12, instead of --sign-cert/--sign-key")
	fs.StringVar(&id.passwordFile, "password-file", "", "file whose first line is the PKCS#12 password")
	fs.Var(&to, "to", "recipient certificate (PEM or DER; repeatable; every certificate in a file is a recipient)")
	cipherName := fs.String("cipher", "aes128-cbc", "content encryption: aes128-cbc, aes256-cbc, aes128-gcm, aes256-gcm")
	oaep := fs.String("oaep", "sha256", "RSA key transport: sha256 (OAEP, SHA-256), sha1 (OAEP, SHA-1) or off (PKCS#1 v1.5)")
	digestName := fs.String("digest", "sha256", "signature digest: sha256, sha384, sha512")
	ski := fs.Bool("keyid", false, "identify recipients by subject key identifier instead of issuer and serial")
	subject := fs.String("subject", smime.DefaultSubject, "generic Subject of the outer message")
	if code, ok := parseFlags(env, name, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(env.stderr, "hisp message seal: unexpected argument %q (the message is read from standard input)\n", fs.Arg(0))
		return 2
	}
	if len(to) == 0 {
		fmt.Fprintln(env.stderr, "hisp message seal: need at least one --to recipient certificate")
		return 2
	}
	cipher, err := cms.ParseContentCipher(*cipherName)
	if err != nil {
		return usageErr(env, "message seal", err)
	}
	digest, err := smime.ParseDigest(*digestName)
	if err != nil {
		return usageErr(env, "message seal", err)
	}
	kt, err := smime.ParseOAEP(*oaep)
	if err != nil {
		return usageErr(env, "message seal", err)
	}
	signer, err := id.load("sign-cert", "sign-key")
	if err != nil {
		return fail(env, "message seal", fmt.Errorf("signer: %w", err))
	}
	var recips []cms.Recipient
	for _, f := range to {
		certs, err := certfile.LoadCertificates(f)
		if err != nil {
			return fail(env, "message seal", fmt.Errorf("recipient: %w", err))
		}
		for _, c := range certs {
			recips = append(recips, cms.Recipient{Cert: c, KeyTransport: kt, UseSKI: *ski})
		}
	}
	msg, err := io.ReadAll(env.stdin)
	if err != nil {
		return fail(env, "message seal", fmt.Errorf("read message: %w", err))
	}
	out, err := smime.Seal(msg, smime.Signer{Cert: signer.Cert, Key: signer.Key, Chain: signer.Chain}, recips,
		smime.SealOptions{Digest: digest, Cipher: cipher, Subject: *subject})
	if err != nil {
		return fail(env, "message seal", err)
	}
	if _, err := env.stdout.Write(out); err != nil {
		return fail(env, "message seal", err)
	}
	return 0
}

func messageOpen(env *cliEnv, args []string) int {
	fs := newFlagSet(env, "hisp message open")
	name := "message open"
	var id identityFlags
	var anchors multiFlag
	fs.StringVar(&id.cert, "cert", "", "recipient certificate (PEM)")
	fs.StringVar(&id.key, "key", "", "recipient private key (PEM: PKCS#1, PKCS#8 or EC)")
	fs.StringVar(&id.pkcs12, "pkcs12", "", "recipient certificate and key as PKCS#12, instead of --cert/--key")
	fs.StringVar(&id.passwordFile, "password-file", "", "file whose first line is the PKCS#12 password")
	fs.Var(&anchors, "anchor", "trust anchor (PEM or DER; repeatable): the signer must chain to one")
	noFetch := fs.Bool("no-fetch", false, "do not fetch missing intermediates from the signer's AIA caIssuers URL (stay offline)")
	if code, ok := parseFlags(env, name, fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(env.stderr, "hisp message open: unexpected argument %q (the message is read from standard input)\n", fs.Arg(0))
		return 2
	}
	me, err := id.load("cert", "key")
	if err != nil {
		return fail(env, "message open", fmt.Errorf("recipient: %w", err))
	}
	var roots []*x509.Certificate
	for _, f := range anchors {
		certs, err := certfile.LoadCertificates(f)
		if err != nil {
			return fail(env, "message open", fmt.Errorf("anchor: %w", err))
		}
		roots = append(roots, certs...)
	}
	msg, err := io.ReadAll(env.stdin)
	if err != nil {
		return fail(env, "message open", fmt.Errorf("read message: %w", err))
	}
	opened, err := smime.Open(msg, []cms.KeyPair{{Cert: me.Cert, Key: me.Key}})
	if err != nil {
		return fail(env, "message open", err)
	}
	// Intermediates the signature lacks come from the signer's AIA
	// caIssuers URL, as the gateway fetches them (TV-03).
	chk := chainCheck{anchors: roots, offline: *noFetch, v: trust.NewValidator(trust.Options{})}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	verdict, err := describeOpened(ctx, opened, chk)
	if err != nil {
		return fail(env, "message open", fmt.Errorf("%s: %w", verdict, err))
	}
	if _, err := env.stdout.Write(opened.Message); err != nil {
		return fail(env, "message open", err)
	}
	fmt.Fprintln(env.stderr, verdict)
	return 0
}

// chainCheck is what describeOpened checks signers against: anchors (none:
// no check), and whether missing intermediates may be fetched.
type chainCheck struct {
	anchors []*x509.Certificate
	offline bool
	v       *trust.Validator
}

// describeOpened returns the one-line verdict on an opened message, and an
// error when anchors were given and no valid signer chains to one.
func describeOpened(ctx context.Context, o *smime.Opened, chk chainCheck) (string, error) {
	var parts []string
	var chainErr error
	chained := false
	for _, s := range o.Signers {
		if s.Err != nil {
			parts = append(parts, fmt.Sprintf("invalid signer %s (%v)", certName(s.Cert), s.Err))
			continue
		}
		p := fmt.Sprintf("signed by %s with %s", certName(s.Cert), s.Algorithm)
		if len(chk.anchors) > 0 {
			chains, err := chk.v.Chains(ctx, s.Cert, o.Certificates, chk.anchors, chk.offline)
			if err != nil {
				p += ", NOT chained to a given anchor: " + err.Error()
				chainErr = errors.New("signer does not chain to any given anchor")
			} else {
				chained = true
				top := chains[0][len(chains[0])-1]
				p += ", chains to anchor " + top.Subject.String()
			}
		}
		parts = append(parts, p)
	}
	wrapped := "wrapped"
	if !o.Wrapped {
		wrapped = "unwrapped"
	}
	parts = append(parts, fmt.Sprintf("encrypted with %s, key transport %s to %s, %s",
		o.Cipher, o.KeyTransport, certName(o.Recipient), wrapped))
	line := strings.Join(parts, "; ")
	if len(chk.anchors) > 0 && !chained {
		return line, chainErr
	}
	return line, nil
}

// certName names a certificate for people: its subject and SAN addresses.
func certName(c *x509.Certificate) string {
	if c == nil {
		return "(unknown certificate)"
	}
	names := append(append([]string{}, c.EmailAddresses...), c.DNSNames...)
	if len(names) == 0 {
		return c.Subject.String()
	}
	return fmt.Sprintf("%s <%s>", c.Subject.String(), strings.Join(names, ","))
}

func fail(env *cliEnv, cmd string, err error) int {
	fmt.Fprintf(env.stderr, "hisp %s: %v\n", cmd, err)
	return 1
}

func usageErr(env *cliEnv, cmd string, err error) int {
	fmt.Fprintf(env.stderr, "hisp %s: %v\n", cmd, err)
	return 2
}
