package controller_test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// The event-driven mode with the warmer DaemonSet missing enters no node and says so at WARN; the
// DaemonSet's creation is an event, on which the node in maintenance is entered (the resync is 10
// minutes, so only the watch can do it). A dry run of the same mode then says what it would write
// and writes nothing.
func TestEventDrivenMissingWarmerThenDryRun(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.PoolNode("b")
	e.Maintenance("a")

	p := e.startProcess("orchestrator-0", "--resync", "10m")
	require.Eventually(t, func() bool { return strings.Contains(p.log(), `level=WARN msg="warmer DaemonSet `) }, time.Minute, 50*time.Millisecond,
		"the missing warmer is a warning:\n%s", p.log())
	e.RequireUntouched("a")
	e.Warmer()
	e.waitPhase("a", state.PhaseTainted)

	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
	<-p.exited
	require.NoError(t, p.err, "exit 0 on SIGTERM")

	e.Maintenance("b")
	dry := e.startProcess("orchestrator-1", "--resync", "10m", "--dry-run")
	would := "msg=\"dry run: would enter\" node=" + e.NodeName("b")
	require.Eventually(t, func() bool { return strings.Contains(dry.log(), would) }, time.Minute, 50*time.Millisecond,
		"the dry run says it would enter b:\n%s", dry.log())
	e.RequireUntouched("b")
	// Nor does it take the Lease orchestrator-0 released (a dry run from a workstation would
	// otherwise hold a live installation's replicas on standby).
	assert.NotEqual(t, "orchestrator-1", e.leader(), "a dry run takes no Lease")
}
