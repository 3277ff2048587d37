package controller_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A leader whose Lease another holder takes while it runs (a partition healed the other way, an
// operator's edit) stops at once and exits non-zero, naming the lost election, so that its
// restart stands for election again. Only the real API server's
// Lease semantics (optimistic concurrency on the Lease, renewTime) can show this.
func TestLeaderLosesItsLease(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	p := e.startProcess("orchestrator-0")
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == "orchestrator-0", nil
	}), "the process leads")

	// Another holder takes the Lease, renewed now and for a minute.
	require.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, err := e.client.CoordinationV1().Leases(e.Name).Get(e.Ctx, leaseName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity = ptr.To("someone-else")
		l.Spec.LeaseDurationSeconds = ptr.To[int32](60)
		l.Spec.AcquireTime, l.Spec.RenewTime = &now, &now
		_, err = e.client.CoordinationV1().Leases(e.Name).Update(e.Ctx, l, metav1.UpdateOptions{})
		return err
	}))
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second): // the renew deadline is 6 s
		t.Fatalf("the process did not stop after losing its Lease:\n%s", p.log())
	}
	var exit *exec.ExitError
	require.ErrorAs(t, p.err, &exit, "exit status")
	assert.NotZero(t, exit.ExitCode(), "a lost election is an error exit")
	assert.True(t, strings.Contains(p.log(), "leader election lost"), "the log says why:\n%s", p.log())
	assert.Equal(t, "someone-else", e.leader(), "the Lease is left to its holder")
}
