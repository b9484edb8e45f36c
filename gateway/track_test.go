package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/config"
	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/store"
	"github.com/hisp-project/hisp/track"
)

// The sending side of delivery notification end to end (issue 6): hisp
// instances on loopback; the MDNs come from the recipient's HISP, either
// sent by it on its own (the receiving side) or built by hand and submitted
// by the recipient through that HISP, so that they are signed, encrypted
// and opened like any Direct message. Either way the sender's mailbox gets
// one final outcome per recipient.

const trkRequest = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"

// trkTweak shortens the notification timeouts and intervals of a test.
func trkTweak(timeout time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		n := &c.Notifications
		n.ProcessedTimeout, n.DispatchedTimeout = config.Duration{Duration: timeout}, config.Duration{Duration: timeout}
		n.CheckInterval = config.Duration{Duration: 100 * time.Millisecond}
		n.WebhookRetryFirst, n.WebhookRetryMax = config.Duration{Duration: 100 * time.Millisecond}, config.Duration{Duration: 400 * time.Millisecond}
	}
}

// trkMessage is a message from one address to another, asking for timely
// and reliable delivery when options says so.
func trkMessage(from, to, id, options string) []byte {
	h := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: Referral\r\nDate: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n",
		from, to, time.Now().Format(time.RFC1123Z), id)
	if options != "" {
		h += "Disposition-Notification-To: " + from + "\r\nDisposition-Notification-Options: " + options + "\r\n"
	}
	return []byte(h + "Content-Type: text/plain\r\n\r\nPlease see the patient.\r\n")
}

// trkSubmit submits a message through an instance's submission listener.
func trkSubmit(t *testing.T, in *instance, user string, to string, msg []byte) {
	t.Helper()
	if r := submitPython(t, in.addrs["submission"], user, in.password, user, []string{to}, msg); r != "" {
		t.Fatalf("submission refused: %s", r)
	}
}

// trkMDN has the recipient user of instance in send an MDN about original
// to the sender, through its own HISP (sealed by its agent).
func trkMDN(t *testing.T, in *instance, user, sender, original string, d mdn.Disposition, ext bool) {
	t.Helper()
	msg, err := mdn.BuildMDN(mdn.MDN{From: user, To: sender, OriginalMessageID: original, Disposition: d, FinalDestination: ext,
		ReportingUA: in.domain + "; by hand"})
	if err != nil {
		t.Fatal(err)
	}
	trkSubmit(t, in, user, sender, msg)
}

// trkTracked returns the tracking of a message, nil if there is none yet.
func trkTracked(t *testing.T, in *instance, id string) *store.TrackedMessage {
	t.Helper()
	m, err := in.st.TrackedMessage(context.Background(), id)
	if err != nil {
		return nil
	}
	return &m
}

// trkEvents returns the kind:notice list of a recipient's events.
func trkEvents(r store.TrackedRecipient) string {
	var out []string
	for _, e := range r.Events {
		out = append(out, e.Kind+":"+e.Notice)
	}
	return strings.Join(out, " ")
}

// trkNotices returns the MDNs and DSNs about original in a mailbox.
func trkNotices(t *testing.T, in *instance, addr, original string) (mdns []*mdn.MDN, dsns []*mdn.ParsedDSN) {
	t.Helper()
	for _, msg := range in.mailbox(t, addr, "INBOX") {
		if m, err := mdn.ParseMDN(msg); err == nil {
			if m.OriginalMessageID == original {
				mdns = append(mdns, m)
			}
			continue
		}
		if d, err := mdn.ParseDSN(msg); err == nil && d.OriginalMessageID == original {
			dsns = append(dsns, d)
		}
	}
	return mdns, dsns
}

// trkProxy forwards TCP connections to a target set once it is known.
type trkProxy struct {
	l      net.Listener
	mu     sync.Mutex
	target string
}

func newTrkProxy(t *testing.T) *trkProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &trkProxy{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *trkProxy) serve(c net.Conn) {
	defer c.Close()
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	if target == "" {
		return
	}
	d, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer d.Close()
	go io.Copy(d, c)
	io.Copy(c, d)
}

func (p *trkProxy) set(addr string) { p.mu.Lock(); p.target = addr; p.mu.Unlock() }

// trkSink is a plain SMTP server that accepts every message and never
// answers it: a remote HISP that sends no MDN.
type trkSink struct {
	mu   sync.Mutex
	msgs int
}

func (s *trkSink) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &trkSinkSession{s}, nil }

func (s *trkSink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return s.msgs }

type trkSinkSession struct{ s *trkSink }

func (ss *trkSinkSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (ss *trkSinkSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (ss *trkSinkSession) Data(r io.Reader) error {
	io.Copy(io.Discard, r)
	ss.s.mu.Lock()
	ss.s.msgs++
	ss.s.mu.Unlock()
	return nil
}
func (ss *trkSinkSession) Reset()        {}
func (ss *trkSinkSession) Logout() error { return nil }

func startTrkSink(t *testing.T) (*trkSink, string) {
	t.Helper()
	s := &trkSink{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gosmtp.NewServer(s)
	srv.Domain = "sink.localhost"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return s, l.Addr().String()
}

// TestTrackDispatched: a message asking for timely and reliable delivery is
// tracked to dispatched; the sender's INBOX gets the one dispatched MDN
// (processed is withheld, repeats suppressed). Without the request the
// processed MDN is the news. A recipient whose mailbox is full gives
// processed (withheld) then failed: one failure. The API shows it all to
// a token holder only.
func TestTrackDispatched(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	b := newInstance(t, "clinic.example", "bob")
	carol, _ := b.addUser(t, "carol")
	must(t, func() error { return b.st.SetQuota(ctx, carol, 1) })
	a.trust(t, b)
	b.trust(t, a)
	dns := publishBoth(t, a, b)
	toA := newTrkProxy(t)
	b.start(t, dns, map[string]string{"hospital.example": toA.l.Addr().String()}, nil)
	a.start(t, dns, map[string]string{"clinic.example": b.addrs["smtp"]}, trkTweak(time.Hour))
	toA.set(a.addrs["smtp"])

	const m1, m2, m3 = "<trk-dispatched@hospital.example>", "<trk-processed@hospital.example>", "<trk-full@hospital.example>"
	trkSubmit(t, a, a.user, b.user, trkMessage(a.user, b.user, strings.Trim(m1, "<>"), trkRequest))
	trkSubmit(t, a, a.user, b.user, trkMessage(a.user, b.user, strings.Trim(m2, "<>"), ""))
	trkSubmit(t, a, a.user, carol, trkMessage(a.user, carol, strings.Trim(m3, "<>"), trkRequest))
	b.waitMailbox(t, b.user, "INBOX", 2)
	// The clinic sends its MDNs on its own (notify.go); bob answers by
	// hand as well: the hospital must see through the repeats.
	trkMDN(t, b, b.user, a.user, m1, mdn.DispositionProcessed, false)
	trkMDN(t, b, b.user, a.user, m1, mdn.DispositionDispatched, true)
	trkMDN(t, b, b.user, a.user, m2, mdn.DispositionProcessed, false)

	notices := func(r store.TrackedRecipient, kind string) int {
		n := 0
		for _, e := range r.Events {
			if e.Kind == kind && e.Notice != "" {
				n++
			}
		}
		return n
	}
	// The clinic's own notices and bob's: two of each.
	waitFor(t, "m1 dispatched with every notice recorded", func() bool {
		m := trkTracked(t, a, m1)
		return m != nil && m.Recipients[0].State == store.TrackDispatched &&
			notices(m.Recipients[0], "processed") == 2 && notices(m.Recipients[0], "dispatched") == 2
	})
	waitFor(t, "m2 processed with every notice recorded", func() bool {
		m := trkTracked(t, a, m2)
		return m != nil && m.Recipients[0].State == store.TrackProcessed && notices(m.Recipients[0], "processed") == 2
	})
	// carol's mailbox is full: processed (withheld), then failed.
	waitFor(t, "m3 failed", func() bool {
		m := trkTracked(t, a, m3)
		return m != nil && m.Recipients[0].State == store.TrackFailed && notices(m.Recipients[0], "processed") == 1
	})
	waitFor(t, "notices in alice's INBOX", func() bool {
		n1, _ := trkNotices(t, a, a.user, m1)
		n2, _ := trkNotices(t, a, a.user, m2)
		n3, _ := trkNotices(t, a, a.user, m3)
		return len(n1) >= 1 && len(n2) >= 1 && len(n3) >= 1
	})
	n1, d1 := trkNotices(t, a, a.user, m1)
	if len(n1) != 1 || len(d1) != 0 || n1[0].Disposition != mdn.DispositionDispatched || !strings.EqualFold(n1[0].From, b.user) {
		t.Fatalf("alice's notices about m1: %+v, DSNs %+v; want the one dispatched MDN", n1, d1)
	}
	n2, _ := trkNotices(t, a, a.user, m2)
	if len(n2) != 1 || n2[0].Disposition != mdn.DispositionProcessed {
		t.Fatalf("alice's notices about m2: %+v; want the one processed MDN", n2)
	}
	if n3, d3 := trkNotices(t, a, a.user, m3); len(n3) != 1 || len(d3) != 0 || n3[0].Disposition != mdn.DispositionFailed {
		t.Fatalf("alice's notices about m3: %+v, DSNs %+v; want the one failed MDN", n3, d3)
	}
	if r := trkTracked(t, a, m3).Recipients[0]; r.Outcome != store.OutcomeFailure || r.OutcomeBy != "mdn" || !strings.Contains(r.Reason, "quota") {
		t.Fatalf("m3 %+v", r)
	}
	r1 := trkTracked(t, a, m1).Recipients[0]
	if r1.Outcome != store.OutcomeSuccess || r1.Address != b.user || !strings.Contains(trkEvents(r1), "processed:withheld") ||
		!strings.Contains(trkEvents(r1), "dispatched:filed") || strings.Count(trkEvents(r1), ":filed") != 1 {
		t.Fatalf("m1 %+v: events %s", r1, trkEvents(r1))
	}
	if !trkTracked(t, a, m1).DispatchedRequested || trkTracked(t, a, m2).DispatchedRequested {
		t.Fatal("request not recorded as sent")
	}

	// The API, on the admin listener.
	_, token, err := a.st.CreateAPIToken(ctx, "ehr")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + a.addrs["admin"] + "/api/v1/messages"
	get := func(path, tok string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	one := "/" + url.PathEscape(m1)
	for _, tok := range []string{"", "hisp_not-a-token", token + "x"} {
		if code, body := get(one, tok); code != http.StatusUnauthorized || !strings.Contains(string(body), "token") {
			t.Fatalf("token %q: %d %s", tok, code, body)
		}
	}
	if code, _ := get("", ""); code != http.StatusUnauthorized {
		t.Fatalf("list without token: %d", code)
	}
	code, body := get(one, token)
	var v track.MessageView
	if err := json.Unmarshal(body, &v); code != http.StatusOK || err != nil {
		t.Fatalf("GET %s: %d %v %s", one, code, err, body)
	}
	if v.MessageID != m1 || v.Sender != a.user || !v.DispatchedRequested || len(v.Recipients) != 1 ||
		v.Recipients[0].State != "dispatched" || v.Recipients[0].Outcome != "success" || len(v.Recipients[0].Events) < 3 ||
		v.Recipients[0].Events[0].Kind != "queued" || v.Recipients[0].ProcessedDeadline == nil {
		t.Fatalf("message JSON %s", body)
	}
	// Without the angle brackets too.
	if code, _ := get("/"+url.PathEscape(strings.Trim(m1, "<>")), token); code != http.StatusOK {
		t.Fatalf("bare message-id: %d", code)
	}
	if code, _ := get("/"+url.PathEscape("<nothing@hospital.example>"), token); code != http.StatusNotFound {
		t.Fatalf("unknown message: %d", code)
	}
	code, body = get("?sender="+url.QueryEscape(a.user)+"&state=processed&since=1h", token)
	var list struct {
		Messages []track.MessageView `json:"messages"`
	}
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Messages) != 1 || list.Messages[0].MessageID != m2 {
		t.Fatalf("list: %d %v %s", code, err, body)
	}
	if code, body = get("?sender=nobody@hospital.example", token); code != http.StatusOK || !strings.Contains(string(body), `"messages": []`) {
		t.Fatalf("empty list: %d %s", code, body)
	}
	for _, q := range []string{"?state=lost", "?since=yesterday", "?limit=0"} {
		if code, _ := get(q, token); code != http.StatusBadRequest {
			t.Fatalf("%s: %d", q, code)
		}
	}

	// A token limited to another domain's senders sees none of alice's
	// messages, and cannot tell them from missing ones.
	must(t, func() error { _, err := a.st.AddDomain(ctx, "lab.example"); return err })
	_, labToken, err := a.st.CreateAPIToken(ctx, "lab ehr", "lab.example")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := get(one, labToken); code != http.StatusNotFound {
		t.Fatalf("another domain's token on alice's message: %d %s", code, body)
	}
	if code, body := get("?since=1h", labToken); code != http.StatusOK || !strings.Contains(string(body), `"messages": []`) {
		t.Fatalf("another domain's token lists: %d %s", code, body)
	}
	_, ownToken, err := a.st.CreateAPIToken(ctx, "hospital ehr", "hospital.example")
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := get(one, ownToken); code != http.StatusOK {
		t.Fatalf("the hospital's own token: %d", code)
	}
	if code, body = get("?since=1h", ownToken); code != http.StatusOK || !strings.Contains(string(body), strings.Trim(m1, "<>")) {
		t.Fatalf("the hospital's own token lists: %d %s", code, body)
	}
	// Another domain's message with the same Message-ID (the sender chose
	// it) does not hide the hospital's from its token.
	must(t, func() error {
		_, err := a.st.TrackMessage(ctx, store.TrackedMessage{MessageID: m1, Sender: "eve@lab.example", Sent: time.Now(),
			Recipients: []store.TrackedRecipient{{Address: b.user, ProcessedDeadline: time.Now().Add(time.Hour)}}})
		return err
	})
	code, body = get(one, ownToken)
	if err := json.Unmarshal(body, &v); code != http.StatusOK || err != nil || v.Sender != a.user {
		t.Fatalf("the hospital's token after a colliding Message-ID: %d %s", code, body)
	}
}

// TestTrackTimeout: a remote that accepts the message and never answers.
// After the (shortened) timeout the sender gets one failure DSN naming the
// recipient; a dispatched MDN that comes after it is recorded and
// suppressed.
func TestTrackTimeout(t *testing.T) {
	t.Parallel()
	a := newInstance(t, "hospital.example", "alice")
	c := newInstance(t, "quiet.example", "carl")
	a.trust(t, c)
	c.trust(t, a)
	dns := publishBoth(t, a, c)
	sink, sinkAddr := startTrkSink(t)
	a.start(t, dns, map[string]string{"quiet.example": sinkAddr}, trkTweak(2*time.Second))
	c.start(t, dns, map[string]string{"hospital.example": a.addrs["smtp"]}, nil)

	const m1 = "<trk-timeout@hospital.example>"
	trkSubmit(t, a, a.user, c.user, trkMessage(a.user, c.user, strings.Trim(m1, "<>"), trkRequest))
	waitFor(t, "the failure DSN in alice's INBOX", func() bool {
		_, d := trkNotices(t, a, a.user, m1)
		return len(d) > 0
	})
	waitFor(t, "the relay to the sink recorded", func() bool {
		return sink.count() == 1 && !trkTracked(t, a, m1).Recipients[0].Relayed.IsZero()
	})
	_, ds := trkNotices(t, a, a.user, m1)
	if len(ds) != 1 || len(ds[0].Recipients) != 1 {
		t.Fatalf("DSNs %+v", ds)
	}
	if r := ds[0].Recipients[0]; r.Recipient != c.user || r.Action != mdn.Failed || r.Status != "5.4.7" ||
		!strings.Contains(r.Diagnostic, "no processed MDN") {
		t.Fatalf("DSN recipient %+v", r)
	}
	r := trkTracked(t, a, m1).Recipients[0]
	if r.State != store.TrackFailed || r.Outcome != store.OutcomeFailure || r.OutcomeBy != "timeout" || r.Relayed.IsZero() {
		t.Fatalf("tracked %+v", r)
	}

	// Too late: recorded, not filed.
	trkMDN(t, c, c.user, a.user, m1, mdn.DispositionDispatched, true)
	waitFor(t, "the late dispatched MDN recorded", func() bool {
		return strings.Contains(trkEvents(trkTracked(t, a, m1).Recipients[0]), "dispatched:suppressed")
	})
	mdns, ds := trkNotices(t, a, a.user, m1)
	if len(mdns) != 0 || len(ds) != 1 || len(a.mailbox(t, a.user, "INBOX")) != 1 {
		t.Fatalf("alice has %d MDNs and %d DSNs about m1, %d messages in all; want the one DSN", len(mdns), len(ds),
			len(a.mailbox(t, a.user, "INBOX")))
	}
	if r := trkTracked(t, a, m1).Recipients[0]; r.State != store.TrackFailed || strings.Count(trkEvents(r), "timeout:") != 1 {
		t.Fatalf("after the late MDN %+v: %s", r, trkEvents(r))
	}
}

// trkReceiver is a webhook endpoint that checks signatures and records
// the events it accepted.
type trkReceiver struct {
	t      *testing.T
	secret []byte
	mu     sync.Mutex
	down   bool
	failed int // requests answered 503
	events []track.Event
}

func (rc *trkReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !track.Verify(rc.secret, body, r.Header.Get(track.SignatureHeader)) {
		rc.t.Errorf("webhook signature %q does not verify", r.Header.Get(track.SignatureHeader))
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if rc.down {
		rc.failed++
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	var e track.Event
	if err := json.Unmarshal(body, &e); err != nil {
		rc.t.Errorf("webhook body %s: %v", body, err)
	}
	rc.events = append(rc.events, e)
}

func (rc *trkReceiver) state() (events []track.Event, failed int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]track.Event(nil), rc.events...), rc.failed
}

func (rc *trkReceiver) setDown(d bool) { rc.mu.Lock(); rc.down = d; rc.mu.Unlock() }

// TestTrackWebhooksAcrossRestart: a webhook of the sender's domain sees
// every transition of two messages exactly once and in order per message,
// although the endpoint is down for a while and hisp stops and starts again
// in between.
func TestTrackWebhooksAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := newInstance(t, "hospital.example", "alice")
	c := newInstance(t, "quiet.example", "carl")
	a.trust(t, c)
	c.trust(t, a)
	dns := publishBoth(t, a, c)
	_, sinkAddr := startTrkSink(t)
	rc := &trkReceiver{t: t, secret: []byte("the hospital's webhook secret")}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	if _, err := a.st.AddWebhook(ctx, a.domain, hook.URL+"/direct", rc.secret); err != nil {
		t.Fatal(err)
	}
	routes := map[string]string{"quiet.example": sinkAddr}
	stop := a.runStoppable(t, dns, routes, trkTweak(time.Hour))

	const m1, m2 = "<trk-hook-1@hospital.example>", "<trk-hook-2@hospital.example>"
	relayed := func(id string) bool {
		m := trkTracked(t, a, id)
		return m != nil && !m.Recipients[0].Relayed.IsZero()
	}
	trkSubmit(t, a, a.user, c.user, trkMessage(a.user, c.user, strings.Trim(m1, "<>"), trkRequest))
	waitFor(t, "m1 queued and relayed at the webhook", func() bool {
		ev, _ := rc.state()
		return len(ev) == 2
	})
	// The endpoint goes down; m2's events wait in the outbox, and hisp
	// stops with them there.
	rc.setDown(true)
	trkSubmit(t, a, a.user, c.user, trkMessage(a.user, c.user, strings.Trim(m2, "<>"), trkRequest))
	waitFor(t, "m2 relayed and its webhook refused", func() bool {
		_, failed := rc.state()
		return relayed(m2) && failed > 0
	})
	stop()
	rc.setDown(false)
	stop = a.runStoppable(t, dns, routes, trkTweak(time.Hour))
	c.start(t, dns, map[string]string{"hospital.example": a.addrs["smtp"]}, nil)
	for _, id := range []string{m1, m2} {
		trkMDN(t, c, c.user, a.user, id, mdn.DispositionProcessed, false)
		trkMDN(t, c, c.user, a.user, id, mdn.DispositionDispatched, true)
	}
	waitFor(t, "eight events at the webhook", func() bool {
		ev, _ := rc.state()
		return len(ev) >= 8
	})
	stop() // nothing in flight any more
	events, _ := rc.state()
	seen := map[int64]bool{}
	chains := map[string][]string{}
	for _, e := range events {
		if seen[e.ID] {
			t.Errorf("event %d delivered twice: %+v", e.ID, e)
		}
		seen[e.ID] = true
		if e.Sender != a.user || e.Recipient != c.user || !e.DispatchedRequested || e.Type != "recipient.state" {
			t.Errorf("event %+v", e)
		}
		chains[e.MessageID] = append(chains[e.MessageID], e.PreviousState+">"+e.State)
	}
	want := ">queued queued>relayed relayed>processed processed>dispatched"
	for _, id := range []string{m1, m2} {
		if got := strings.Join(chains[id], " "); got != want {
			t.Errorf("%s at the webhook: %s\nwant %s", id, got, want)
		}
	}
	if len(events) != 8 {
		t.Fatalf("%d events, want 8", len(events))
	}
}
