package main

import (
	"bufio"
	"bytes"
	"os"
	"regexp"
	"strings"
	"time"
)

// caLog reads cluster-autoscaler's log file (klog text format) so phases can check what CA itself
// decided and reported, not only its effects.
type caLog struct{ path string }

// mark is the current end of the log; lines written later are "since" it.
func (l *caLog) mark() int64 {
	if l == nil || l.path == "" {
		return 0
	}
	st, err := os.Stat(l.path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func (l *caLog) linesSince(off int64) []string {
	if l == nil || l.path == "" {
		return nil
	}
	data, err := os.ReadFile(l.path)
	if err != nil || off > int64(len(data)) {
		return nil
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data[off:]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

var klogHeader = regexp.MustCompile(`^([IWEF])(\d{2})(\d{2}) (\d{2}:\d{2}:\d{2}\.\d{6})`)

// klogTime parses the header of a klog line (local time, no year: the current one).
func klogTime(line string) (time.Time, bool) {
	m := klogHeader.FindStringSubmatch(line)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("2006 0102 15:04:05.000000", time.Now().Format("2006")+" "+m[2]+m[3]+" "+m[4], time.Local)
	return t, err == nil
}

// ourNeedles are the strings by which a CA log line names our RPCs, node groups or instances.
func (s *scenario) ourNeedles() []string {
	n := []string{"rpc error", "externalgrpc", "gRPC call", "NodeGroup", "cloudify://", "e2e-"}
	for _, g := range s.allGroups {
		n = append(n, g)
	}
	return n
}

// caErrorsNamingUs returns CA's error-level lines since off that name one of our RPCs, groups or
// instances.
func (s *scenario) caErrorsNamingUs(off int64) []string {
	var out []string
	for _, line := range s.caLog.linesSince(off) {
		if !strings.HasPrefix(line, "E") || !klogHeader.MatchString(line) {
			continue
		}
		for _, n := range s.ourNeedles() {
			if strings.Contains(line, n) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}

// caLinesContaining returns the lines since off that contain sub, with their klog times.
func (s *scenario) caLinesContaining(off int64, sub string) ([]string, []time.Time) {
	var lines []string
	var times []time.Time
	for _, line := range s.caLog.linesSince(off) {
		if strings.Contains(line, sub) {
			if t, ok := klogTime(line); ok {
				lines = append(lines, line)
				times = append(times, t)
			}
		}
	}
	return lines, times
}
