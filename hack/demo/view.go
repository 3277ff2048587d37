package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

// recentEvents is how many pipeline events the terminal view keeps under its header.
const recentEvents = 4

// liveView is what the demo shows while the upgrade runs. On a terminal it redraws in place: a
// header, the pipeline's latest events, and the latest `prewarm-orchestrator status --watch`
// table. Otherwise (a pipe, CI) it prints one line per pipeline event and per node transition
// read from `status --watch -o json`.
type liveView struct {
	out    io.Writer
	tty    bool
	size   func() (width, height int)
	start  time.Time
	header func(elapsed time.Duration) []string

	mu     sync.Mutex
	events []string
	table  []string
	nodes  map[string]plan.NodeStatus
	drawn  bool
}

// Event reports a step of the pipeline.
func (v *liveView) Event(msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	line := fmt.Sprintf("%s  %s", elapsed(time.Since(v.start)), msg)
	if !v.tty {
		fmt.Fprintln(v.out, line)
		return
	}
	v.events = append(v.events, line)
	if len(v.events) > recentEvents {
		v.events = v.events[len(v.events)-recentEvents:]
	}
	v.draw()
}

// Table shows a new status table (terminal mode).
func (v *liveView) Table(lines []string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.table = lines
	v.draw()
}

// Snapshot prints what changed since the previous status (line mode): phase transitions and new
// problems, one line each.
func (v *liveView) Snapshot(st plan.Status) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.nodes == nil {
		v.nodes = map[string]plan.NodeStatus{}
	}
	for _, line := range transitions(v.nodes, st) {
		fmt.Fprintf(v.out, "%s  %s\n", elapsed(time.Since(v.start)), line)
	}
	for _, n := range st.Nodes {
		v.nodes[n.Name] = n
	}
}

// Close leaves the terminal as it was found (cursor shown, below the last frame).
func (v *liveView) Close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tty && v.drawn {
		fmt.Fprint(v.out, "\x1b[?25h")
	}
}

// draw redraws the frame from the top left corner; callers hold mu.
func (v *liveView) draw() {
	width, height := v.size()
	lines := frame(v.header(time.Since(v.start)), v.events, v.table, width, height)
	var b strings.Builder
	if !v.drawn {
		b.WriteString("\x1b[2J\x1b[?25l")
		v.drawn = true
	}
	b.WriteString("\x1b[H")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\x1b[K\n")
	}
	b.WriteString("\x1b[J")
	fmt.Fprint(v.out, b.String())
}

// releasedRow matches a row of the status table for a released node.
var releasedRow = regexp.MustCompile(`^\S+\s+released\b`)

// frame lays out one screen: header, recent events, status table, each line cut to width, the
// table cut so the whole fits in height lines (a zero size means no limit). Released nodes are the
// first to go from a table that does not fit: the nodes still closed, and their problems, stay.
func frame(header, events, table []string, width, height int) []string {
	lines := append([]string{}, header...)
	lines = append(lines, "")
	lines = append(lines, events...)
	for range recentEvents - len(events) {
		lines = append(lines, "")
	}
	lines = append(lines, "")
	if room := height - 1 - len(lines); height > 0 && len(table) > room {
		var kept []string
		released := 0
		for _, l := range table {
			if releasedRow.MatchString(l) {
				released++
				continue
			}
			kept = append(kept, l)
		}
		if released > 0 {
			table = append(kept, fmt.Sprintf("... %d released nodes not shown", released))
		}
	}
	if room := height - 1 - len(lines); height > 0 && len(table) > room {
		if room < 1 {
			table = nil
		} else {
			hidden := len(table) - room + 1
			table = append(append([]string{}, table[:room-1]...), fmt.Sprintf("... %d more lines: enlarge the terminal", hidden))
		}
	}
	lines = append(lines, table...)
	if width > 0 {
		for i, l := range lines {
			if r := []rune(l); len(r) > width {
				lines[i] = string(r[:width])
			}
		}
	}
	return lines
}

// transitions describes how each node of st differs from prev: a new phase (or release reason),
// or a new problem. Idle nodes seen for the first time are not reported.
func transitions(prev map[string]plan.NodeStatus, st plan.Status) []string {
	var out []string
	for _, n := range st.Nodes {
		old, seen := prev[n.Name]
		if phaseOf(old) != phaseOf(n) && (seen || n.Phase != "") {
			out = append(out, fmt.Sprintf("%-12s %s -> %s: %s", n.Name, orDash(phaseOf(old)), phaseOf(n), explain(n)))
		}
		if n.LastProblem != "" && n.LastProblem != old.LastProblem {
			out = append(out, fmt.Sprintf("%-12s problem: %s", n.Name, oneLine(n.LastProblem, 400)))
		}
	}
	return out
}

// explain says what the node's new phase means, for a newcomer reading the progress lines.
func explain(n plan.NodeStatus) string {
	switch n.Phase {
	case "waiting":
		return "in maintenance, to be tainted"
	case "tainted":
		return "taint and status label added before the upgrade"
	case "warming":
		if n.BaselineKernel != "" && n.BaselineKernel != n.Kernel {
			return fmt.Sprintf("upgrade seen (kernel %s -> %s), warmer pod %s", n.BaselineKernel, n.Kernel, n.Warmer)
		}
		return "upgrade seen, warmer pod " + n.Warmer
	case "released":
		switch n.ReleaseReason {
		case "warm":
			return "warmer pod Ready, taint and label removed: open with the images on disk"
		case "timeout":
			return "no Ready warmer pod within maxWaitForWarm: opened cold, with a Warning Event"
		}
		return "taint and label removed"
	}
	return "warmer " + n.Warmer
}

func phaseOf(n plan.NodeStatus) string {
	if n.Phase == "released" && n.ReleaseReason != "" {
		return "released (" + n.ReleaseReason + ")"
	}
	return n.Phase
}

// elapsed formats a duration since the start as +m:ss.
func elapsed(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return fmt.Sprintf("+%d:%02d", s/60, s%60)
}

// watchStatus runs `prewarm-orchestrator status --watch --all` until ctx ends and feeds the view:
// the table on a terminal, JSON otherwise. Its errors go to errLog.
func watchStatus(ctx context.Context, v *liveView, binary, configPath, kubeconfig string, errLog io.Writer) error {
	format := "json"
	if v.tty {
		format = "table"
	}
	cmd := exec.CommandContext(ctx, binary, "status", "--watch", "--all", "--interval", "1s", "-o", format,
		"--config", configPath, "--kubeconfig", kubeconfig)
	cmd.Stderr = errLog
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("running status --watch: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("running status --watch: %w", err)
	}
	if v.tty {
		// Piped, status --watch -o table ends each table with an empty line.
		s := bufio.NewScanner(stdout)
		var block []string
		for s.Scan() {
			if s.Text() == "" {
				v.Table(block)
				block = nil
				continue
			}
			block = append(block, s.Text())
		}
	} else {
		dec := json.NewDecoder(stdout)
		for {
			var st plan.Status
			if err := dec.Decode(&st); err != nil {
				break
			}
			v.Snapshot(st)
		}
	}
	err = cmd.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("exited")
	}
	return fmt.Errorf("status --watch: %w", err)
}
