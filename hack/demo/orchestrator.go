package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// cycler runs the orchestrator for real, one `run --once` cycle every interval, as the chart's
// CronJob would on a much shorter schedule. Its output goes to log.
type cycler struct {
	binary, config, kubeconfig string
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
	cmd := exec.CommandContext(ctx, c.binary, "run", "--once",
		"--config", c.config, "--kubeconfig", c.kubeconfig, "--log-format", "text")
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

// Stats returns the cycles run so far.
func (c *cycler) Stats() cyclerStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cyclerStats{Cycles: c.cycles, Failures: c.failures, LastError: c.lastErr}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
