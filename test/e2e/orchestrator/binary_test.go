package orchestrator_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/controller"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

type result struct {
	code           int
	stdout, stderr string
}

func (e *env) runBinary(configYAML string, args ...string) result {
	e.T.Helper()
	dir := e.T.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(e.T, os.WriteFile(cfgPath, []byte(configYAML), 0o600))
	return runBinaryWith(e.T, append([]string{"--config", cfgPath}, args...), nil)
}

func runBinaryWith(t *testing.T, args []string, env []string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, framework.OrchestratorBinary(t), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), env...)
	err := cmd.Run()
	res := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		require.NoError(t, err)
	}
	return res
}

func (e *env) configYAML() string {
	e.T.Helper()
	b, err := yaml.Marshal(e.Config)
	require.NoError(e.T, err)
	return string(b)
}

// runOnce runs one cycle with the binary (`run --once`) on the installation's configuration and
// requires it to succeed.
func (e *env) runOnce() {
	e.T.Helper()
	res := e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(e.T, 0, res.code, res.stderr)
}

// lastLine is the one-line reason main prints on failure.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// 11. Unreachable API server: exit 1 with a one-line reason, not a wait for the server (a binary
// still waiting when runBinaryWith's deadline kills it exits -1, not 1).
func TestUnreachableAPIServer(t *testing.T) {
	e := newEnv(t)
	kubeconfig := framework.UnreachableKubeconfig(t)
	res := e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", kubeconfig)
	assert.Equal(t, 1, res.code, res.stderr)
	line := lastLine(res.stderr)
	assert.True(t, strings.HasPrefix(line, "prewarm-orchestrator: cycle not run: lease "), "the Lease is read first: %s", line)
	assert.Contains(t, line, "127.0.0.1:1")

	res = e.runBinary(e.configYAML(), "run", "--once", "--leader-elect=false", "--kubeconfig", kubeconfig)
	assert.Equal(t, 1, res.code, res.stderr)
	line = lastLine(res.stderr)
	assert.True(t, strings.HasPrefix(line, "prewarm-orchestrator: cycle failed: listing pool nodes"), "without the Lease: %s", line)
	assert.Contains(t, line, "127.0.0.1:1")
}

// 11b. run --once holds the installation's Lease for its cycle, as the event-driven mode's leader
// does: next to a live holder (that leader, during a mode switch; another cycle, such as a Job
// created by hand) it writes nothing and exits 1 naming the holder, after waiting twice the lease
// duration; a Lease whose holder stopped renewing it (a Job killed mid-cycle) it takes over once
// the lease duration has passed, runs its cycle, and releases the Lease.
func TestRunOnceHoldsTheLease(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	e.PoolNode("a")
	e.Maintenance("a")
	const name = "once-lease"
	le := controller.LeaderElection{
		Namespace: e.Config.Warmer.Namespace, Name: name, Identity: "the-leader", Client: cluster.Client,
		LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
	}
	args := []string{"run", "--once", "--kubeconfig", cluster.Kubeconfig, "--leader-elect-name", name,
		"--leader-elect-lease-duration", "3s", "--leader-elect-renew-deadline", "2s", "--leader-elect-retry-period", "500ms"}

	holding, stop := make(chan struct{}), make(chan struct{})
	held := make(chan error, 1)
	go func() {
		held <- controller.WithLease(e.Ctx, le, time.Minute, func(ctx context.Context) error {
			close(holding)
			select {
			case <-stop:
			case <-ctx.Done():
				return errors.New("the Lease was lost")
			}
			return nil
		})
	}()
	select {
	case <-holding:
	case err := <-held:
		require.NoError(t, err)
		t.Fatal("the holder returned before holding the Lease")
	}
	res := e.runBinary(e.configYAML(), args...)
	assert.Equal(t, 1, res.code, res.stderr)
	assert.Contains(t, lastLine(res.stderr), `prewarm-orchestrator: cycle not run: lease `+le.Namespace+"/"+name+`: held by another orchestrator ("the-leader") for 6s`)
	e.RequireUntouched("a")
	close(stop)
	require.NoError(t, <-held, "the holder kept the Lease throughout")
	lease, err := cluster.Client.CoordinationV1().Leases(le.Namespace).Get(e.Ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "released by its holder")

	// A holder killed mid-cycle: its Lease stays, unrenewed.
	now := metav1.NowMicro()
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds = ptr.To("killed-job"), ptr.To(int32(3))
	lease.Spec.AcquireTime, lease.Spec.RenewTime = &now, &now
	_, err = cluster.Client.CoordinationV1().Leases(le.Namespace).Update(e.Ctx, lease, metav1.UpdateOptions{})
	require.NoError(t, err)
	res = e.runBinary(e.configYAML(), args...)
	require.Equal(t, 0, res.code, res.stderr)
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	lease, err = cluster.Client.CoordinationV1().Leases(le.Namespace).Get(e.Ctx, name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, ptr.Deref(lease.Spec.HolderIdentity, ""), "released after the cycle")
	assert.Positive(t, ptr.Deref(lease.Spec.LeaseTransitions, 0), "taken over from the killed holder")
}

// 12. Invalid config: non-zero exit naming the field; nothing written.
func TestInvalidConfigWritesNothing(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	valid := e.configYAML()
	cases := []struct {
		name, config, field string
	}{
		{"unknown field", valid + "maxConcurent: 3\n", `unknown field "maxConcurent"`},
		{"bad duration", strings.Replace(valid, "maxWaitForWarm: 2h0m0s", "maxWaitForWarm: soon", 1), "maxWaitForWarm"},
		{"bad template", strings.Replace(valid, "upgrade: {}", "upgrade:\n  when: '{{ .Kernel'", 1), "upgrade.when"},
		{"empty pool selector", strings.Replace(valid, "e2e.image-prewarmer.io/pool: "+e.Name, "{}", 1), "pool.nodeSelector"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NotEqual(t, valid, tc.config, "the case must change the config")
			res := e.runBinary(tc.config, "run", "--once", "--kubeconfig", cluster.Kubeconfig)
			assert.Equal(t, 2, res.code, res.stderr)
			assert.Contains(t, lastLine(res.stderr), tc.field)
			e.RequireUntouched("a")
		})
	}
}

// 13. --dry-run prints the plan and writes nothing; the same run without it writes.
func TestDryRun(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	e.Maintenance("a")
	res := e.runBinary(e.configYAML(), "run", "--once", "--dry-run", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stdout, "1 action(s), nothing written")
	assert.Regexp(t, e.NodeName("a")+`\s+enter\s+nodeMaintenance`, res.stdout)
	assert.NotContains(t, res.stdout, e.NodeName("b"))
	e.RequireUntouched("a")
	require.Empty(t, e.Events("a", ""))

	res = e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", cluster.Kubeconfig, "--log-format", "json")
	require.Equal(t, 0, res.code, res.stderr)
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	assert.Contains(t, res.stderr, `"msg":"cycle complete"`)

	// status reads what the run wrote: as JSON, as the table, and in --watch's blocks.
	res = e.runBinary(e.configYAML(), "status", "-o", "json", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stdout, `"phase": "tainted"`)
	res = e.runBinary(e.configYAML(), "status", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Regexp(t, `(?m)^NODE\s+PHASE\s+IN PHASE\s+KERNEL\s+WARMER\s+MAINTENANCE\s+LAST PROBLEM$`, res.stdout)
	assert.Regexp(t, `(?m)^`+e.NodeName("a")+`\s+tainted\s+\S+\s+\S+\s+none\s+nodeMaintenance`, res.stdout)
	assert.NotContains(t, res.stdout, e.NodeName("b"), "only managed nodes (--all lists the pool)")
	watched := runWatchBlocks(t, 2, "--config", writeConfig(t, e.configYAML()), "status", "--watch", "--interval", "1s", "--kubeconfig", cluster.Kubeconfig)
	for _, block := range watched {
		assert.Regexp(t, `(?m)^`+e.NodeName("a")+`\s+tainted`, block)
	}

	// cleanup releases it.
	res = e.runBinary(e.configYAML(), "cleanup", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	e.RequireReleased("a", state.ReasonCleanup)
}

func TestHold(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "copy")
	res := runBinaryWith(t, []string{"hold", "--copy-to", dst}, nil)
	require.Equal(t, 0, res.code, res.stderr)
	info, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), info.Mode().Perm())

	for _, tc := range []struct {
		name string
		sig  syscall.Signal
	}{{"SIGINT", syscall.SIGINT}, {"SIGTERM", syscall.SIGTERM}} {
		t.Run(tc.name, func(t *testing.T) {
			// Started with SIGINT ignored (the shell execs hold, keeping the pid): the Go runtime
			// then installs no handler for it at start-up, and SIGINT shows as caught only once
			// the process has asked for it (signal.Notify), which makes the handler's installation
			// observable. With the default disposition the runtime catches SIGINT before main
			// runs, and a SIGINT sent then kills the process. (An ignored SIGINT stays ignored
			// unless the process asks for it: hold that did not would never be seen catching it,
			// and the wait would fail.)
			//
			// SIGTERM, what the kubelet sends, cannot be observed so: the runtime installs its
			// handler at start-up even where SIGTERM is ignored, and until signal.Notify asks for
			// it that handler kills the process. main asks for both in one signal.NotifyContext
			// call, SIGTERM first, so SIGINT caught means SIGTERM is asked for too.
			cmd := exec.Command("/bin/sh", "-c", `trap "" INT; exec "$0" hold`, dst)
			require.NoError(t, cmd.Start())
			t.Cleanup(func() { _ = cmd.Process.Kill() })
			waitSignalCaught(t, cmd.Process.Pid, filepath.Base(dst), syscall.SIGINT)
			require.NoError(t, cmd.Process.Signal(tc.sig))
			require.NoError(t, cmd.Wait(), "hold exits 0 on %s", tc.name)
		})
	}
}

// waitSignalCaught waits until the process pid runs the executable named name and catches sig
// (its SigCgt in /proc/<pid>/status, a hex mask where bit n-1 stands for signal n).
func waitSignalCaught(t *testing.T, pid int, name string, sig syscall.Signal) {
	t.Helper()
	if len(name) > 15 {
		name = name[:15] // the kernel keeps 15 bytes of the name (TASK_COMM_LEN)
	}
	var last string
	err := framework.Eventually(context.Background(), 30*time.Second, func(context.Context) (bool, error) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return false, err
		}
		last = string(b)
		fields := map[string]string{}
		for _, line := range strings.Split(last, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		if fields["Name"] != name {
			return false, nil // not exec'd yet
		}
		caught, err := strconv.ParseUint(fields["SigCgt"], 16, 64)
		if err != nil {
			return false, fmt.Errorf("SigCgt %q: %w", fields["SigCgt"], err)
		}
		return caught&(1<<(uint(sig)-1)) != 0, nil
	})
	require.NoError(t, err, "process %d (%s) catches %v; last /proc status:\n%s", pid, name, sig, last)
}

func writeConfig(t *testing.T, configYAML string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(p, []byte(configYAML), 0o600))
	return p
}

// runWatchBlocks runs the binary (a --watch command, piped: one block per interval, separated by
// a blank line) until it has printed n blocks, then stops it with SIGINT and returns them.
func runWatchBlocks(t *testing.T, n int, args ...string) []string {
	t.Helper()
	cmd := exec.Command(framework.OrchestratorBinary(t), args...)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var blocks []string
	var cur strings.Builder
	lines := bufio.NewScanner(out)
	for len(blocks) < n && lines.Scan() {
		if lines.Text() == "" {
			if cur.Len() > 0 {
				blocks = append(blocks, cur.String())
				cur.Reset()
			}
			continue
		}
		cur.WriteString(lines.Text() + "\n")
	}
	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	_, _ = io.Copy(io.Discard, out)
	require.NoError(t, cmd.Wait(), "--watch ends with exit 0 on SIGINT: %s", stderr.String())
	require.Len(t, blocks, n, "blocks printed: %s", stderr.String())
	return blocks
}
