//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file in a data directory that a serving hisp holds
// locked, with its process id in it.
const lockFile = "hisp.lock"

// errInUse is returned (wrapped) by lockDataDir when another process serves
// the data directory.
var errInUse = errors.New("in use")

// lockDataDir takes the serving lock of a data directory (made if needed),
// so that a second hisp serve or sandbox on it stops before it starts
// anything; the kernel releases the lock when the process ends, however it
// ends. unlock releases it.
func lockDataDir(dir string) (unlock func(), err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	name := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(name)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another hisp"
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				who += fmt.Sprintf(" (process %d)", pid)
			}
			return nil, fmt.Errorf("data directory %s is %w by %s: stop it first, or use another --data DIR", dir, errInUse, who)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() { f.Close() }, nil
}
