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

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A leader stopped (SIGTERM) keeps its Lease until it has stopped leading: its writes in flight
// have returned. Released as its context ends, the Lease would let a standby take over and plan
// while the old leader's writes still land.
func TestLeaseIsReleasedOnceLeadingHasStopped(t *testing.T) {
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	require.NoError(t, cfg.Validate())
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	tu.CopyingWatches(client)
	patching, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	// (The fake clientset answers one request at a time: the Lease is in a clientset of its own.)
	leases := fake.NewClientset()
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(patching) })
		<-unblock // the entry of node a is in flight
		return false, nil, nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Options{Config: cfg, Client: client, Logger: log})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, RunOptions{
			Options: Options{Config: cfg, Client: client, Engine: e, Logger: log},
			LeaderElection: LeaderElection{
				Enabled: true, Namespace: "prewarm", Name: "orchestrator", Identity: "replica-1",
				LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 100 * time.Millisecond,
				Client: leases,
			},
		})
	}()
	holder := func() string {
		l, err := leases.CoordinationV1().Leases("prewarm").Get(context.Background(), "orchestrator", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	select {
	case <-patching:
	case <-time.After(10 * time.Second):
		t.Fatal("node a was not entered")
	}
	require.Equal(t, "replica-1", holder())

	cancel() // SIGTERM while the patch is in flight
	time.Sleep(time.Second)
	assert.Equal(t, "replica-1", holder(), "the Lease is held while a write is in flight")
	select {
	case err := <-done:
		t.Fatalf("Run returned with a write in flight: %v", err)
	default:
	}

	close(unblock)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the write did")
	}
	assert.Empty(t, holder(), "released once leading stopped")
}

// A leader whose renewals fail (an API server that does not answer for the renew deadline, then
// does) is released by the elector before it cancels the leading context. The release waits
// until leading has stopped: a standby taking the Lease at once would plan while this leader's
// writes in flight still land.
func TestLeaseIsNotReleasedOnALostRenewalWhileWritesAreInFlight(t *testing.T) {
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	require.NoError(t, cfg.Validate())
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	tu.CopyingWatches(client)
	patching, unblock := make(chan struct{}), make(chan struct{})
	var once sync.Once
	leases := fake.NewClientset()
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		once.Do(func() { close(patching) })
		<-unblock // the entry of node a is in flight
		return false, nil, nil
	})
	var failRenewals atomic.Bool
	leases.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if failRenewals.Load() && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
			return true, nil, apierrors.NewServiceUnavailable("etcd is down")
		}
		return false, nil, nil
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Options{Config: cfg, Client: client, Logger: log})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	const renewDeadline = 2 * time.Second
	go func() {
		done <- Run(ctx, RunOptions{
			Options: Options{Config: cfg, Client: client, Engine: e, Logger: log},
			LeaderElection: LeaderElection{
				Enabled: true, Namespace: "prewarm", Name: "orchestrator", Identity: "replica-1",
				LeaseDuration: 3 * time.Second, RenewDeadline: renewDeadline, RetryPeriod: 100 * time.Millisecond,
				Client: leases,
			},
		})
	}()
	holder := func() string {
		l, err := leases.CoordinationV1().Leases("prewarm").Get(context.Background(), "orchestrator", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	select {
	case <-patching:
	case <-time.After(10 * time.Second):
		t.Fatal("node a was not entered")
	}
	require.Equal(t, "replica-1", holder())

	failRenewals.Store(true) // renewals fail from now on; the release would go through
	time.Sleep(renewDeadline + time.Second)
	assert.Equal(t, "replica-1", holder(), "not released while a write is in flight")
	select {
	case err := <-done:
		t.Fatalf("Run returned with a write in flight: %v", err)
	default:
	}

	close(unblock)
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrLeadershipLost)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once the write did")
	}
	assert.Empty(t, holder(), "released once leading stopped, within the renew deadline")
}
