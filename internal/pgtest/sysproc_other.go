//go:build unix && !linux

package pgtest

import "syscall"

// sysProcAttr runs initdb and postgres as cred (nil: this process's user).
// A server left by a killed test binary is stopped by the next run's sweep.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
