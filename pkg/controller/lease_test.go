package controller

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// leaderWriting is the event-driven mode with leader election, as replica-1, on a pool whose node
// a is in maintenance, while a's entry is being written (held until unblock is closed). The Lease
// is in a clientset of its own (the fake clientset answers one request at a time); done receives
// Run's error.
type leaderWriting struct {
	leases  *fake.Clientset
	unblock chan struct{}
	cancel  context.CancelFunc
	done    chan error
}

// startLeaderWriting starts it, with leases for the Lease, and returns once a's entry is written.
func startLeaderWriting(t *testing.T, renewDeadline time.Duration, leases *fake.Clientset) *leaderWriting {
	t.Helper()
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	require.NoError(t, cfg.Validate())
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	tu.CopyingWatches(client)
	patching := make(chan struct{})
	l := &leaderWriting{leases: leases, unblock: make(chan struct{}), done: make(chan error, 1)}
	var once sync.Once
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(patching) })
		<-l.unblock // the entry of node a is in flight
		return false, nil, nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Options{Config: cfg, Client: client, Logger: log})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	t.Cleanup(cancel)
	go func() {
		l.done <- Run(ctx, RunOptions{
			Options: Options{Config: cfg, Client: client, Engine: e, Logger: log},
			LeaderElection: LeaderElection{
				Enabled: true, Namespace: "prewarm", Name: "orchestrator", Identity: "replica-1",
				LeaseDuration: renewDeadline + time.Second, RenewDeadline: renewDeadline, RetryPeriod: 100 * time.Millisecond,
				Client: leases,
			},
		})
	}()
	select {
	case <-patching:
	case <-time.After(10 * time.Second):
		t.Fatal("node a was not entered")
	}
	require.Equal(t, "replica-1", l.holder())
	return l
}

func (l *leaderWriting) holder() string {
	lease, err := l.leases.CoordinationV1().Leases("prewarm").Get(context.Background(), "orchestrator", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// running fails t if Run has returned.
func (l *leaderWriting) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-l.done:
		t.Fatalf("Run returned with a write in flight: %v", err)
	default:
	}
}

// finish lets the write return and returns Run's error.
func (l *leaderWriting) finish(t *testing.T) error {
	t.Helper()
	close(l.unblock)
	select {
	case err := <-l.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the write did")
		return nil
	}
}

// A leader stopped (SIGTERM) keeps its Lease until it has stopped leading: its writes in flight
// have returned. Released as its context ends, the Lease would let a standby take over and plan
// while the old leader's writes still land.
func TestLeaseIsReleasedOnceLeadingHasStopped(t *testing.T) {
	l := startLeaderWriting(t, 3*time.Second, fake.NewClientset())
	l.cancel() // SIGTERM while the patch is in flight
	time.Sleep(time.Second)
	assert.Equal(t, "replica-1", l.holder(), "the Lease is held while a write is in flight")
	l.running(t)
	require.NoError(t, l.finish(t))
	assert.Empty(t, l.holder(), "released once leading stopped")
}

// A leader whose renewals fail (an API server that does not answer for the renew deadline, then
// does) is released by the elector before it cancels the leading context. The release waits
// until leading has stopped: a standby taking the Lease at once would plan while this leader's
// writes in flight still land.
func TestLeaseIsNotReleasedOnALostRenewalWhileWritesAreInFlight(t *testing.T) {
	leases := fake.NewClientset()
	var failRenewals atomic.Bool
	leases.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		lease := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if failRenewals.Load() && lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
			return true, nil, apierrors.NewServiceUnavailable("etcd is down")
		}
		return false, nil, nil
	})
	const renewDeadline = 2 * time.Second
	l := startLeaderWriting(t, renewDeadline, leases)

	failRenewals.Store(true) // renewals fail from now on; the release would go through
	time.Sleep(renewDeadline + time.Second)
	assert.Equal(t, "replica-1", l.holder(), "not released while a write is in flight")
	l.running(t)
	require.ErrorIs(t, l.finish(t), ErrLeadershipLost)
	assert.Empty(t, l.holder(), "released once leading stopped, within the renew deadline")
}

// withLeaseTimings are short leader-election timings for the WithLease tests.
func withLeaseTimings(client *fake.Clientset) LeaderElection {
	return LeaderElection{Namespace: "prewarm", Name: "lease", Identity: "once-1", Client: client,
		LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond}
}

// A Lease whose holder keeps renewing it is never taken: the cycle does not run, and the error
// names the holder.
func TestWithLeaseHeldRunsNothing(t *testing.T) {
	now := metav1.NowMicro()
	client := fake.NewClientset(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "prewarm", Name: "lease"},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("replica-0"), LeaseDurationSeconds: ptr.To(int32(60)),
			AcquireTime: &now, RenewTime: &now},
	})
	ran := false
	err := WithLease(context.Background(), withLeaseTimings(client), 300*time.Millisecond, func(context.Context) error {
		ran = true
		return nil
	})
	require.ErrorIs(t, err, ErrLeaseHeld)
	assert.Contains(t, err.Error(), `lease prewarm/lease: held by another orchestrator ("replica-0") for 300ms`)
	assert.False(t, ran)
}

// The Lease lost mid-cycle (its renewals fail for the renew deadline) ends the cycle's context,
// and WithLease says so; it returns only once the cycle has.
func TestWithLeaseLostMidCycle(t *testing.T) {
	client := fake.NewClientset()
	var failing atomic.Bool
	client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, apierrors.NewServiceUnavailable("etcd leader changed")
		}
		return false, nil, nil
	})
	returned := false
	err := WithLease(context.Background(), withLeaseTimings(client), time.Minute, func(ctx context.Context) error {
		failing.Store(true)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // writes in flight finishing
		returned = true
		return ctx.Err()
	})
	require.ErrorIs(t, err, ErrLeadershipLost)
	assert.ErrorIs(t, err, context.Canceled, "the cycle's own error is kept")
	assert.Contains(t, err.Error(), "lease prewarm/lease: leader election lost mid-cycle (renewals failed for 500ms)")
	assert.True(t, returned, "WithLease waited for the cycle")
}

// A cycle that ends normally releases the Lease: the next run (or the other mode's leader) takes
// it at once rather than after the lease duration.
func TestWithLeaseReleasesTheLease(t *testing.T) {
	client := fake.NewClientset()
	le := withLeaseTimings(client)
	var holder string
	require.NoError(t, WithLease(context.Background(), le, time.Minute, func(ctx context.Context) error {
		lease, err := client.CoordinationV1().Leases("prewarm").Get(ctx, "lease", metav1.GetOptions{})
		require.NoError(t, err)
		holder = *lease.Spec.HolderIdentity
		return nil
	}))
	assert.Equal(t, "once-1", holder, "held during the cycle")
	lease, err := client.CoordinationV1().Leases("prewarm").Get(context.Background(), "lease", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, *lease.Spec.HolderIdentity, "released after it")
}
