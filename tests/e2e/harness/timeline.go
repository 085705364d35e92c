package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Timeline records what happened, with seconds since the scenario started and since the current phase
// started, and prints every event as it happens so a run that hangs still shows how far it got.
type Timeline struct {
	mu         sync.Mutex
	start      time.Time
	phase      string
	phaseStart time.Time
	lines      []string
	file       io.Writer
}

func newTimeline(path string) *Timeline {
	t := &Timeline{start: time.Now(), phaseStart: time.Now()}
	if path != "" {
		if f, err := os.Create(path); err == nil {
			t.file = f
		}
	}
	return t
}

// Phase starts a new phase: later events also show the seconds since this call.
func (t *Timeline) Phase(name string) {
	t.mu.Lock()
	t.phase = name
	t.phaseStart = time.Now()
	t.mu.Unlock()
	t.emit(fmt.Sprintf("==== %s", name))
}

// Event records one step.
func (t *Timeline) Event(format string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	line := fmt.Sprintf("[%7.1fs | %-22s +%6.1fs] %s", now.Sub(t.start).Seconds(), t.phase,
		now.Sub(t.phaseStart).Seconds(), fmt.Sprintf(format, args...))
	t.mu.Unlock()
	t.emit(line)
}

func (t *Timeline) emit(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	fmt.Println("TIMELINE " + line)
	if t.file != nil {
		fmt.Fprintln(t.file, line)
	}
}

// Dump returns the whole timeline.
func (t *Timeline) Dump() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// phaseStat is one row of the summary printed at the end of the run.
type phaseStat struct {
	name       string
	start, end time.Time
	pending    []string // "<workload> <seconds>": pods created -> all Running
	grpc       grpcTotals
	measured   bool
}

// summaryTSV is the summary as tab-separated values (phase, seconds, pending -> Running, gRPC
// calls, server-side seconds, provider share in %), for comparing two runs (tests/e2e/compare.sh).
func summaryTSV(stats []*phaseStat) string {
	var b strings.Builder
	for _, st := range stats {
		d := st.end.Sub(st.start).Seconds()
		pend := strings.Join(st.pending, ", ")
		if pend == "" {
			pend = "-"
		}
		calls, secs, share := "-", "-", "-"
		if st.measured {
			calls = fmt.Sprint(st.grpc.calls)
			secs = fmt.Sprintf("%.3f", st.grpc.seconds)
			if d > 0 {
				share = fmt.Sprintf("%.3f", 100*st.grpc.seconds/d)
			}
		}
		fmt.Fprintf(&b, "%s\t%.1f\t%s\t%s\t%s\t%s\n", st.name, d, pend, calls, secs, share)
	}
	return b.String()
}

// summaryTable renders the per-phase summary: duration, pending -> Running per workload, and the
// provider's share of the phase (server-side seconds of CA's gRPC calls / phase duration).
func summaryTable(stats []*phaseStat) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| phase | duration | pending -> Running | gRPC calls | server-side gRPC time | provider share | most time in |\n")
	fmt.Fprintf(&b, "|---|---:|---|---:|---:|---:|---|\n")
	for _, st := range stats {
		d := st.end.Sub(st.start).Seconds()
		pend := strings.Join(st.pending, ", ")
		if pend == "" {
			pend = "-"
		}
		calls, secs, share, top := "-", "-", "-", "-"
		if st.measured {
			calls = fmt.Sprint(st.grpc.calls)
			secs = fmt.Sprintf("%.3f s", st.grpc.seconds)
			top = st.grpc.top()
			if d > 0 {
				share = fmt.Sprintf("%.3f %%", 100*st.grpc.seconds/d)
			}
		}
		fmt.Fprintf(&b, "| %s | %.1f s | %s | %s | %s | %s | %s |\n", st.name, d, pend, calls, secs, share, top)
	}
	return b.String()
}
