package mdn

import "testing"

// TestOwed pins when each MDN goes out (MDN-01, DN-01..DN-05, IN-03).
func TestOwed(t *testing.T) {
	const timely = "X-DIRECT-FINAL-DESTINATION-DELIVERY=optional,true"
	base := MDN{From: "bob@b.example", To: "alice@a.example", FinalRecipient: "bob@b.example", OriginalMessageID: "<m@a>"}
	for _, c := range []struct {
		name           string
		notice         bool
		from, options  string
		onFiled        []Disposition
		malformed      bool
		failedAfterAll bool
	}{
		{name: "plain message", from: "alice@a.example", onFiled: []Disposition{DispositionProcessed}, failedAfterAll: true},
		{name: "timely and reliable", from: "alice@a.example", options: timely,
			onFiled: []Disposition{DispositionProcessed, DispositionDispatched}, failedAfterAll: true},
		{name: "malformed request (DN-05)", from: "alice@a.example", options: "X-DIRECT-FINAL-DESTINATION-DELIVERY",
			onFiled: []Disposition{DispositionProcessed}, malformed: true, failedAfterAll: true},
		{name: "a notice (IN-03)", notice: true, from: "alice@a.example", options: timely},
		{name: "no From", options: timely},
	} {
		o := OwedFor(c.notice, c.from, c.options)
		got := o.OnFiled(base)
		if len(got) != len(c.onFiled) {
			t.Errorf("%s: on filing %d MDNs, want %v", c.name, len(got), c.onFiled)
			continue
		}
		for i, n := range got {
			if n.Disposition != c.onFiled[i] || n.FinalDestination != (n.Disposition == DispositionDispatched) ||
				n.From != base.From || n.To != base.To {
				t.Errorf("%s: MDN %d: %+v", c.name, i, n)
			}
		}
		if o.MalformedRequest != c.malformed {
			t.Errorf("%s: malformed %v", c.name, o.MalformedRequest)
		}
		f := o.OnFilingFailed(base, "mailbox full")
		if (f != nil) != c.failedAfterAll {
			t.Errorf("%s: failed MDN %+v", c.name, f)
		} else if f != nil && (f.Disposition != DispositionFailed || f.Failure != "mailbox full" || f.FinalDestination) {
			t.Errorf("%s: failed MDN %+v", c.name, f)
		}
	}
}

func TestLeaveToMDN(t *testing.T) {
	for _, c := range []struct {
		recipients, failed int
		reported, want     bool
	}{
		{2, 2, true, true},
		{2, 1, true, false},  // one copy filed: no refusal anyway, and not all failures are the MDN's
		{2, 2, false, false}, // a failed MDN could not be queued: the refusal stays
		{1, 0, true, false},
	} {
		if got := LeaveToMDN(c.recipients, c.failed, c.reported); got != c.want {
			t.Errorf("LeaveToMDN(%d, %d, %v) = %v", c.recipients, c.failed, c.reported, got)
		}
	}
}
