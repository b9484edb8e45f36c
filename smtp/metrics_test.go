package smtp

import (
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/hisp-project/hisp/metrics"
	"github.com/hisp-project/hisp/store"
)

func wantCount(t *testing.T, c *metrics.Counter, want uint64, values ...string) {
	t.Helper()
	if got := c.Value(values...); got != want {
		t.Errorf("%v: %d, want %d", values, got, want)
	}
}

// TestTransactionCounters: each transaction on the backbone counts once,
// by how it ended; each refused command counts by command.
func TestTransactionCounters(t *testing.T) {
	tx := metrics.NewCounter("hisp_smtp_transactions_total", "t", "listener", "outcome")
	refusals := metrics.NewCounter("hisp_smtp_refusals_total", "r", "listener", "command")
	s, rec, _ := newBackbone(t, BackboneConfig{Config: Config{Transactions: tx, Refusals: refusals}})
	rec.reply = func(env Envelope, msg []byte) (*Reply, error) {
		switch env.MailFrom {
		case "untrusted@remote.example":
			return errorf(550, "5.7.1", "untrusted signer"), nil
		case "broken@remote.example":
			return nil, errors.New("store down")
		}
		return nil, nil
	}
	rc := dialRaw(t, serve(t, s))
	rc.expect("EHLO mx.remote.example", "250")

	rc.expect("MAIL FROM:<sender@-bad-.example>", "553") // refused at MAIL
	rc.expect("MAIL FROM:<sender@remote.example>", "250")
	rc.expect("RCPT TO:<victim@elsewhere.example>", "554") // a refused RCPT, the transaction goes on
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: ok\r\n\r\nhello\r\n", "250") // accepted
	rc.expect("MAIL FROM:<untrusted@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: no\r\n\r\nhello\r\n", "550") // refused by the handler
	rc.expect("MAIL FROM:<broken@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("Subject: fails\r\n\r\nhello\r\n", "451") // failed
	rc.expect("MAIL FROM:<empty@remote.example>", "250")
	rc.expect("RCPT TO:<bob@a.example>", "250")
	rc.message("", "554") // refused: empty
	rc.expect("QUIT", "221")

	wantCount(t, tx, 1, "backbone", "accepted")
	wantCount(t, tx, 3, "backbone", "refused")
	wantCount(t, tx, 1, "backbone", "failed")
	wantCount(t, tx, 0, "submission", "accepted")
	wantCount(t, refusals, 1, "backbone", "mail")
	wantCount(t, refusals, 1, "backbone", "rcpt")
	wantCount(t, refusals, 2, "backbone", "data")
}

// TestSubmissionCounters: a wrong password and MAIL before AUTH are
// refusals; the message after a good login is an accepted transaction of
// the submission listener.
func TestSubmissionCounters(t *testing.T) {
	st := testStore(t)
	tx := metrics.NewCounter("hisp_smtp_transactions_total", "t", "listener", "outcome")
	refusals := metrics.NewCounter("hisp_smtp_refusals_total", "r", "listener", "command")
	s, _ := newSubmission(t, SubmissionConfig{Config: Config{Transactions: tx, Refusals: refusals}}, st)
	c, err := gosmtp.Dial(serve(t, s))
	tcheck(t, err, "dial")
	defer c.Close()
	tcheck(t, c.Hello("client.example"), "ehlo")
	wantSMTPError(t, c.Mail("alice@a.example", nil), 530, "5.7.0", "Authentication required")
	wantSMTPError(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "wrong")), 535, "5.7.8", "credentials invalid")
	tcheck(t, c.Auth(sasl.NewPlainClient("", "alice@a.example", "alice-password")), "auth")
	tcheck(t, c.SendMail("alice@a.example", []string{"carol@b.example"}, strings.NewReader("Subject: s\r\n\r\nhello\r\n")), "send")

	wantCount(t, tx, 1, "submission", "accepted")
	wantCount(t, tx, 1, "submission", "refused")
	wantCount(t, refusals, 1, "submission", "mail")
	wantCount(t, refusals, 1, "submission", "auth")
	wantCount(t, tx, 0, "backbone", "accepted")
}

// TestDeliveryAttemptCounter: one attempt per recipient, by outcome.
func TestDeliveryAttemptCounter(t *testing.T) {
	st := queueStore(t)
	sk := startSink(t, "", nil)
	sk.mu.Lock()
	sk.rcptReply = func(rcpt string) error {
		switch rcpt {
		case "gone@route.test":
			return &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case "busy@route.test":
			return &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 2, 0}, Message: "try later"}
		}
		return nil
	}
	sk.mu.Unlock()
	attempts := metrics.NewCounter("hisp_queue_delivery_attempts_total", "a", "outcome")
	id := enqueue(t, st, nil, "alice@a.example", "carol@route.test", "gone@route.test", "busy@route.test")
	runDeliverer(t, DelivererConfig{Queue: st, Attempts: attempts, Routes: map[string]Route{"route.test": {Addr: sk.addr}}})
	waitState(t, st, id, "carol@route.test", inState(store.StateDelivered))
	waitState(t, st, id, "busy@route.test", func(r store.QueuedRecipient) bool { return r.State == store.StateQueued && r.Attempts == 1 })
	waitFor(t, "three attempts counted", func() bool {
		return attempts.Value("delivered")+attempts.Value("bounced")+attempts.Value("deferred") == 3
	})
	wantCount(t, attempts, 1, "delivered")
	wantCount(t, attempts, 1, "bounced")
	wantCount(t, attempts, 1, "deferred")
}
