// Package metrics is what hisp needs of Prometheus, written by hand:
// counters with labels, safe for concurrent use, and a writer of the text
// exposition format (version 0.0.4). Gauges are not kept here: their
// owner computes them when scraped and hands them to Write as families,
// beside the counters' snapshots (Counter.Family).
//
// There is no registry and no package state: whoever serves /metrics
// holds its counters and passes them to the code that counts. A nil
// *Counter counts nothing, so counting is optional for that code.
package metrics

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// ContentType is the Content-Type of the text exposition format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Type is a metric family's TYPE.
type Type string

// The types hisp exposes.
const (
	TypeCounter Type = "counter"
	TypeGauge   Type = "gauge"
	TypeUntyped Type = "untyped"
)

// Family is one metric: its name, help text, type and samples. Every
// sample has one value per label name, in the order of Labels.
type Family struct {
	Name    string
	Help    string
	Type    Type
	Labels  []string // label names; none for a metric without labels
	Samples []Sample
}

// Sample is one time series of a family: its label values and its value.
type Sample struct {
	Values []string // one per Family.Labels
	Value  float64
}

// Write writes families in the text exposition format: a HELP and a TYPE
// line per family, then its samples. Families are sorted by name and
// samples by their label values, so the output is the same for the same
// input whatever its order. A family without samples is written with its
// HELP and TYPE lines only.
//
// Invalid input (a metric or label name outside the format's character
// set, a label name starting with "__", a sample with the wrong number of
// label values, two families of one name, two samples of one family with
// the same label values) is an error, and then nothing is written.
func Write(w io.Writer, fams []Family) error {
	sorted := make([]Family, len(fams))
	copy(sorted, fams)
	slices.SortFunc(sorted, func(a, b Family) int { return strings.Compare(a.Name, b.Name) })
	for i, f := range sorted {
		if err := checkFamily(f); err != nil {
			return err
		}
		if i > 0 && sorted[i-1].Name == f.Name {
			return fmt.Errorf("metrics: family %s given twice", f.Name)
		}
		samples := slices.Clone(f.Samples)
		slices.SortFunc(samples, func(a, b Sample) int { return slices.Compare(a.Values, b.Values) })
		for j := 1; j < len(samples); j++ {
			if slices.Equal(samples[j-1].Values, samples[j].Values) {
				return fmt.Errorf("metrics: %s: two samples with labels %q", f.Name, samples[j].Values)
			}
		}
		sorted[i].Samples = samples
	}
	bw := bufio.NewWriter(w)
	for _, f := range sorted {
		typ := f.Type
		if typ == "" {
			typ = TypeUntyped
		}
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", f.Name, escapeHelp(f.Help), f.Name, typ)
		for _, s := range f.Samples {
			bw.WriteString(f.Name)
			if len(f.Labels) > 0 {
				bw.WriteByte('{')
				for k, name := range f.Labels {
					if k > 0 {
						bw.WriteByte(',')
					}
					bw.WriteString(name)
					bw.WriteString(`="`)
					bw.WriteString(escapeLabelValue(s.Values[k]))
					bw.WriteByte('"')
				}
				bw.WriteByte('}')
			}
			bw.WriteByte(' ')
			bw.WriteString(FormatValue(s.Value))
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

func checkFamily(f Family) error {
	if !validMetricName(f.Name) {
		return fmt.Errorf("metrics: invalid metric name %q", f.Name)
	}
	switch f.Type {
	case "", TypeCounter, TypeGauge, TypeUntyped:
	default:
		return fmt.Errorf("metrics: %s: invalid type %q", f.Name, f.Type)
	}
	if err := checkLabelNames(f.Labels); err != nil {
		return fmt.Errorf("metrics: %s: %w", f.Name, err)
	}
	for _, s := range f.Samples {
		if len(s.Values) != len(f.Labels) {
			return fmt.Errorf("metrics: %s: sample with %d label values for %d labels", f.Name, len(s.Values), len(f.Labels))
		}
	}
	return nil
}

func checkLabelNames(names []string) error {
	for i, n := range names {
		if !validLabelName(n) {
			return fmt.Errorf("invalid label name %q", n)
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("label %q given twice", n)
		}
	}
	return nil
}

// validMetricName: [a-zA-Z_:][a-zA-Z0-9_:]*
func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// validLabelName: [a-zA-Z_][a-zA-Z0-9_]*, not starting with "__"
// (reserved for Prometheus' own use).
func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// escapeHelp escapes a HELP text: backslash and line feed. Invalid UTF-8
// becomes U+FFFD.
func escapeHelp(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}

// escapeLabelValue escapes a label value: backslash, double quote and
// line feed. Invalid UTF-8 becomes U+FFFD.
func escapeLabelValue(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// FormatValue formats a sample value as the format wants it: NaN, +Inf,
// -Inf; numbers in Go's shortest representation that reads back exactly,
// without exponent from 0.0001 up to 1e15 (counts, byte sizes and Unix
// times read as such), with one outside.
func FormatValue(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case a == 0 || a >= 1e-4 && a < 1e15:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// Counter is a counter metric with a fixed set of label names; each set of
// label values is one series. It is safe for concurrent use. The methods of
// a nil *Counter do nothing (and Value is 0).
type Counter struct {
	name, help string
	labels     []string

	mu     sync.RWMutex
	series map[string]*series // by seriesKey of the label values
}

type series struct {
	values []string
	n      atomic.Uint64
}

// NewCounter returns a counter. Its name should end in _total. It panics
// when the name or a label name is invalid: that is a mistake in the
// program, not in its input.
func NewCounter(name, help string, labels ...string) *Counter {
	if !validMetricName(name) {
		panic(fmt.Sprintf("metrics: invalid metric name %q", name))
	}
	if err := checkLabelNames(labels); err != nil {
		panic(fmt.Sprintf("metrics: %s: %v", name, err))
	}
	return &Counter{name: name, help: help, labels: slices.Clone(labels), series: map[string]*series{}}
}

// Inc adds 1 to the series of the label values, given in the order of the
// counter's label names. A wrong number of values panics.
func (c *Counter) Inc(values ...string) { c.Add(1, values...) }

// Add adds n to the series of the label values; Add(0, ...) makes the
// series appear in the output before its first event. A wrong number of
// values panics.
func (c *Counter) Add(n uint64, values ...string) {
	if c == nil {
		return
	}
	s := c.get(values)
	s.n.Add(n)
}

// Value returns the count of the series of the label values.
func (c *Counter) Value(values ...string) uint64 {
	if c == nil {
		return 0
	}
	c.check(values)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if s := c.series[seriesKey(values)]; s != nil {
		return s.n.Load()
	}
	return 0
}

// Family returns a snapshot of the counter for Write.
func (c *Counter) Family() Family {
	c.mu.RLock()
	defer c.mu.RUnlock()
	f := Family{Name: c.name, Help: c.help, Type: TypeCounter, Labels: slices.Clone(c.labels),
		Samples: make([]Sample, 0, len(c.series))}
	for _, s := range c.series {
		f.Samples = append(f.Samples, Sample{Values: slices.Clone(s.values), Value: float64(s.n.Load())})
	}
	return f
}

func (c *Counter) check(values []string) {
	if len(values) != len(c.labels) {
		panic(fmt.Sprintf("metrics: %s: %d label values for labels %q", c.name, len(values), c.labels))
	}
}

// get returns the series of the label values, making it on first use.
func (c *Counter) get(values []string) *series {
	c.check(values)
	key := seriesKey(values)
	c.mu.RLock()
	s := c.series[key]
	c.mu.RUnlock()
	if s != nil {
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s = c.series[key]; s == nil {
		s = &series{values: slices.Clone(values)}
		c.series[key] = s
	}
	return s
}

// seriesKey joins label values unambiguously: each is prefixed with its
// length.
func seriesKey(values []string) string {
	var b strings.Builder
	for _, v := range values {
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
	}
	return b.String()
}
