package controller

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// testController returns a controller over a fake clientset, for pool "pool=notebooks" with
// the cordoned source only.
func testController(t *testing.T, client *fake.Clientset, dryRun bool) *Controller {
	t.Helper()
	return newTestController(t, client, nil, nil, dryRun)
}

// newTestController is testController with a dynamic client and a change to the configuration.
func newTestController(t *testing.T, client *fake.Clientset, dyn dynamic.Interface, mutate func(*config.Config), dryRun bool) *Controller {
	t.Helper()
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Options{Config: cfg, Client: client, Dynamic: dyn, Logger: log, DryRun: dryRun})
	require.NoError(t, err)
	c, err := New(Options{Config: cfg, Client: client, Dynamic: dyn, Engine: e, Logger: log})
	require.NoError(t, err)
	return c
}

// lead starts the informers and leads for d, then stops and waits for Lead to return.
func lead(t *testing.T, c *Controller, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	time.Sleep(d)
	cancel()
	wg.Wait()
}

func countPatches(client *fake.Clientset) int {
	n := 0
	for _, a := range client.Actions() {
		if _, ok := a.(k8stesting.PatchAction); ok {
			n++
		}
	}
	return n
}

// A write that keeps failing (RBAC, an admission webhook) is retried after retryAfterError, not
// at once in a loop: the loop would spend the client's whole rate budget on one node.
func TestFailedWriteIsNotRetriedInALoop(t *testing.T) {
	client := fake.NewClientset(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("denied"))
	})
	c := testController(t, client, false)
	lead(t, c, retryAfterError/2)
	assert.Equal(t, 1, countPatches(client), "one attempt, the next one after retryAfterError")
}

// --dry-run writes nothing, so nothing it plans is ever in flight: an adoption it would write
// must not hold back the entries of later plans, which it reports as a real run would write them.
func TestDryRunKeepsPlanning(t *testing.T) {
	client := fake.NewClientset(tu.Node("j", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)))
	c := testController(t, client, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx))
	c.Trigger()
	c.reconcile(ctx) // would adopt j
	c.wg.Wait()

	_, err := client.CoreV1().Nodes().Create(ctx, tu.Node("b", tu.WithLabels("pool", "notebooks"), tu.Cordoned()), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { _, err := c.poolNodes.Get("b"); return err == nil }, 5*time.Second, 10*time.Millisecond)
	c.Trigger()
	c.reconcile(ctx)
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Empty(t, c.ledger.inflight, "a dry run leaves nothing in flight")
	assert.False(t, c.ledger.entriesWaiting, "the entry of b is not held back by an adoption never written")
	assert.Zero(t, countPatches(client))
}

// A maintenance resource that is served but could not be read when the controller started (a
// timeout, a 5xx) is not an empty maintenance set: planning from one would record every node
// tainted for a NodeMaintenance as out of maintenance, and release it (cancelled) after
// cancelAfter, before its upgrade.
func TestUnreadableMaintenanceIsNotEmpty(t *testing.T) {
	n := tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test",
			state.MaintenanceID, "uid-nm", state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-1",
			state.TaintedAt, state.FormatTime(time.Now())))
	client := fake.NewClientset(n)
	mutate := func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.Enabled = true }
	gvr := sources.GVR(config.Default())
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenance",
		"metadata": map[string]any{"name": "nm", "uid": "uid-nm"},
		"spec":     map[string]any{"nodeName": "a"},
	}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"}, nm)
	failed := false
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if !failed {
			failed = true
			return true, nil, apierrors.NewInternalError(errors.New("etcd timeout"))
		}
		return false, nil, nil
	})
	c := newTestController(t, client, dyn, mutate, false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := c.Start(ctx); err == nil {
		var wg sync.WaitGroup
		wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
		time.Sleep(200 * time.Millisecond)
		cancel()
		wg.Wait()
	}
	assert.Zero(t, countPatches(client), "node a is still in maintenance: nothing to write")
}
