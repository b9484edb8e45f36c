package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hisp-project/hisp/mdn"
	"github.com/hisp-project/hisp/track"
)

func TestTrackCommand(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := "--data=" + dir
	st := openTestStore(t, dir)
	tr := track.New(track.Options{Store: st, WithholdProcessed: true})
	if _, err := tr.Track(ctx, track.Message{MessageID: "<t1@hospital.example>", Sender: "alice@hospital.example",
		Recipients: []string{"bob@clinic.example"}, RequestedDispatched: true,
		Failed: []track.FailedRecipient{{Address: "eve@untrusted.example", Reason: "550 5.7.1 no trusted certificate"}}}); err != nil {
		t.Fatal(err)
	}
	msg, err := mdn.BuildMDN(mdn.MDN{From: "bob@clinic.example", To: "alice@hospital.example",
		OriginalMessageID: "<t1@hospital.example>", Disposition: mdn.DispositionProcessed})
	if err != nil {
		t.Fatal(err)
	}
	n, err := mdn.ParseNotice(msg)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := tr.Notification(ctx, n); err != nil || !v.Tracked || v.File {
		t.Fatalf("processed: %+v %v", v, err)
	}
	if err := tr.Sent(ctx, "<t2@hospital.example>", "carol@hospital.example", []string{"dan@clinic.example"}, false); err != nil {
		t.Fatal(err)
	}

	code, out, stderr := runCLI(t, nil, "track", data)
	if code != 0 || !strings.Contains(out, "<t1@hospital.example>") || !strings.Contains(out, "<t2@hospital.example>") ||
		!strings.Contains(out, "processed") || !strings.Contains(out, "no trusted certificate") {
		t.Fatalf("track: %d\n%s%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, nil, "track", "--sender", "carol@hospital.example", "--since", "1h", data)
	if code != 0 || strings.Contains(out, "<t1@") || !strings.Contains(out, "dan@clinic.example") {
		t.Fatalf("track --sender: %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, nil, "track", "--state", "failed", data)
	if code != 0 || !strings.Contains(out, "<t1@") || strings.Contains(out, "<t2@") {
		t.Fatalf("track --state failed: %d\n%s", code, out)
	}
	// design.md's "delivered" is the relayed state.
	if code, _, stderr = runCLI(t, nil, "track", "--state", "Delivered", data); code != 0 {
		t.Fatalf("track --state delivered: %d %s", code, stderr)
	}

	// One message, with its history; the id with or without brackets.
	code, out, stderr = runCLI(t, nil, "track", "t1@hospital.example", data)
	if code != 0 {
		t.Fatalf("track t1: %d %s", code, stderr)
	}
	for _, want := range []string{"message <t1@hospital.example>", "processed and dispatched", "bob@clinic.example",
		"history of bob@clinic.example", "queued > processed", "withheld", "history of eve@untrusted.example", "pending", "failure"} {
		if !strings.Contains(out, want) {
			t.Errorf("track t1 lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = runCLI(t, nil, "track", "<t1@hospital.example>", "--json", data)
	var v track.MessageView
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil {
		t.Fatalf("track --json: %d %v\n%s", code, err, out)
	}
	if v.MessageID != "<t1@hospital.example>" || !v.DispatchedRequested || len(v.Recipients) != 2 ||
		v.Recipients[0].State != "processed" || len(v.Recipients[0].Events) != 2 || v.Recipients[0].Events[1].Notice != "withheld" ||
		v.Recipients[1].State != "failed" || v.Recipients[1].Outcome != "failure" {
		t.Fatalf("track --json:\n%s", out)
	}
	code, out, _ = runCLI(t, nil, "track", "--json", data)
	var list []track.MessageView
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 2 {
		t.Fatalf("track list --json: %d %v\n%s", code, err, out)
	}

	if code, _, stderr := runCLI(t, nil, "track", "<none@hospital.example>", data); code != 1 || !strings.Contains(stderr, "no tracked message") {
		t.Fatalf("unknown message: %d %s", code, stderr)
	}
	for _, bad := range [][]string{{"--state", "lost"}, {"--since", "yesterday"}, {"--limit", "0"}, {"a", "b"}} {
		if code, _, _ := runCLI(t, nil, append(append([]string{"track"}, bad...), data)...); code != 2 {
			t.Errorf("track %v: exit %d, want 2", bad, code)
		}
	}
}

func TestTokenCommands(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	data := "--data=" + dir
	openTestStore(t, dir)
	code, out, stderr := runCLI(t, nil, "token", "add", "ehr-one", data)
	token := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(token, "hisp_") || strings.Contains(token, "\n") || !strings.Contains(stderr, "shown once") {
		t.Fatalf("token add: %d %q %s", code, out, stderr)
	}
	if code, _, _ := runCLI(t, nil, "token", "add", "ehr-one", data); code != 1 {
		t.Fatal("duplicate token name accepted")
	}
	st := openTestStore(t, dir)
	if tk, err := st.CheckAPIToken(ctx, token); err != nil || tk.Name != "ehr-one" {
		t.Fatalf("printed token does not check: %+v %v", tk, err)
	}
	for _, f := range []string{"hisp.db", "hisp.db-wal"} {
		db, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if strings.Contains(string(db), token) {
			t.Fatalf("token stored in clear in %s", f)
		}
	}
	code, out, _ = runCLI(t, nil, "token", "list", data)
	if code != 0 || !strings.Contains(out, "ehr-one") || strings.Contains(out, token) {
		t.Fatalf("token list: %d\n%s", code, out)
	}
	if code, out, _ := runCLI(t, nil, "token", "list", "--json", data); code != 0 || !strings.Contains(out, `"name": "ehr-one"`) {
		t.Fatalf("token list --json: %d\n%s", code, out)
	}
	if code, _, stderr := runCLI(t, nil, "token", "remove", "ehr-one", data); code != 0 {
		t.Fatalf("token remove: %s", stderr)
	}
	if _, err := st.CheckAPIToken(ctx, token); err == nil {
		t.Fatal("removed token still valid")
	}
	if code, _, _ := runCLI(t, nil, "token", "remove", "ehr-one", data); code != 1 {
		t.Fatal("removed twice")
	}
	if code, _, _ := runCLI(t, nil, "token", "add", data); code != 2 {
		t.Fatal("token add without a name is not a usage error")
	}
	// A token for one domain's senders.
	if code, _, stderr := runCLI(t, nil, "token", "add", "lab-ehr", "--domain", "lab.example", data); code != 1 || !strings.Contains(stderr, "domain add") {
		t.Fatalf("token for an unknown domain: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "domain", "add", "lab.example", data); code != 0 {
		t.Fatal(stderr)
	}
	code, out, _ = runCLI(t, nil, "token", "add", "lab-ehr", "--domain", "Lab.Example", data)
	if tk, err := st.CheckAPIToken(ctx, strings.TrimSpace(out)); code != 0 || err != nil || len(tk.Domains) != 1 || tk.Domains[0] != "lab.example" {
		t.Fatalf("scoped token: %d %+v %v", code, tk, err)
	}
	if code, out, _ := runCLI(t, nil, "token", "list", data); code != 0 || !strings.Contains(out, "lab.example") {
		t.Fatalf("token list shows no scope:\n%s", out)
	}
}

func TestWebhookCommands(t *testing.T) {
	dir := t.TempDir()
	data := "--data=" + dir
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a long shared webhook secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	openTestStore(t, dir)
	code, out, stderr := runCLI(t, nil, "webhook", "add", "Hospital.example", "https://ehr.hospital.example/direct", "--secret-file", secret, data)
	if code != 0 || !strings.Contains(out, "added webhook 1: messages of hospital.example") {
		t.Fatalf("webhook add: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "webhook", "add", "alice@hospital.example", "https://alice.example/", "--secret-file", secret, data); code != 0 {
		t.Fatalf("webhook add address: %s", stderr)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"hospital.example", "https://ehr.hospital.example/direct", "--secret-file", secret}, 1}, // exists
		{[]string{"hospital.example", "https://x.example/", "--secret-file", short}, 1},
		{[]string{"hospital.example", "ftp://x.example/", "--secret-file", secret}, 1},
		{[]string{"hospital.example", "https://x.example/"}, 2},
		{[]string{"hospital.example"}, 2},
	} {
		if code, _, _ := runCLI(t, nil, append(append([]string{"webhook", "add"}, tc.args...), data)...); code != tc.code {
			t.Errorf("webhook add %v: exit %d, want %d", tc.args, code, tc.code)
		}
	}
	code, out, _ = runCLI(t, nil, "webhook", "list", data)
	if code != 0 || !strings.Contains(out, "hospital.example") || !strings.Contains(out, "alice@hospital.example") || strings.Contains(out, "long shared") {
		t.Fatalf("webhook list: %d\n%s", code, out)
	}
	if code, out, _ := runCLI(t, nil, "webhook", "list", "--json", data); code != 0 || !strings.Contains(out, `"pending": 0`) {
		t.Fatalf("webhook list --json: %d\n%s", code, out)
	}
	if code, _, stderr := runCLI(t, nil, "webhook", "remove", "1", data); code != 0 {
		t.Fatalf("webhook remove: %s", stderr)
	}
	if code, _, _ := runCLI(t, nil, "webhook", "remove", "1", data); code != 1 {
		t.Fatal("removed twice")
	}
	if code, _, _ := runCLI(t, nil, "webhook", "remove", "x", data); code != 2 {
		t.Fatal("bad id is not a usage error")
	}
}
