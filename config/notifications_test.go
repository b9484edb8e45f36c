package config

import (
	"strings"
	"testing"
	"time"
)

func TestNotificationsTable(t *testing.T) {
	c := Default()
	n := c.Notifications
	if n.ProcessedTimeout.Duration != time.Hour || n.DispatchedTimeout.Duration != time.Hour || !n.WithholdProcessed {
		t.Fatalf("defaults %+v", n)
	}
	c, err := Load(write(t, `
[notifications]
processed_timeout = "90m"
dispatched_timeout = "2h"
withhold_processed = false
check_interval = "1s"
webhook_retry_first = "30s"
`))
	if err != nil {
		t.Fatal(err)
	}
	n = c.Notifications
	if n.ProcessedTimeout.Duration != 90*time.Minute || n.DispatchedTimeout.Duration != 2*time.Hour || n.WithholdProcessed ||
		n.CheckInterval.Duration != time.Second || n.WebhookRetryFirst.Duration != 30*time.Second || n.WebhookGiveUp.Duration != 72*time.Hour {
		t.Fatalf("loaded %+v", n)
	}
	for _, tc := range []struct{ toml, want string }{
		{"[notifications]\nprocessed_timeout = \"0s\"\n", "notifications.processed_timeout"},
		{"[notifications]\ndispatched_timeout = \"soon\"\n", "hisp.toml"},
		{"[notifications]\ntimeout = \"1h\"\n", "unknown keys: notifications.timeout"},
	} {
		if _, err := Load(write(t, tc.toml)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.toml, err, tc.want)
		}
	}
}
