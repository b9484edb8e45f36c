//go:build linux && cgo

package store

/*
#include <malloc.h>

static void keep_freed_memory(void) {
#ifdef M_TRIM_THRESHOLD
	mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
#ifdef M_MMAP_THRESHOLD
	mallopt(M_MMAP_THRESHOLD, 1 << 20);
#endif
}
*/
import "C"

// keepFreedMemory has the C allocator, where SQLite's page caches live,
// keep up to 64 MiB of freed memory for reuse instead of handing it back
// to the kernel, and serve allocations under 1 MiB from its heaps rather
// than from a mapping of their own. With the defaults (128 KiB each) a
// busy server's SQLite pages were returned and faulted in again all the
// time: about 2% of its CPU under the submission load of `hisp bench`.
// The process keeps what it used at its peak, as the Go heap does. A
// no-op where the C library ignores these settings.
func keepFreedMemory() { C.keep_freed_memory() }
