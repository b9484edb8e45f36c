package xdm

import (
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/hisp-project/hisp/internal/testccda"
)

// bigSubmission is a 5 MB C-CDA with a 20 MB PDF beside it.
func bigSubmission() Submission {
	return Submission{
		Author:     "alice@hospital.example",
		Recipients: []string{"bob@clinic.example"},
		Documents: []Document{
			{Name: "discharge-summary.xml", MimeType: "application/xml", Data: testccda.Big(5 << 20)},
			{Name: "imaging.pdf", MimeType: "application/pdf", Data: fakePDF(20 << 20)},
		},
	}
}

// packageAndOpen packages s and opens the package again, as the two ends
// of a message do.
func packageAndOpen(tb testing.TB, s Submission) int {
	zipped, _, err := Build(s)
	if err != nil {
		tb.Fatal(err)
	}
	pkg, err := Open(zipped, Limits{})
	if err != nil || !pkg.Valid() || len(pkg.Documents) != 2 {
		tb.Fatalf("open: %v", err)
	}
	return len(zipped)
}

// heapPeak samples the live heap while f runs and returns its largest
// value above the heap before f, and the bytes f allocated in all (which
// bounds the peak from above whatever the sampling misses).
func heapPeak(f func()) (peak, allocated uint64) {
	runtime.GC()
	samples := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(samples)
	base, alloc0 := samples[0].Value.Uint64(), samples[1].Value.Uint64()
	var mu sync.Mutex
	var top uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			mu.Lock()
			top = max(top, s[0].Value.Uint64())
			mu.Unlock()
			select {
			case <-done:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	f()
	close(done)
	wg.Wait()
	metrics.Read(samples)
	top = max(top, samples[0].Value.Uint64())
	if top < base {
		top = base
	}
	return top - base, samples[1].Value.Uint64() - alloc0
}

// TestPackageMemory: packaging and opening a 5 MB C-CDA with a 20 MB PDF
// allocates less than 4 times the package's size in all, so its peak is
// under that too (the documents themselves are the message's, held before
// and after).
func TestPackageMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("25 MB of documents")
	}
	s := bigSubmission()
	var size int
	peak, allocated := heapPeak(func() { size = packageAndOpen(t, s) })
	t.Logf("package %.1f MB; peak heap above the documents %.1f MB, allocated %.1f MB (%.2fx the package)",
		mb(size), mb(peak), mb(allocated), float64(allocated)/float64(size))
	if allocated > 4*uint64(size) {
		t.Fatalf("packaging and opening allocated %.1f MB, over 4x the package (%.1f MB)", mb(allocated), mb(size))
	}
}

func mb[T int | uint64](n T) float64 { return float64(n) / (1 << 20) }

// BenchmarkPackageAndOpen: package a 5 MB C-CDA with a 20 MB PDF and open
// the package again. Reports the package size and the peak heap above the
// documents, and their ratio.
func BenchmarkPackageAndOpen(b *testing.B) {
	s := bigSubmission()
	var in int
	for _, d := range s.Documents {
		in += len(d.Data)
	}
	b.SetBytes(int64(in))
	b.ReportAllocs()
	var size int
	var peak uint64
	for b.Loop() {
		p, _ := heapPeak(func() { size = packageAndOpen(b, s) })
		peak = max(peak, p)
	}
	b.ReportMetric(mb(size), "package-MB")
	b.ReportMetric(mb(peak), "peak-heap-MB")
	b.ReportMetric(float64(peak)/float64(size), "peak/package")
}

// BenchmarkBuild and BenchmarkOpen time the two halves.
func BenchmarkBuild(b *testing.B) {
	s := bigSubmission()
	b.SetBytes(int64(len(s.Documents[0].Data) + len(s.Documents[1].Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Build(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	zipped, _, err := Build(bigSubmission())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(zipped)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Open(zipped, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
