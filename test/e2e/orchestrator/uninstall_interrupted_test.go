package orchestrator_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The uninstall hook stopped while it sweeps (SIGTERM: Helm's hook deadline, a node drain) fails,
// and takes its uninstall mark off the warmer DaemonSet before it exits, over the real API
// server: the release Helm keeps goes on working instead of standing idle behind the mark.
func TestInterruptedUninstallRemovesItsMark(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	names := e.poolInMaintenance("u%d", 1)
	e.cycle()
	e.requirePhase(names[0], state.PhaseTainted, "upgrading")

	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(e.configYAML()), 0o600))
	cmd := exec.Command(framework.OrchestratorBinary(t), "cleanup", "--uninstall", "--settle", "60s",
		"--config", cfgPath, "--kubeconfig", cluster.Kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	marked := func() bool {
		ds, err := e.client.AppsV1().DaemonSets(e.Config.Warmer.Namespace).Get(e.Ctx, e.Config.Warmer.DaemonSetName, metav1.GetOptions{})
		require.NoError(t, err)
		_, ok := ds.Annotations[state.Uninstalling]
		return ok
	}
	e.eventually("the uninstall mark and the node's release", func() bool {
		return marked() && e.Node(names[0]).Annotations[state.ReleaseReason] == state.ReasonCleanup
	})
	// Sweeping (--settle 60s): stopped.
	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited // stderr is written until the process is gone
		t.Fatalf("cleanup did not stop on SIGTERM:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	require.True(t, errors.As(err, &exit), "exit status: %v\n%s", err, stderr.String())
	assert.NotZero(t, exit.ExitCode(), "an uninstall cut short is a failure:\n%s", stderr.String())
	assert.False(t, marked(), "the mark is taken off:\n%s", stderr.String())
}

// Entries of a running cycle that wait for the client's rate limiter when the uninstall begins
// are dropped, not written after the uninstall's last sweep: each is checked against the mark
// again once it has its token, over the real API server and the binary's own rate limiter. At
// 0.2 QPS the cycle's later entries would go out 5 s apart, each after the uninstall's sweeps
// (about 2 s apart) had found nothing twice and its 4 s settle had passed.
func TestUninstallStopsEntriesWaitingForTheRateLimiter(t *testing.T) {
	e := newEnv(t, func(cfg *config.Config) {
		qps := float32(0.2)
		cfg.Client.QPS, cfg.Client.Burst = &qps, 8 // the cycle's reads and a few entries
		cfg.Events.Transitions = false             // one request per entry
	})
	e.Warmer()
	names := e.poolInMaintenance("q%d", 8)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(e.configYAML()), 0o600))
	run := exec.Command(framework.OrchestratorBinary(t), "run", "--once", "--config", cfgPath, "--kubeconfig", cluster.Kubeconfig)
	var runErr bytes.Buffer
	run.Stderr = &runErr
	require.NoError(t, run.Start())
	ran := make(chan error, 1)
	go func() { ran <- run.Wait() }()
	t.Cleanup(func() { _ = run.Process.Kill() })

	tainted := func() (n int) {
		for _, s := range names {
			if state.HasTaint(e.Node(s), e.Config.Taint.Key, e.Config.Taint.Effect) {
				n++
			}
		}
		return n
	}
	e.eventually("the cycle's first entries", func() bool { return tainted() > 0 })
	require.Less(t, tainted(), len(names), "the rate limiter holds the later entries back")

	// The hook's own client is not limited (client.qps unset: none for the one-shot commands).
	e.Config.Client.QPS = nil
	hookCfg := filepath.Join(dir, "hook.yaml")
	require.NoError(t, os.WriteFile(hookCfg, []byte(e.configYAML()), 0o600))
	cleanup := runBinaryWith(t, []string{"cleanup", "--uninstall", "--settle", "4s", "--config", hookCfg, "--kubeconfig", cluster.Kubeconfig}, nil)
	require.Equal(t, 0, cleanup.code, cleanup.stderr)
	select {
	case err := <-ran:
		require.NoError(t, err, "the cycle drops its entries without failing:\n%s", runErr.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("run --once did not end:\n%s", runErr.String())
	}
	for _, s := range names {
		n := e.Node(s)
		assert.False(t, state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect), "%s is tainted after the uninstall", s)
		assert.Empty(t, n.Labels[e.Config.StatusLabel.Key], "%s keeps the status label after the uninstall", s)
	}
}
