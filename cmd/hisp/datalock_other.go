//go:build !unix

package main

import "errors"

var errInUse = errors.New("in use")

// lockDataDir does nothing where flock is missing.
func lockDataDir(dir string) (unlock func(), err error) { return func() {}, nil }
