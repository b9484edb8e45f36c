package gateway

import "testing"

// TestIsNoticeMessage: the tracking leaves out exactly the messages the
// recipient's agent will not answer with an MDN (mdn.IsNotice). It used to
// leave out every multipart/report, and to track a notice whose
// Content-Type parameters did not parse.
func TestIsNoticeMessage(t *testing.T) {
	for ct, want := range map[string]bool{
		"multipart/report; report-type=disposition-notification; boundary=b": true,
		"multipart/report; report-type=delivery-status;\r\n boundary=\"b\"":  true,
		"multipart/report; report-type=feedback-report; boundary=b":          false, // was left out
		"multipart/report; report-type=delivery-status; boundary=b; =x":      true,  // was tracked
		"text/plain; charset=utf-8":                                          false,
	} {
		msg := []byte("From: bob@b.example\r\nTo: alice@a.example\r\nContent-Type: " + ct + "\r\n\r\nbody\r\n")
		if got := isNotice(msg); got != want {
			t.Errorf("%q: isNotice %v, want %v", ct, got, want)
		}
	}
}
