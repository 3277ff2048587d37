package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

func nodeNames(n int) []string {
	var names []string
	for i := 1; i <= n; i++ {
		names = append(names, fmt.Sprintf("notebook-%02d", i))
	}
	return names
}

func TestBatches(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes int
		size  int
		want  []int
	}{
		{name: "even", nodes: 20, size: 5, want: []int{5, 5, 5, 5}},
		{name: "remainder last", nodes: 7, size: 3, want: []int{3, 3, 1}},
		{name: "batch larger than pool", nodes: 2, size: 5, want: []int{2}},
		{name: "one at a time", nodes: 3, size: 1, want: []int{1, 1, 1}},
		{name: "invalid size is one", nodes: 2, size: 0, want: []int{1, 1}},
		{name: "no nodes", nodes: 0, size: 5, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := nodeNames(tc.nodes)
			got := batches(nodes, tc.size)
			var sizes []int
			var flat []string
			for _, b := range got {
				sizes = append(sizes, len(b))
				flat = append(flat, b...)
			}
			assert.Equal(t, tc.want, sizes)
			assert.Equal(t, nodes, flat, "every node once, in order")
		})
	}
}

func TestBatchesDoNotAlias(t *testing.T) {
	nodes := nodeNames(4)
	got := batches(nodes, 2)
	got[0] = append(got[0], "extra")
	assert.Equal(t, "notebook-03", got[1][0], "appending to a batch must not overwrite the next one")
}

func TestSpan(t *testing.T) {
	assert.Equal(t, "", span(nil))
	assert.Equal(t, "a", span([]string{"a"}))
	assert.Equal(t, "a..c", span([]string{"a", "b", "c"}))
}

func TestSummarize(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	outs := []outcome{
		// Rebooted 4.7s after the taint; the annotations are to the second, so is the reboot.
		{Node: "n1", Tainted: at(0), Rebooted: at(4.7), Released: at(12), Reason: "warm"},
		{Node: "n2", Tainted: at(1), Rebooted: at(6), Released: at(10), Reason: "warm"},
		{Node: "n3", Tainted: at(2), Rebooted: at(7), Released: at(38), Reason: "timeout", LastError: "ImagePull: ErrImagePull"},
		// Tainted after its reboot: durations never go negative, and the row says so.
		{Node: "n4", Tainted: at(9), Rebooted: at(8), Released: at(15), Reason: "warm"},
		// Still warming.
		{Node: "n5", Tainted: at(3), Rebooted: at(9), Phase: "warming"},
	}
	s := summarize(outs)
	require.Len(t, s.Rows, 5)

	assert.Equal(t, summaryRow{Node: "n1", Closing: 4 * time.Second, Warming: 8 * time.Second,
		ClosingKnown: true, WarmingKnown: true, Reason: "warm"}, s.Rows[0])
	assert.Equal(t, 4*time.Second, s.Rows[1].Warming)
	assert.Equal(t, summaryRow{Node: "n3", Closing: 5 * time.Second, Warming: 31 * time.Second,
		ClosingKnown: true, WarmingKnown: true, Reason: "timeout", Note: "ImagePull: ErrImagePull"}, s.Rows[2])
	assert.Equal(t, time.Duration(0), s.Rows[3].Closing)
	assert.Equal(t, "upgraded before it was tainted", s.Rows[3].Note)
	assert.Equal(t, "-", s.Rows[4].Reason)
	assert.Contains(t, s.Rows[4].Note, "warming")
	assert.True(t, s.Rows[4].ClosingKnown)
	assert.False(t, s.Rows[4].WarmingKnown, "not released yet")

	assert.Equal(t, 3, s.Warm, "each warm release is a cold start avoided")
	assert.Equal(t, []string{"n3"}, s.Cold)
	assert.Equal(t, 8*time.Second, s.WarmingMax)
	assert.Equal(t, 6*time.Second, s.WarmingMean, "(8s + 4s + 7s) / 3, rounded")

	var b strings.Builder
	s.write(&b, "6.8.0-demo", 30*time.Second, 61*time.Second, "default")
	out := b.String()
	assert.Contains(t, out, "Summary after 1m1s: 4 of 5 pool nodes upgraded onto kernel 6.8.0-demo and released")
	assert.Regexp(t, `n5\s+6s\s+-\s+-\s+not released \(phase warming\)`, out)
	assert.Contains(t, out, "3 user-pod cold starts avoided")
	assert.Contains(t, out, "Released cold: n3, after maxWaitForWarm (30s)")
	assert.Contains(t, out, "--field-selector involvedObject.name=n3")
}

func TestUnfinished(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	done := outcome{Node: "done", Tainted: t0, Rebooted: t0.Add(time.Second), Released: t0.Add(5 * time.Second), Reason: "warm"}
	for _, tc := range []struct {
		name string
		o    outcome
		want bool
	}{
		{name: "released after its upgrade", o: done, want: true},
		{name: "not rebooted yet", o: outcome{Node: "x", Tainted: t0}},
		{name: "rebooted, still warming", o: outcome{Node: "x", Tainted: t0, Rebooted: t0, Phase: "warming"}},
		{name: "release recorded but still in a phase", o: outcome{Node: "x", Tainted: t0, Rebooted: t0, Released: t0, Reason: "warm", Phase: "tainted"}},
		{name: "released before this taint", o: outcome{Node: "x", Tainted: t0, Rebooted: t0, Released: t0.Add(-time.Hour), Reason: "warm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.o.finished())
		})
	}
	assert.Equal(t, []string{"x"}, unfinished([]outcome{done, {Node: "x"}}))
}

func TestSummaryAllReleased(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := summarize([]outcome{{Node: "n1", Tainted: t0, Rebooted: t0.Add(3 * time.Second), Released: t0.Add(9 * time.Second), Reason: "warm"}})
	var b strings.Builder
	s.write(&b, "6.8.0-demo", 30*time.Second, 20*time.Second, "default")
	assert.Contains(t, b.String(), "Summary: 1 pool nodes upgraded onto kernel 6.8.0-demo and released in 20s")
	assert.Regexp(t, `n1\s+3s\s+6s\s+warm`, b.String())
	assert.NotContains(t, b.String(), "Released cold")
}

func TestTransitions(t *testing.T) {
	prev := map[string]plan.NodeStatus{
		"a": {Name: "a", Phase: "tainted", Kernel: "6.5", BaselineKernel: "6.5"},
		"b": {Name: "b", Phase: "warming"},
		"c": {Name: "c"},
	}
	st := plan.Status{Nodes: []plan.NodeStatus{
		{Name: "a", Phase: "warming", Kernel: "6.8", BaselineKernel: "6.5", Warmer: "pending"},
		{Name: "b", Phase: "released", ReleaseReason: "warm"},
		{Name: "c"},                   // idle, unchanged: nothing
		{Name: "d"},                   // idle, first seen: nothing
		{Name: "e", Phase: "waiting"}, // first seen in a phase
		{Name: "f", Phase: "warming", Warmer: "ImagePull", LastProblem: "ImagePull: ErrImagePull"},
	}}
	got := transitions(prev, st)
	assert.Equal(t, []string{
		"a            tainted -> warming: upgrade seen (kernel 6.5 -> 6.8), warmer pod pending",
		"b            warming -> released (warm): warmer pod Ready, taint and label removed: open with the images on disk",
		"e            - -> waiting: in maintenance, to be tainted",
		"f            - -> warming: upgrade seen, warmer pod ImagePull",
		"f            problem: ImagePull: ErrImagePull",
	}, got)
}

func TestFrame(t *testing.T) {
	header := []string{"header"}
	events := []string{"e1"}
	table := []string{"t1", "t2", "t3", "t4", "t5"}

	t.Run("fits", func(t *testing.T) {
		got := frame(header, events, table, 0, 0)
		assert.Equal(t, []string{"header", "", "e1", "", "", "", "", "t1", "t2", "t3", "t4", "t5"}, got)
	})
	t.Run("table cut to the height", func(t *testing.T) {
		got := frame(header, events, table, 0, 11)
		require.Len(t, got, 10, "one line left for the cursor")
		assert.Equal(t, []string{"t1", "t2", "... 3 more lines: enlarge the terminal"}, got[7:])
	})
	t.Run("released nodes go first", func(t *testing.T) {
		table := []string{"totals", "NODE  PHASE", "n1    released (warm)  5s", "n2    warming  3s",
			"n2    problem", "n3    released (warm)  4s", "n4    tainted  1s"}
		got := frame(header, events, table, 0, 14)
		assert.Equal(t, []string{"totals", "NODE  PHASE", "n2    warming  3s", "n2    problem", "n4    tainted  1s",
			"... 2 released nodes not shown"}, got[7:])
	})
	t.Run("lines cut to the width", func(t *testing.T) {
		got := frame([]string{"0123456789"}, nil, nil, 4, 0)
		assert.Equal(t, "0123", got[0])
	})
}

func TestElapsed(t *testing.T) {
	assert.Equal(t, "+0:00", elapsed(0))
	assert.Equal(t, "+1:05", elapsed(65*time.Second+400*time.Millisecond))
}

func TestValidateMode(t *testing.T) {
	o, err := Defaults()
	require.NoError(t, err)
	require.NoError(t, o.Validate())
	o.Mode = ModeDeployment
	require.NoError(t, o.Validate())
	o.Mode = "daemonset"
	err = o.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `-mode: must be cronjob or deployment, got "daemonset"`)
}

func TestLastLineWriter(t *testing.T) {
	w := &lastLineWriter{}
	_, _ = w.Write([]byte("first\nsec"))
	assert.Equal(t, "sec", w.String(), "an unfinished line is the latest output")
	_, _ = w.Write([]byte("ond\nthird\n"))
	assert.Equal(t, "third", w.String())
	_, _ = w.Write([]byte("  \n"))
	assert.Equal(t, "third", w.String(), "a blank line does not hide the last message")
}

// script writes an executable shell script standing in for the orchestrator binary.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "orchestrator")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return path
}

func TestFollowerRestartsAnExitedProcess(t *testing.T) {
	var log strings.Builder
	// Each process's output is copied by one goroutine that ends before Run moves on, and log is
	// read once Run has returned.
	f := &follower{binary: script(t, `echo "starting $1"; echo "lost the API server" >&2; exit 1`), log: &log}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	// 2 or more: a poll can miss the moment the count is 2.
	restarted := regexp.MustCompile(`restarted ([2-9]|[1-9][0-9]+) times`)
	require.Eventually(t, func() bool { return restarted.MatchString(f.Status()) }, 10*time.Second, 50*time.Millisecond)
	cancel()
	<-done
	assert.Contains(t, f.Status(), "(last exit: lost the API server)")
	assert.Contains(t, log.String(), "starting run", "the process runs the event-driven mode, its output goes to the log")
	assert.Regexp(t, `^The orchestrator ran event-driven \(\d+ restarts\); its log: x.log$`, f.Summary("x.log"))
}

func TestFollowerStopsTheProcessGracefully(t *testing.T) {
	dir := t.TempDir()
	marker, ready := filepath.Join(dir, "stopped"), filepath.Join(dir, "ready")
	// Records SIGTERM and exits 0, as the orchestrator's graceful shutdown does; says when its
	// trap is in place.
	bin := script(t, `trap 'echo TERM > `+marker+`; exit 0' TERM; touch `+ready+`; while true; do sleep 0.05; done`)
	f := &follower{binary: bin, log: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	require.Eventually(t, func() bool { _, err := os.Stat(ready); return err == nil }, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("follower did not stop")
	}
	data, err := os.ReadFile(marker)
	require.NoError(t, err, "the process got SIGTERM")
	assert.Equal(t, "TERM\n", string(data))
	assert.Equal(t, "orchestrator: run (event-driven, as the chart's Deployment)", f.Status(), "a stop on request is no restart")
}
