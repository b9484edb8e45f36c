package netwatch

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerGone reads the socket's TCP state: anything but ESTABLISHED means
// the peer sent a FIN (CLOSE_WAIT) or a reset (CLOSE), or the socket is
// closed. ok is false when the state cannot be read.
func peerGone(c *net.TCPConn) (gone, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return false, false
	}
	var info *unix.TCPInfo
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return true, true // closed on our side
	}
	if gerr != nil {
		return false, false
	}
	return info.State != unix.BPF_TCP_ESTABLISHED, true
}
