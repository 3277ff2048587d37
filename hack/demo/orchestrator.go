package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// orchestrator is the orchestrator as the demo runs it: the chart's CronJob (cycler) or its
// Deployment (follower), both the real binary.
type orchestrator interface {
	// Run runs it until ctx ends.
	Run(ctx context.Context)
	// Status is the live view's one-line description of it.
	Status() string
	// Summary is the closing line about it, naming its log.
	Summary(logPath string) string
}

// cycler runs the orchestrator for real, one `run --once` cycle every interval, as the chart's
// CronJob would on a much shorter schedule. Its output goes to log.
type cycler struct {
	binary, config, kubeconfig string
	verbosity                  string // the chart's -v flag, or ""
	interval                   time.Duration
	log                        io.Writer

	mu       sync.Mutex
	cycles   int
	failures int
	lastErr  string
}

// cyclerStats is what the live view shows about the orchestrator.
type cyclerStats struct {
	Cycles, Failures int
	LastError        string
}

// Run cycles until ctx ends. A failed cycle is counted and shown, not fatal: the next one retries,
// as the CronJob's next Job would.
func (c *cycler) Run(ctx context.Context) {
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		c.cycle(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (c *cycler) cycle(ctx context.Context) {
	cmd := exec.CommandContext(ctx, c.binary, withVerbosity(c.verbosity, "run", "--once",
		"--config", c.config, "--kubeconfig", c.kubeconfig, "--log-format", "text")...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return
	}
	fmt.Fprint(c.log, out.String())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cycles++
	if err != nil {
		c.failures++
		c.lastErr = lastLine(out.String())
		if c.lastErr == "" {
			c.lastErr = err.Error()
		}
	}
}

// withVerbosity returns args with the -v flag v added when there is one.
func withVerbosity(v string, args ...string) []string {
	if v == "" {
		return args
	}
	return append(args, v)
}

// Stats returns the cycles run so far.
func (c *cycler) Stats() cyclerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cyclerStats{Cycles: c.cycles, Failures: c.failures, LastError: c.lastErr}
}

func (c *cycler) Status() string {
	st := c.Stats()
	s := fmt.Sprintf("orchestrator: run --once every %s, %d cycles, %d failed", c.interval, st.Cycles, st.Failures)
	if st.LastError != "" {
		s += " (last: " + oneLine(st.LastError, 60) + ")"
	}
	return s
}

func (c *cycler) Summary(logPath string) string {
	st := c.Stats()
	return fmt.Sprintf("The orchestrator ran %d cycles (%d failed); its log: %s", st.Cycles, st.Failures, logPath)
}

// follower runs the event-driven mode, `prewarm-orchestrator run`, as the chart's Deployment
// would (one replica; leader election on, its Lease in namespace): it reacts to each change
// instead of waiting for a cycle. Should the process exit, it is started again a second later,
// as the Deployment's pod would be, and the exit is shown. Its output goes to log.
type follower struct {
	binary, config, kubeconfig, namespace string
	verbosity                             string // the chart's -v flag, or ""
	log                                   io.Writer

	mu       sync.Mutex
	started  time.Time
	restarts int
	lastErr  string
}

// Run runs the process until ctx ends, then stops it with SIGTERM (a graceful shutdown that
// gives up the Lease), as the kubelet would.
func (f *follower) Run(ctx context.Context) {
	for ctx.Err() == nil {
		// --resync 2s: the timers (maxWaitForWarm) fire as promptly as in the CronJob mode's
		// 2-second cycles, where the default 30 s would hold the cold node back up to that long.
		cmd := exec.CommandContext(ctx, f.binary, withVerbosity(f.verbosity, "run", "--config", f.config, "--kubeconfig", f.kubeconfig,
			"--resync", "2s", "--listen", "127.0.0.1:0", "--leader-elect-namespace", f.namespace, "--log-format", "text")...)
		cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
		cmd.WaitDelay = 15 * time.Second
		last := &lastLineWriter{}
		cmd.Stdout = io.MultiWriter(f.log, last)
		cmd.Stderr = cmd.Stdout
		f.mu.Lock()
		f.started = time.Now()
		f.mu.Unlock()
		err := cmd.Run()
		if ctx.Err() != nil {
			return
		}
		f.mu.Lock()
		f.restarts++
		f.lastErr = last.String()
		if f.lastErr == "" && err != nil {
			f.lastErr = err.Error()
		}
		f.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

func (f *follower) Status() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := "orchestrator: run (event-driven, as the chart's Deployment)"
	if f.restarts > 0 {
		s += fmt.Sprintf(", restarted %d times (last exit: %s)", f.restarts, oneLine(f.lastErr, 60))
	}
	return s
}

func (f *follower) Summary(logPath string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("The orchestrator ran event-driven (%d restarts); its log: %s", f.restarts, logPath)
}

// lastLineWriter keeps the last complete line written to it.
type lastLineWriter struct {
	mu      sync.Mutex
	partial []byte
	last    string
}

func (w *lastLineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	if i := strings.LastIndexByte(string(w.partial), '\n'); i >= 0 {
		if l := lastLine(string(w.partial[:i])); l != "" {
			w.last = l
		}
		w.partial = append(w.partial[:0], w.partial[i+1:]...)
	}
	return len(p), nil
}

func (w *lastLineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if s := strings.TrimSpace(string(w.partial)); s != "" {
		return s
	}
	return w.last
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
