package pgtest

import "syscall"

// sysProcAttr runs initdb and postgres as cred (nil: this process's user),
// and has Linux send the postmaster SIGQUIT (immediate shutdown) when the
// test binary exits without Main stopping it, e.g. killed by a timeout.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGQUIT}
}
