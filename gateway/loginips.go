package gateway

import (
	"context"
	"time"

	"github.com/hisp-project/hisp/internal/loginlimit"
	"github.com/hisp-project/hisp/store"
)

// loginIPRefresh is how often a node of a PostgreSQL store reads the
// known-good IPs other nodes remembered.
const loginIPRefresh = time.Minute

// rememberLoginIPs keeps the login limiter's known-good IPs in the store:
// those remembered before (by an earlier run, or by other nodes) are known
// at start, and each new one (loginlimit.Limiter.Remember) is written by
// the returned job, which on PostgreSQL also reads other nodes' every
// loginIPRefresh. So an owner's usual IP skips the gates that guesses at
// the account from elsewhere wait at, after a restart and on every node.
func (s *server) rememberLoginIPs(ctx context.Context, logins *loginlimit.Limiter) func(context.Context) error {
	load := func(ctx context.Context, since time.Time) time.Time {
		list, err := s.st.LoginIPs(ctx, since)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("read known-good login IPs", "err", err)
			}
			return since
		}
		for _, l := range list {
			logins.KnownGood(l.Name, l.IP, l.LastGood)
			since = l.LastGood
		}
		return since
	}
	since := load(ctx, time.Now().Add(-loginlimit.KnownGoodFor))
	news := make(chan store.LoginIP, 256)
	logins.Remember(func(name, ip string, at time.Time) bool {
		select {
		case news <- store.LoginIP{Name: name, IP: ip, LastGood: at}:
			return true
		default: // a burst of new IPs: offered again at the next login
			return false
		}
	})
	return func(ctx context.Context) error {
		var refresh <-chan time.Time
		if s.st.Location().Postgres() {
			t := time.NewTicker(loginIPRefresh)
			defer t.Stop()
			refresh = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return nil
			case l := <-news:
				if err := s.st.RememberLoginIP(ctx, l.Name, l.IP, l.LastGood, l.LastGood.Add(-loginlimit.KnownGoodFor)); err != nil && ctx.Err() == nil {
					s.log.Warn("remember known-good login IP", "err", err)
				}
			case <-refresh:
				// A minute back: another node's row may be written a
				// little after its time.
				if latest := load(ctx, since.Add(-loginIPRefresh)); latest.After(since) {
					since = latest
				}
			}
		}
	}
}
