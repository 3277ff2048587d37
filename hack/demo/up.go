package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// settle is how long the view keeps running after the last release, so its final frame shows it.
const settle = 1500 * time.Millisecond

// Up runs the whole demo: set-up, the rolling upgrade under a live view, the summary.
func Up(ctx context.Context, o Options, out *os.File) error {
	began := time.Now()
	env, err := setUp(ctx, o, out)
	if err != nil {
		return err
	}
	runs := fmt.Sprintf("runs every %s", o.Cycle)
	if o.Mode == ModeDeployment {
		runs = "runs event-driven"
	}
	say(out, "set-up done in %s; now the orchestrator %s and the pipeline upgrades %d nodes, %d at a time",
		since(began), runs, len(env.poolNodes), o.BatchSize)

	logPath := filepath.Join(o.StateDir(), "orchestrator.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("creating orchestrator log %s: %w", logPath, err)
	}
	defer logFile.Close()

	rec := newRecorder()
	if err := rec.Start(ctx, env.cluster.Client, env.cfg.PoolSelector()); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var orch orchestrator = &cycler{binary: env.binary, config: env.configPath, kubeconfig: env.cluster.Kubeconfig,
		verbosity: env.verbosity, interval: o.Cycle, log: logFile}
	if o.Mode == ModeDeployment {
		orch = &follower{binary: env.binary, config: env.configPath, kubeconfig: env.cluster.Kubeconfig, namespace: o.Namespace,
			verbosity: env.verbosity, log: logFile}
	}
	view := &liveView{
		out:   out,
		tty:   o.TTY,
		size:  terminalSize(out),
		start: time.Now(),
		header: func(d time.Duration) []string {
			return []string{
				fmt.Sprintf("image-prewarmer demo  %s  cluster %s  %s", elapsed(d), o.ClusterName, orch.Status()),
				fmt.Sprintf("rolling upgrade of %d nodes (%s), %d at a time, kernel %s -> %s; Ctrl-C stops, the cluster stays up",
					len(env.poolNodes), labelString(env.cfg.Pool.NodeSelector), o.BatchSize, o.FromKernel, env.targetKernel),
			}
		},
	}
	if !o.TTY {
		say(out, "progress lines follow (on a terminal the status table redraws in place)")
	}

	var wg sync.WaitGroup
	wg.Go(func() { orch.Run(runCtx) })
	wg.Go(func() {
		if err := watchStatus(runCtx, view, env.binary, env.configPath, env.cluster.Kubeconfig, logFile); err != nil {
			view.Event("live view stopped: " + err.Error())
		}
	})

	tl := newTimeline()
	p := &pipeline{
		cluster: env.cluster, kernel: env.targetKernel, kernelLabel: env.cfg.Upgrade.KernelVersionLabel,
		drain: o.Drain, gap: o.RebootGap, timeline: tl, report: view.Event,
	}
	pipelineDone := make(chan error, 1)
	wg.Go(func() { pipelineDone <- p.Run(runCtx, batches(env.poolNodes, o.BatchSize)) })

	result := converge(ctx, o.Timeout, pipelineDone, func() []string { return unfinished(outcomes(env.poolNodes, tl, rec)) })
	took := time.Since(view.start)
	if result == nil {
		_ = pause(ctx, settle)
	}
	cancel()
	wg.Wait()
	view.Close()

	if !o.TTY {
		fmt.Fprintln(out)
		printStatus(ctx, out, env)
	}
	summarize(outcomes(env.poolNodes, tl, rec)).write(out, env.targetKernel, env.cfg.MaxWaitForWarm.Duration, took, env.cfg.Events.Namespace)
	fmt.Fprintf(out, "\n%s\n", orch.Summary(logPath))
	fmt.Fprintf(out, "The cluster stays up to explore (kubectl is the pinned one):\n  export KUBECONFIG=%s PATH=%s:$PATH\n", env.cluster.Kubeconfig, env.tools)
	fmt.Fprintf(out, "  kubectl get nodes -L %s,%s\n", env.cfg.StatusLabel.Key, env.cfg.Upgrade.KernelVersionLabel)
	fmt.Fprintf(out, "  %s status --all --config %s\n", env.binary, env.configPath)
	fmt.Fprintf(out, "make demo-down deletes it; make demo starts again from scratch.\n")
	return result
}

// converge waits until nothing is left unfinished (nil), the pipeline fails, the timeout passes
// or ctx ends (an error naming what is left).
func converge(ctx context.Context, timeout time.Duration, pipelineDone <-chan error, left func() []string) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-pipelineDone:
			if err != nil {
				return fmt.Errorf("upgrade pipeline: %w", err)
			}
			pipelineDone = nil
		case <-tick.C:
			if len(left()) == 0 {
				return nil
			}
		case <-deadline.C:
			return fmt.Errorf("not converged within %s: %s not released", timeout, strings.Join(left(), ", "))
		case <-ctx.Done():
			return fmt.Errorf("interrupted (%w); the cluster stays up, make demo-down deletes it", context.Cause(ctx))
		}
	}
}

// printStatus prints the final `status --all` table.
func printStatus(ctx context.Context, out io.Writer, env *demoEnv) {
	cmd := exec.CommandContext(context.WithoutCancel(ctx), env.binary, "status", "--all",
		"--config", env.configPath, "--kubeconfig", env.cluster.Kubeconfig)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(out, "status: %v\n", err)
	}
}

// terminalSize returns the size of the terminal f is, or 0, 0 when it is not one.
func terminalSize(f *os.File) func() (int, int) {
	return func() (int, int) {
		w, h, err := term.GetSize(int(f.Fd()))
		if err != nil {
			return 0, 0
		}
		return w, h
	}
}
