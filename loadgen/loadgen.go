// Package loadgen is hisp's load generator: concurrent SMTP clients that
// submit messages and measure throughput and latency, beside the machine's
// RSA-2048 signing rate — the ceiling a HISP that signs every message
// cannot exceed — measured first in the same run.
package loadgen

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/hisp-project/hisp/smime"
	"github.com/hisp-project/hisp/smime/cms"
)

// Options configure a run.
type Options struct {
	Addr        string   // submission host:port
	User        string   // AUTH PLAIN user; "" = no AUTH
	Password    string   //
	From        string   // MAIL FROM and From header; default User
	To          []string // recipients (To header and RCPT)
	Concurrency int      // clients at once
	Messages    int      // total messages
	Size        int      // approximate message size in bytes
	// StartTLS: "auto" (when the server offers it), "require" or "off".
	StartTLS string
	// Reuse sends every message of a client over one connection (RSET
	// between); otherwise each message gets its own connection.
	Reuse bool
	// NoResume makes every STARTTLS a full handshake; by default the
	// clients keep TLS sessions and resume them (session tickets), as
	// mail clients and TLS libraries do.
	NoResume bool
	// ServerPID, when set, is read for its peak resident set (VmHWM).
	ServerPID int
	// DBPID, when set, is the database server's main process (PostgreSQL's
	// postmaster): its CPU time and its children's (the backends, exited
	// ones included once reaped) over the submissions is reported per
	// message, the part of a message's cost that a PostgreSQL store moves
	// out of hisp's process.
	DBPID int
	// CeilingTime is how long to measure the RSA signing rate; default 2 s.
	CeilingTime time.Duration
	// NoCeiling skips the RSA measurement: RSASignPerSecond and Ratio stay
	// 0 (for tests that only submit).
	NoCeiling bool
	// OnResult, when set, is called after each message (from the client
	// goroutines, concurrently) with the message's Message-ID, angle
	// brackets included, and its outcome: nil when the server answered
	// 250 to DATA, an *smtp.SMTPError when it answered with a refusal, any
	// other error when no reply came (connection refused or broken: the
	// message may or may not have been taken).
	OnResult func(messageID string, err error)
}

// Report is the outcome of a run.
type Report struct {
	Messages, Failed int
	FirstError       string
	Elapsed          time.Duration
	PerSecond        float64
	P50, P99, Max    time.Duration // per message: the transaction, and the connection setup too without Reuse
	// Connections opened (TCP, STARTTLS, AUTH) and how long that took.
	Connections            int
	ConnectP50, ConnectMax time.Duration
	Resumed                int     // connections whose TLS session was resumed
	RSASignPerSecond       float64 // RSA-2048 PKCS#1 v1.5 SHA-256 signatures/s on all cores
	Ratio                  float64 // PerSecond / RSASignPerSecond
	// SealPerSecond is how many messages of Size smime.Seal makes per
	// second on all cores (RSA-2048 signer, one RSA-2048 recipient,
	// OAEP-SHA256, AES-128-CBC): what a server doing nothing but sealing
	// would reach. SealRatio is PerSecond / SealPerSecond.
	SealPerSecond    float64
	SealRatio        float64
	ServerPeakRSSKiB int64 // VmHWM of ServerPID, 0 if unknown
	// ServerCPUPerMessage is ServerPID's CPU time over the submissions
	// (logins included) divided by the messages sent; RSASignCPU is the
	// CPU time of one RSA-2048 signature measured in the same run (with a
	// server to measure, the mean of one measurement before the
	// submissions and one after: on a shared machine the cost of a
	// signature drifts with the other load, and the ratio of the two
	// should compare them under the same conditions).
	ServerCPUPerMessage, RSASignCPU time.Duration
	// DBCPUPerMessage is DBPID's CPU time and its children's over the
	// submissions divided by the messages sent.
	DBCPUPerMessage   time.Duration
	Concurrency, Size int
}

// String formats the report for people.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "messages:        %d sent, %d failed (%d clients, %d bytes each)\n", r.Messages, r.Failed, r.Concurrency, r.Size)
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first error:     %s\n", r.FirstError)
	}
	fmt.Fprintf(&b, "elapsed:         %s\n", r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "throughput:      %.1f messages/s\n", r.PerSecond)
	fmt.Fprintf(&b, "latency:         p50 %s, p99 %s, max %s\n", r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond))
	if r.Connections > 0 {
		fmt.Fprintf(&b, "connections:     %d, setup (STARTTLS, AUTH) p50 %s, max %s; TLS resumed %d\n", r.Connections,
			r.ConnectP50.Round(time.Microsecond), r.ConnectMax.Round(time.Microsecond), r.Resumed)
	}
	fmt.Fprintf(&b, "RSA-2048 signs:  %.1f/s on %d cores (the ceiling)\n", r.RSASignPerSecond, runtime.GOMAXPROCS(0))
	fmt.Fprintf(&b, "ratio:           %.2f of the RSA ceiling\n", r.Ratio)
	if r.SealPerSecond > 0 {
		fmt.Fprintf(&b, "seal ceiling:    %.1f messages/s sealed on %d cores (%.2f signatures each); ratio %.2f\n",
			r.SealPerSecond, runtime.GOMAXPROCS(0), r.RSASignPerSecond/r.SealPerSecond, r.SealRatio)
	}
	if r.ServerCPUPerMessage > 0 {
		fmt.Fprintf(&b, "server CPU:      %s per message", r.ServerCPUPerMessage.Round(time.Microsecond))
		if r.RSASignCPU > 0 {
			fmt.Fprintf(&b, " = %.2f RSA-2048 signatures (%s CPU each)", float64(r.ServerCPUPerMessage)/float64(r.RSASignCPU), r.RSASignCPU.Round(time.Microsecond))
		}
		b.WriteString("\n")
	}
	if r.DBCPUPerMessage > 0 {
		fmt.Fprintf(&b, "database CPU:    %s per message", r.DBCPUPerMessage.Round(time.Microsecond))
		if r.RSASignCPU > 0 {
			fmt.Fprintf(&b, " = %.2f RSA-2048 signatures; server and database %.2f",
				float64(r.DBCPUPerMessage)/float64(r.RSASignCPU), float64(r.ServerCPUPerMessage+r.DBCPUPerMessage)/float64(r.RSASignCPU))
		}
		b.WriteString("\n")
	}
	if r.ServerPeakRSSKiB > 0 {
		fmt.Fprintf(&b, "server peak RSS: %.1f MiB\n", float64(r.ServerPeakRSSKiB)/1024)
	}
	return b.String()
}

// Run measures the RSA ceiling, then submits the messages.
func Run(ctx context.Context, o Options) (*Report, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	r := &Report{Concurrency: o.Concurrency, Size: o.Size}
	if !o.NoCeiling {
		rate, perSign, err := rsaSign(ctx, o.CeilingTime)
		if err != nil {
			return nil, err
		}
		r.RSASignPerSecond, r.RSASignCPU = rate, perSign
		if r.SealPerSecond, err = SealRate(ctx, o.CeilingTime, o.Size); err != nil {
			return nil, err
		}
	}

	tlsConfig := &tls.Config{InsecureSkipVerify: true} // it measures throughput; it does not vouch for the server
	if host, _, err := net.SplitHostPort(o.Addr); err == nil {
		tlsConfig.ServerName = host
	}
	if !o.NoResume {
		tlsConfig.ClientSessionCache = tls.NewLRUClientSessionCache(o.Concurrency)
	}
	var mu sync.Mutex
	var lat, conns []time.Duration
	// With reused connections, every client connects and logs in before
	// the clock and the server's CPU count start: the figures are those of
	// the steady state, not of the logins.
	clients := make([]*smtp.Client, o.Concurrency)
	if o.Reuse {
		var err error
		if conns, err = dialAll(o, tlsConfig, clients, r); err != nil {
			return nil, err
		}
	}
	var serverCPU0, dbCPU0 time.Duration
	if o.ServerPID > 0 {
		serverCPU0 = processCPU(o.ServerPID)
	}
	if o.DBPID > 0 {
		dbCPU0 = processTreeCPU(o.DBPID)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w]
			defer func() {
				if c != nil {
					c.Quit()
				}
			}()
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(o.Messages) {
					return
				}
				id, msg := message(o, i)
				t0 := time.Now()
				var err error
				if c == nil {
					c, err = dial(o, tlsConfig)
					if err == nil {
						mu.Lock()
						if st, ok := c.TLSConnectionState(); ok && st.DidResume {
							r.Resumed++
						}
						conns = append(conns, time.Since(t0))
						mu.Unlock()
						if o.Reuse {
							// The connection serves many messages: its
							// setup is not in this one's latency.
							t0 = time.Now()
						}
					}
				}
				if err == nil {
					err = send(c, o, msg)
				}
				d := time.Since(t0)
				if o.OnResult != nil {
					o.OnResult(id, err)
				}
				if !o.Reuse || err != nil {
					if c != nil {
						c.Close()
					}
					c = nil
				}
				mu.Lock()
				if err != nil {
					r.Failed++
					if r.FirstError == "" {
						r.FirstError = err.Error()
					}
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	if o.ServerPID > 0 && len(lat) > 0 {
		if cpu := processCPU(o.ServerPID) - serverCPU0; cpu > 0 {
			r.ServerCPUPerMessage = cpu / time.Duration(len(lat))
		}
		if !o.NoCeiling && r.RSASignCPU > 0 && ctx.Err() == nil {
			if _, after, err := rsaSign(ctx, o.CeilingTime); err == nil && after > 0 {
				r.RSASignCPU = (r.RSASignCPU + after) / 2
			}
		}
	}
	if o.DBPID > 0 && len(lat) > 0 {
		if cpu := processTreeCPU(o.DBPID) - dbCPU0; cpu > 0 {
			r.DBCPUPerMessage = cpu / time.Duration(len(lat))
		}
	}
	r.summarize(lat, conns)
	if o.ServerPID > 0 {
		r.ServerPeakRSSKiB = peakRSS(o.ServerPID)
	}
	return r, ctx.Err()
}

// setDefaults checks o and fills in its defaults; "auto" STARTTLS asks
// the server.
func (o *Options) setDefaults() error {
	if o.Addr == "" || len(o.To) == 0 {
		return errors.New("loadgen: need an address and at least one recipient")
	}
	if o.From == "" {
		o.From = o.User
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Messages <= 0 {
		o.Messages = 1000
	}
	if o.Size <= 0 {
		o.Size = 10 << 10
	}
	if o.StartTLS == "" {
		o.StartTLS = "auto"
	}
	if o.StartTLS == "auto" {
		ok, err := probeStartTLS(o.Addr)
		if err != nil {
			return fmt.Errorf("loadgen: connect %s: %w", o.Addr, err)
		}
		o.StartTLS = map[bool]string{true: "require", false: "off"}[ok]
	}
	return nil
}

// dialAll connects and logs in a client for each slot of clients, one
// after the other, and returns how long each setup took; it counts the
// resumed TLS sessions in r.
func dialAll(o Options, tlsConfig *tls.Config, clients []*smtp.Client, r *Report) ([]time.Duration, error) {
	var setup []time.Duration
	for w := range clients {
		t0 := time.Now()
		c, err := dial(o, tlsConfig)
		if err != nil {
			for _, c := range clients[:w] {
				c.Close()
			}
			return nil, fmt.Errorf("loadgen: connect: %w", err)
		}
		setup = append(setup, time.Since(t0))
		if st, ok := c.TLSConnectionState(); ok && st.DidResume {
			r.Resumed++
		}
		clients[w] = c
	}
	return setup, nil
}

// summarize fills in the report's figures from the latencies of the
// messages sent and the setup times of the connections.
func (r *Report) summarize(lat, conns []time.Duration) {
	r.Messages = len(lat)
	if r.Elapsed > 0 {
		r.PerSecond = float64(r.Messages) / r.Elapsed.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		r.P50 = lat[len(lat)/2]
		r.P99 = lat[min(len(lat)-1, len(lat)*99/100)]
		r.Max = lat[len(lat)-1]
	}
	if len(conns) > 0 {
		slices.Sort(conns)
		r.Connections = len(conns)
		r.ConnectP50 = conns[len(conns)/2]
		r.ConnectMax = conns[len(conns)-1]
	}
	if r.RSASignPerSecond > 0 {
		r.Ratio = r.PerSecond / r.RSASignPerSecond
	}
	if r.SealPerSecond > 0 {
		r.SealRatio = r.PerSecond / r.SealPerSecond
	}
}

func dial(o Options, tlsConfig *tls.Config) (*smtp.Client, error) {
	conn, err := net.DialTimeout("tcp", o.Addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	var c *smtp.Client
	if o.StartTLS == "require" {
		c, err = smtp.NewClientStartTLS(conn, tlsConfig)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	} else {
		c = smtp.NewClient(conn)
		if err := c.Hello("loadgen.localhost"); err != nil {
			c.Close()
			return nil, err
		}
	}
	if o.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", o.User, o.Password)); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return c, nil
}

// probeStartTLS reports whether the server offers STARTTLS.
func probeStartTLS(addr string) (bool, error) {
	c, err := smtp.Dial(addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	if err := c.Hello("loadgen.localhost"); err != nil {
		return false, err
	}
	ok, _ := c.Extension("STARTTLS")
	return ok, nil
}

func send(c *smtp.Client, o Options, msg []byte) error {
	if err := c.Mail(o.From, &smtp.MailOptions{Size: int64(len(msg))}); err != nil {
		c.Reset()
		return err
	}
	for _, to := range o.To {
		if err := c.Rcpt(to, nil); err != nil {
			c.Reset()
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// message returns message number i of about o.Size bytes, a synthetic
// clinical note as a base64-looking attachment body, and its Message-ID
// (unique across runs).
func message(o Options, i int64) (string, []byte) {
	now := time.Now()
	id := fmt.Sprintf("<load-%d-%d@loadgen.localhost>", now.UnixNano(), i)
	var b strings.Builder
	b.Grow(o.Size + 512)
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: load test %d\r\nDate: %s\r\nMessage-ID: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n",
		o.From, strings.Join(o.To, ", "), i, now.Format(time.RFC1123Z), id)
	const line = "VGhpcyBpcyBhIHN5bnRoZXRpYyBsb2FkIHRlc3QgbWVzc2FnZSBmb3IgaGlzcC4gTm8gUEhJLg==\r\n"
	for b.Len() < o.Size {
		b.WriteString(line)
	}
	return id, []byte(b.String())
}

// rsaSign measures RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second
// with one signer per core, for about d (default 2 s), and the CPU time of
// one signature (this process's CPU time over the measurement, divided by
// the count):
// unlike the rate, it stays put when other processes share the cores.
func rsaSign(ctx context.Context, d time.Duration) (float64, time.Duration, error) {
	if d <= 0 {
		d = 2 * time.Second
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return 0, 0, err
	}
	digest := sha256.Sum256([]byte("hisp"))
	var n atomic.Int64
	var wg sync.WaitGroup
	cpu0 := processCPU(os.Getpid())
	start := time.Now()
	deadline := start.Add(d)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:]); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(n.Load()) / time.Since(start).Seconds()
	var perSign time.Duration
	if cpu := processCPU(os.Getpid()) - cpu0; cpu > 0 && n.Load() > 0 {
		perSign = cpu / time.Duration(n.Load())
	}
	return rate, perSign, ctx.Err()
}

// processCPU is the user and system CPU time a process has used, from
// /proc (0 where it cannot be read).
func processCPU(pid int) time.Duration {
	f := procStat(pid)
	if len(f) < 13 {
		return 0
	}
	return ticks(f[11], f[12])
}

// processTreeCPU is the CPU time of pid, of its reaped children (cutime,
// cstime) and of its live children with theirs: a server of one process
// per connection (PostgreSQL) over the life of its connections.
func processTreeCPU(pid int) time.Duration {
	f := procStat(pid)
	if len(f) < 15 {
		return 0
	}
	cpu := ticks(f[11], f[12], f[13], f[14])
	procs, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, p := range procs {
		child, err := strconv.Atoi(p.Name())
		if err != nil || child == pid {
			continue
		}
		if f := procStat(child); len(f) >= 15 && f[1] == parent {
			cpu += ticks(f[11], f[12], f[13], f[14])
		}
	}
	return cpu
}

// procStat returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first); nil if it cannot be read.
func procStat(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// The command name (field 2) may hold spaces: count from its ")".
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}

// ticks adds up clock ticks given as decimal fields of /proc/PID/stat.
func ticks(fields ...string) time.Duration {
	var sum int64
	for _, f := range fields {
		n, _ := strconv.ParseInt(f, 10, 64)
		sum += n
	}
	const clockTicks = 100 // USER_HZ, 100 on every Linux platform Go runs on
	return time.Duration(sum) * time.Second / clockTicks
}

// SealRate measures how many messages of about size bytes smime.Seal makes
// per second, one sealer per core, for about d (default 2 s): an RSA-2048
// signer with SHA-256 and one RSA-2048 recipient (OAEP-SHA256, AES-128-CBC),
// as hisp seals a submission. The keys and certificates are made here.
func SealRate(ctx context.Context, d time.Duration, size int) (float64, error) {
	if d <= 0 {
		d = 2 * time.Second
	}
	signer, err := sealIdentity("sender@ceiling.invalid")
	if err != nil {
		return 0, err
	}
	recipient, err := sealIdentity("recipient@ceiling.invalid")
	if err != nil {
		return 0, err
	}
	_, msg := message(Options{From: signer.Cert.EmailAddresses[0], To: recipient.Cert.EmailAddresses, Size: size}, 0)
	if _, err := smime.Seal(msg, signer, []cms.Recipient{{Cert: recipient.Cert}}, smime.SealOptions{}); err != nil {
		return 0, fmt.Errorf("seal ceiling: %w", err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := smime.Seal(msg, signer, []cms.Recipient{{Cert: recipient.Cert}}, smime.SealOptions{}); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), ctx.Err()
}

// sealIdentity is a self-signed RSA-2048 certificate for an address, fit
// to sign and to encrypt to.
func sealIdentity(addr string) (smime.Signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return smime.Signer{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: addr},
		EmailAddresses: []string{addr}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return smime.Signer{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return smime.Signer{}, err
	}
	return smime.Signer{Cert: cert, Key: key}, nil
}

// peakRSS reads VmHWM (KiB) of a process; 0 if unavailable.
func peakRSS(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kib int64
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kib)
			return kib
		}
	}
	return 0
}
