package metrics

import (
	"bytes"
	"io"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func write(t *testing.T, fams ...Family) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, fams); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestWriteFormat: HELP and TYPE per family, families by name, samples by
// label values, whatever order they came in.
func TestWriteFormat(t *testing.T) {
	got := write(t,
		Family{Name: "hisp_queue_recipients", Help: "Queue recipients by state.", Type: TypeGauge, Labels: []string{"state"},
			Samples: []Sample{{Values: []string{"queued"}, Value: 3}, {Values: []string{"delivered"}, Value: 10}}},
		Family{Name: "go_goroutines", Help: "Goroutines.", Type: TypeGauge, Samples: []Sample{{Value: 42}}},
		Family{Name: "hisp_smtp_transactions_total", Help: "SMTP transactions.", Type: TypeCounter, Labels: []string{"listener", "outcome"},
			Samples: []Sample{
				{Values: []string{"submission", "accepted"}, Value: 1},
				{Values: []string{"backbone", "refused"}, Value: 2},
				{Values: []string{"backbone", "accepted"}, Value: 5},
			}},
		Family{Name: "hisp_empty", Help: "No samples yet."},
	)
	want := `# HELP go_goroutines Goroutines.
# TYPE go_goroutines gauge
go_goroutines 42
# HELP hisp_empty No samples yet.
# TYPE hisp_empty untyped
# HELP hisp_queue_recipients Queue recipients by state.
# TYPE hisp_queue_recipients gauge
hisp_queue_recipients{state="delivered"} 10
hisp_queue_recipients{state="queued"} 3
# HELP hisp_smtp_transactions_total SMTP transactions.
# TYPE hisp_smtp_transactions_total counter
hisp_smtp_transactions_total{listener="backbone",outcome="accepted"} 5
hisp_smtp_transactions_total{listener="backbone",outcome="refused"} 2
hisp_smtp_transactions_total{listener="submission",outcome="accepted"} 1
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestWriteDoesNotChangeInput: sorting happens on copies.
func TestWriteDoesNotChangeInput(t *testing.T) {
	fams := []Family{
		{Name: "b", Labels: []string{"x"}, Samples: []Sample{{Values: []string{"2"}}, {Values: []string{"1"}}}},
		{Name: "a"},
	}
	write(t, fams...)
	if fams[0].Name != "b" || fams[0].Samples[0].Values[0] != "2" {
		t.Fatalf("input reordered: %+v", fams)
	}
}

func TestEscaping(t *testing.T) {
	got := write(t, Family{Name: "m", Help: "a \\ b\nc \"quoted\"", Type: TypeGauge, Labels: []string{"location"},
		Samples: []Sample{{Values: []string{"C:\\bundles\\\"x\".p7b\nnext \xff"}, Value: 1}}})
	want := "# HELP m a \\\\ b\\nc \"quoted\"\n# TYPE m gauge\n" +
		"m{location=\"C:\\\\bundles\\\\\\\"x\\\".p7b\\nnext \uFFFD\"} 1\n"
	if got != want {
		t.Fatalf("got:\n%q\nwant:\n%q", got, want)
	}
	if strings.Count(got, "\n") != 3 {
		t.Fatalf("a line feed leaked through:\n%s", got)
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{
		0:                "0",
		1:                "1",
		-3:               "-3",
		1.5:              "1.5",
		1767225600:       "1767225600",
		123456789012345:  "123456789012345",
		1e15:             "1e+15",
		0.001:            "0.001",
		0.0001:           "0.0001",
		0.00001:          "1e-05",
		1795663503.4:     "1795663503.4",
		-0.25:            "-0.25",
		math.Inf(1):      "+Inf",
		math.Inf(-1):     "-Inf",
		float64(1 << 53): "9.007199254740992e+15",
	} {
		if got := FormatValue(v); got != want {
			t.Errorf("FormatValue(%v) = %q, want %q", v, got, want)
		}
	}
	if got := FormatValue(math.NaN()); got != "NaN" {
		t.Errorf("NaN: %q", got)
	}
}

func TestWriteInvalid(t *testing.T) {
	for name, fams := range map[string][]Family{
		"metric name with dash":  {{Name: "hisp-queue"}},
		"metric name with digit": {{Name: "1hisp"}},
		"empty metric name":      {{Name: ""}},
		"label name with colon":  {{Name: "m", Labels: []string{"a:b"}}},
		"reserved label name":    {{Name: "m", Labels: []string{"__name"}}},
		"label twice":            {{Name: "m", Labels: []string{"a", "a"}}},
		"bad type":               {{Name: "m", Type: "histogram"}},
		"too few values":         {{Name: "m", Labels: []string{"a", "b"}, Samples: []Sample{{Values: []string{"x"}}}}},
		"values without labels":  {{Name: "m", Samples: []Sample{{Values: []string{"x"}}}}},
		"family twice":           {{Name: "m"}, {Name: "n"}, {Name: "m"}},
		"sample twice":           {{Name: "m", Labels: []string{"a"}, Samples: []Sample{{Values: []string{"x"}}, {Values: []string{"x"}, Value: 1}}}},
		"two unlabelled samples": {{Name: "m", Samples: []Sample{{Value: 1}, {Value: 2}}}},
	} {
		var b bytes.Buffer
		err := Write(&b, append([]Family{{Name: "a_valid_one", Samples: []Sample{{Value: 1}}}}, fams...))
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		if b.Len() != 0 {
			t.Errorf("%s: wrote %q before failing", name, b.String())
		}
	}
}

// lineRE is a sample line of the format as hisp writes it.
var lineRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*\})? (?:NaN|[+-]Inf|-?[0-9.]+(?:e[+-][0-9]+)?)$`)

func TestCounter(t *testing.T) {
	c := NewCounter("hisp_test_total", "Test events.", "listener", "outcome")
	c.Inc("backbone", "accepted")
	c.Inc("backbone", "accepted")
	c.Add(0, "submission", "refused")
	c.Add(5, "submission", "accepted")
	if got := c.Value("backbone", "accepted"); got != 2 {
		t.Errorf("backbone accepted = %d", got)
	}
	if got := c.Value("backbone", "failed"); got != 0 {
		t.Errorf("unseen series = %d", got)
	}
	got := write(t, c.Family())
	want := `# HELP hisp_test_total Test events.
# TYPE hisp_test_total counter
hisp_test_total{listener="backbone",outcome="accepted"} 2
hisp_test_total{listener="submission",outcome="accepted"} 5
hisp_test_total{listener="submission",outcome="refused"} 0
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	// Label values that would run together when joined plainly are
	// distinct series.
	c.Inc("ab", "c")
	c.Inc("a", "bc")
	if c.Value("ab", "c") != 1 || c.Value("a", "bc") != 1 {
		t.Fatal("series keys collide")
	}
}

func TestCounterWithoutLabels(t *testing.T) {
	c := NewCounter("hisp_things_total", "Things.")
	c.Inc()
	if got := write(t, c.Family()); !strings.HasSuffix(got, "\nhisp_things_total 1\n") {
		t.Fatalf("got:\n%s", got)
	}
}

func TestNilCounter(t *testing.T) {
	var c *Counter
	c.Inc("x")
	c.Add(3, "y", "z")
	if c.Value("x") != 0 {
		t.Fatal("nil counter counted")
	}
}

func TestCounterPanics(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", what)
			}
		}()
		f()
	}
	mustPanic("bad name", func() { NewCounter("hisp total", "x") })
	mustPanic("bad label", func() { NewCounter("hisp_total", "x", "a-b") })
	mustPanic("reserved label", func() { NewCounter("hisp_total", "x", "__a") })
	c := NewCounter("hisp_total", "x", "a")
	mustPanic("too many values", func() { c.Inc("1", "2") })
	mustPanic("too few values", func() { c.Inc() })
}

// TestCounterConcurrent counts from many goroutines while others take
// snapshots and write them (go test -race).
func TestCounterConcurrent(t *testing.T) {
	c := NewCounter("hisp_concurrent_total", "Concurrent events.", "worker", "outcome")
	const workers, each = 16, 2000
	outcomes := []string{"delivered", "deferred", "bounced"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				var b bytes.Buffer
				if err := Write(&b, []Family{c.Family()}); err != nil {
					t.Error(err)
					return
				}
				for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
					if !strings.HasPrefix(l, "#") && !lineRE.MatchString(l) {
						t.Errorf("bad line %q", l)
						return
					}
				}
			}
		}()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := string(rune('a' + w%4))
			for i := range each {
				c.Inc(worker, outcomes[i%len(outcomes)])
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	var total uint64
	for w := range 4 {
		for _, o := range outcomes {
			total += c.Value(string(rune('a'+w)), o)
		}
	}
	if total != workers*each {
		t.Fatalf("counted %d, want %d", total, workers*each)
	}
	if got := c.Value("a", "delivered"); got != 4*((each+2)/3) {
		t.Fatalf("a delivered = %d, want %d", got, 4*((each+2)/3))
	}
	if err := Write(io.Discard, []Family{c.Family()}); err != nil {
		t.Fatal(err)
	}
}

// TestOutputParses: everything Write makes from awkward input is lines of
// the format.
func TestOutputParses(t *testing.T) {
	out := write(t,
		Family{Name: "m1", Help: "h\nh", Labels: []string{"l"}, Samples: []Sample{
			{Values: []string{"\"\\\n"}, Value: math.Inf(1)}, {Values: []string{""}, Value: math.NaN()},
			{Values: []string{"x"}, Value: -0.25}, {Values: []string{"y"}, Value: 1e300}}},
		Family{Name: "m2:sub", Type: TypeCounter, Samples: []Sample{{Value: 7}}},
	)
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if strings.HasPrefix(l, "# HELP ") || strings.HasPrefix(l, "# TYPE ") {
			continue
		}
		if !lineRE.MatchString(l) {
			t.Errorf("line does not parse: %q", l)
		}
	}
}
