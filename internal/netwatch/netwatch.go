// Package netwatch tells a server when the client of a connection has gone
// while the server is not reading from it: a session that waits (a login
// delay, its turn behind other attempts) ends its wait when the client
// closes or resets the connection, instead of holding the socket and its
// goroutine until the wait is over.
//
// On Linux the TCP state of the socket is read (TCP_INFO) a few times a
// second while a watch runs: a FIN from the peer moves it to CLOSE_WAIT, a
// reset to CLOSE. Reading the socket itself would consume what a client
// sent ahead (pipelined commands, TLS records). Elsewhere only the context
// ends a watch.
package netwatch

import (
	"context"
	"net"
	"time"
)

// Interval is how often a watched connection is looked at.
const Interval = 100 * time.Millisecond

// netConner is a connection wrapping another (tls.Conn, the servers'
// tracked and limited connections).
type netConner interface {
	NetConn() net.Conn
}

// TCP returns the TCP connection under c's wrappers, or nil.
func TCP(c net.Conn) *net.TCPConn {
	for c != nil {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case netConner:
			c = v.NetConn()
		default:
			return nil
		}
	}
	return nil
}

// Peer returns a context that ends with ctx or when the peer of c has
// closed or reset the connection, whichever comes first; call cancel to
// end the watch. Watch only while the server does not read c.
func Peer(ctx context.Context, c net.Conn) (context.Context, context.CancelFunc) {
	wctx, cancel := context.WithCancel(ctx)
	tc := TCP(c)
	if tc == nil {
		return wctx, cancel
	}
	if gone, ok := peerGone(tc); !ok {
		return wctx, cancel // the state cannot be read here
	} else if gone {
		cancel()
		return wctx, cancel
	}
	go func() {
		t := time.NewTicker(Interval)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			if gone, _ := peerGone(tc); gone {
				cancel()
				return
			}
		}
	}()
	return wctx, cancel
}
