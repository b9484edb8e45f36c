//go:build !linux || !cgo

package store

// keepFreedMemory tunes the C allocator on Linux (malloc_linux.go).
func keepFreedMemory() {}
