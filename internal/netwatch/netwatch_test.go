package netwatch

import (
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"testing"
	"time"
)

// TestPeer: a watch ends when the client closes the connection, also
// through wrappers (TLS), and not while the client stays; cancel ends it.
func TestPeer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the TCP state is read on Linux only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if TCP(tls.Server(server, &tls.Config{})) != server {
		t.Fatal("TCP does not find the connection under TLS")
	}
	client.Write([]byte("a pipelined command\r\n")) // data waiting is no hang-up
	ctx, cancel := Peer(context.Background(), server)
	defer cancel()
	select {
	case <-ctx.Done():
		t.Fatal("the watch ended while the client stayed")
	case <-time.After(3 * Interval):
	}
	client.Close()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not see the client leave")
	}
}
