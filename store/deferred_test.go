package store

import (
	"context"
	"testing"
	"time"
)

func TestDeferred(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id, err := s.AddDeferred(ctx, Deferred{MessageID: "<d1@a.example>", MailFrom: "alice@a.example", User: "alice@a.example",
		Recipients: []string{"bob@b.example", "carol@c.example"}, Data: []byte("From: alice@a.example\r\n\r\nhi\r\n"), NextAttempt: now})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, dir) // durable across a restart
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	due, err := s.DueDeferred(ctx, now.Add(time.Second), 10)
	if err != nil || len(due) != 1 || due[0].ID != id || len(due[0].Recipients) != 2 || string(due[0].Data) != "From: alice@a.example\r\n\r\nhi\r\n" {
		t.Fatalf("due: %+v %v", due, err)
	}
	if err := s.RetryDeferred(ctx, id, []string{"carol@c.example"}, now.Add(time.Hour), "dns timeout"); err != nil {
		t.Fatal(err)
	}
	if due, _ := s.DueDeferred(ctx, now.Add(time.Minute), 10); len(due) != 0 {
		t.Fatalf("not due yet: %+v", due)
	}
	due, _ = s.DueDeferred(ctx, now.Add(2*time.Hour), 10)
	if len(due) != 1 || due[0].Attempts != 1 || due[0].Recipients[0] != "carol@c.example" || due[0].LastError != "dns timeout" {
		t.Fatalf("after retry: %+v", due)
	}
	if err := s.RemoveDeferred(ctx, id); err != nil {
		t.Fatal(err)
	}
	if due, _ := s.DueDeferred(ctx, now.Add(2*time.Hour), 10); len(due) != 0 {
		t.Fatal("removed but still due")
	}
}
