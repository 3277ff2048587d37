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
