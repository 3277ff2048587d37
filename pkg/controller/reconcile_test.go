package controller

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
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
	return newLoggingController(t, client, dyn, mutate, dryRun, io.Discard)
}

// newLoggingController is newTestController with its log written to w (text format).
func newLoggingController(t *testing.T, client *fake.Clientset, dyn dynamic.Interface, mutate func(*config.Config), dryRun bool, w io.Writer) *Controller {
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
	tu.CopyingWatches(client)
	if f, ok := dyn.(tu.Faked); ok {
		tu.CopyingWatches(f)
	}
	log := slog.New(slog.NewTextHandler(w, nil))
	e, err := engine.New(engine.Options{Config: cfg, Client: client, Dynamic: dyn, Logger: log, DryRun: dryRun})
	require.NoError(t, err)
	c, err := New(Options{Config: cfg, Client: client, Dynamic: dyn, Engine: e, Logger: log})
	require.NoError(t, err)
	return c
}

// lead starts the informers and leads for d, then stops and waits for Lead to return.
func lead(t *testing.T, c *Controller, d time.Duration) {
	t.Helper()
	stop := leading(t, c)
	time.Sleep(d)
	stop()
}

// leading starts the informers and Lead, and returns a function that stops them and waits for
// Lead to return.
func leading(t *testing.T, c *Controller) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Start(ctx); err != nil {
		cancel()
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	stop = func() {
		cancel()
		wg.Wait()
	}
	t.Cleanup(stop) // also when the test stops early
	return stop
}

// attempts records when a reactor was called.
type attempts struct {
	mu sync.Mutex
	at []time.Time
}

func (a *attempts) add() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at = append(a.at, time.Now())
}

func (a *attempts) times() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]time.Time(nil), a.at...)
}

// waitAttempts waits until at least n attempts were made, and returns the time of the nth.
func (a *attempts) waitAttempts(t *testing.T, n int) time.Time {
	t.Helper()
	require.Eventually(t, func() bool { return len(a.times()) >= n }, 10*time.Second, 10*time.Millisecond, "attempt %d", n)
	return a.times()[n-1]
}

// withWarmer returns a fake clientset holding objs and the default warmer DaemonSet: without it
// no node is entered.
func withWarmer(objs ...runtime.Object) *fake.Clientset {
	w := config.Default().Warmer
	return fake.NewClientset(append(objs, tu.DaemonSet(w.Namespace, w.DaemonSetName))...)
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

// A write that keeps failing (RBAC, an admission webhook) is retried first after retryAfterError,
// not at once in a loop: the loop would spend the client's whole rate budget on one node.
func TestFailedWriteIsNotRetriedInALoop(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	var patches attempts
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		patches.add()
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("denied"))
	})
	c := testController(t, client, false)
	stop := leading(t, c)
	// Judged by the times the attempts were sent, not by a count at some instant, which a loaded
	// machine could take late: a loop sends the second attempt at once.
	patches.waitAttempts(t, 2)
	stop()
	at := patches.times()
	for i := 1; i < len(at); i++ {
		if !assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), retryAfterError,
			"attempt %d came %s after the one before: one attempt, the next one after retryAfterError", i+1, at[i].Sub(at[i-1])) {
			break
		}
	}
}

// A write that the API server keeps refusing (the probe's case: a node whose annotations are too
// long for ours to fit) is retried after 1 s, then 2 s, 4 s, ... (see TestLedgerRetryBacksOff),
// and the log says when.
func TestFailedWriteBacksOff(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	var patches attempts
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		patches.add()
		return true, nil, errRefused
	})
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, nil, nil, false, log)
	// Attempts at 0 s, 1 s and 3 s; at a fixed second's retry the third would come at 2 s.
	// Judged by the gaps between the attempts' times, however late the load made each one.
	stop := leading(t, c)
	patches.waitAttempts(t, 3)
	stop()
	at := patches.times()
	for i := 1; i < len(at); i++ {
		wait := retryAfterError << (i - 1) // 1 s, 2 s, 4 s, ...
		if !assert.GreaterOrEqual(t, at[i].Sub(at[i-1]), wait, "attempt %d came %s after the one before, want at least %s", i+1, at[i].Sub(at[i-1]), wait) {
			break
		}
	}
	assert.Regexp(t, `(?s)msg="reconcile incomplete; retrying".*retryIn=1s.*msg="reconcile incomplete; retrying".*retryIn=2s`, log.String())
}

// A node deleted and created again under the same name (a cloud provider's upgrade may recreate
// the machine) is written at once, not after the retry time its predecessor's failed writes
// earned; also when the informers see the two as one update (a relist after a broken watch).
func TestRecreatedNodeDoesNotInheritTheBackoff(t *testing.T) {
	for _, relist := range []bool{false, true} {
		t.Run(map[bool]string{false: "delete and add", true: "update with a new UID"}[relist], func(t *testing.T) {
			client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
			var patches attempts
			client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
				patches.add()
				if len(patches.times()) <= 3 {
					return true, nil, errRefused
				}
				return false, nil, nil
			})
			c := testController(t, client, false)
			ctx := startLeading(t, c)
			// Refused at 0 s, 1 s and 3 s: the next attempt is due at 7 s.
			patches.waitAttempts(t, 3)
			nodes := client.CoreV1().Nodes()
			again := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
			again.UID = "second-machine"
			if relist {
				// The tracker takes the new object as an update; the informer sees a new UID.
				_, err := nodes.Update(ctx, again, metav1.UpdateOptions{})
				require.NoError(t, err)
			} else {
				require.NoError(t, nodes.Delete(ctx, "a", metav1.DeleteOptions{}))
				_, err := nodes.Create(ctx, again, metav1.CreateOptions{})
				require.NoError(t, err)
			}
			recreated := time.Now()
			fourth := patches.waitAttempts(t, 4)
			assert.Less(t, fourth.Sub(recreated), 2*time.Second, "the new node's entry waited for the old one's retry")
			require.Eventually(t, func() bool {
				n, err := nodes.Get(ctx, "a", metav1.GetOptions{})
				return err == nil && state.PhaseOf(n) == state.PhaseTainted
			}, 10*time.Second, 10*time.Millisecond, "the new node entered")
		})
	}
}

// gaugeValue returns the value of the metric family name (one series) in m, 0 when absent.
func gaugeValue(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			require.Len(t, f.GetMetric(), 1, name)
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// reconciles returns how many reconciles the controller has timed.
func reconciles(t *testing.T, m *metrics.Metrics) uint64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == "image_prewarmer_reconcile_duration_seconds" && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// lastSuccess is the gauge the stalled-reconcile alert reads.
const lastSuccess = "image_prewarmer_last_success_timestamp_seconds"

// lastSucceeded is the outcome of the last reconcile timed. The tests of a write that fails read
// it rather than lastSuccess: a whole-pool plan made while the node's first write is still in
// flight (a DaemonSet event of the informers' start-up asks for one) has nothing failing to hold
// it back, and counts as a success; the plans after the failure must not.
const lastSucceeded = "image_prewarmer_last_reconcile_succeeded"

// watchReconciles is how many reconciles the event-driven mode has counted in m.
func watchReconciles(t *testing.T, m *metrics.Metrics) uint64 {
	t.Helper()
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != metrics.Namespace+"_reconcile_duration_seconds" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "mode" && l.GetValue() == "watch" {
					return s.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0
}

// stillClockController returns a controller with metrics (returned too) whose ledger reads the
// returned clock, which stands still until the test moves it.
func stillClockController(t *testing.T, client *fake.Clientset) (*Controller, *metrics.Metrics, *atomic.Int64) {
	t.Helper()
	c := testController(t, client, false)
	m := metrics.New()
	c.metrics = m
	clock := new(atomic.Int64)
	clock.Store(time.Now().UnixNano())
	c.ledger.now = func() time.Time { return time.Unix(0, clock.Load()) }
	return c, m, clock
}

// A plan of the whole pool while a node's write keeps failing has nothing to hand out until the
// retry, but is no success: last_success_timestamp_seconds, which the alert on stalled
// reconciles reads, does not move for it, only once the write goes through.
func TestFailingWriteIsNoSuccess(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	var refuse atomic.Bool
	refuse.Store(true)
	var patches attempts
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !refuse.Load() {
			return false, nil, nil
		}
		patches.add()
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("denied"))
	})
	// The ledger's clock stands still until the test moves it: a's retry time does not come
	// however slowly the plans below run.
	c, m, clock := stillClockController(t, client)
	leading(t, c)
	patches.waitAttempts(t, 1)
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.ledger.backingOff([]plan.Action{{Node: "a"}})
	}, 5*time.Second, 5*time.Millisecond, "a's write waits for its retry")

	// A plan of the whole pool during the wait (a resync, another node's change).
	before := reconciles(t, m)
	c.Trigger()
	require.Eventually(t, func() bool { return reconciles(t, m) > before }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, gaugeValue(t, m, lastSucceeded), "no success while a's write is failing")
	assert.Equal(t, 1, countPatches(client), "the plan during the wait wrote nothing")

	refuse.Store(false)
	clock.Add(int64(time.Hour))
	c.Trigger()
	require.Eventually(t, func() bool { return gaugeValue(t, m, lastSucceeded) == 1 }, 10*time.Second, 10*time.Millisecond,
		"a success once the retry went through")
	assert.Positive(t, gaugeValue(t, m, lastSuccess))
}

// retryHanging returns a leading controller over cordoned pool node a, whose entry failed and
// whose retry is in flight now, hanging until the test ends (a webhook that times out, an API
// server that does not answer); and the metrics and the patch attempts.
func retryHanging(t *testing.T) (*fake.Clientset, *Controller, *metrics.Metrics, *attempts) {
	t.Helper()
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	patches := new(attempts)
	hold := make(chan struct{})
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		patches.add()
		if len(patches.times()) > 1 {
			<-hold // the retry hangs
		}
		return true, nil, apierrors.NewInternalError(errors.New("webhook timed out"))
	})
	c, m, clock := stillClockController(t, client)
	leading(t, c)
	// Cleanups run last added first: the retry returns before leading's stop waits for it.
	t.Cleanup(func() { close(hold) })
	patches.waitAttempts(t, 1)
	var retryAt time.Time
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		s, failing := c.ledger.failing["a"]
		retryAt = s.retryAt
		return failing
	}, 5*time.Second, 5*time.Millisecond, "a's write failed")

	clock.Store(retryAt.Add(time.Millisecond).UnixNano()) // its retry time has come
	c.Trigger()
	patches.waitAttempts(t, 2) // the retry, hanging
	return client, c, m, patches
}

// The retry of a failing write may take long: a plan of the whole pool meanwhile skips the node,
// which is in flight, and has nothing to hand out, but is no success either.
func TestRetryInFlightIsNoSuccess(t *testing.T) {
	_, c, m, _ := retryHanging(t)
	before := reconciles(t, m)
	c.Trigger()
	require.Eventually(t, func() bool { return reconciles(t, m) > before }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, gaugeValue(t, m, lastSucceeded), "no success while a's retry is in flight")
}

// The plan of the whole pool no longer wants the write whose retry is in flight (the node was
// uncordoned meanwhile): the retry may still land, and until it returns the plan is no success.
func TestRetryInFlightOfAWriteNoLongerPlannedIsNoSuccess(t *testing.T) {
	client, c, m, patches := retryHanging(t)
	// Through the tracker: the fake clientset's requests wait for the hanging patch's reactor.
	uncordoned := tu.Node("a", tu.WithLabels("pool", "notebooks"))
	require.NoError(t, client.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, uncordoned, ""))
	require.Eventually(t, func() bool {
		n, err := c.poolNodes.Get("a")
		return err == nil && !n.Spec.Unschedulable
	}, 5*time.Second, 5*time.Millisecond)
	before := reconciles(t, m)
	c.Trigger()
	require.Eventually(t, func() bool { return reconciles(t, m) > before }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, gaugeValue(t, m, lastSucceeded), "no success while a's retry is in flight")
	assert.Len(t, patches.times(), 2, "nothing more for a")
}

// A plan of the whole pool made while the warmer's revisions cannot be read counts no pod as
// warm, so it can release no node: it is no success, and the alert on stalled reconciles fires
// if the reads keep failing.
func TestUnreadRevisionsAreNoSuccess(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks")))
	var fail atomic.Bool
	fail.Store(true)
	var lists atomic.Int32
	client.PrependReactor("list", "controllerrevisions", func(k8stesting.Action) (bool, runtime.Object, error) {
		// The informer's list goes first (Start waits for it); the reads of revisionsFor fail.
		if lists.Add(1) > 1 && fail.Load() {
			return true, nil, apierrors.NewServiceUnavailable("etcd is down")
		}
		return false, nil, nil
	})
	c, m, _ := stillClockController(t, client)
	leading(t, c)
	require.Eventually(t, func() bool { return reconciles(t, m) > 0 }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, gaugeValue(t, m, lastSuccess), "no success while the revisions are not read")

	fail.Store(false)
	require.Eventually(t, func() bool { return gaugeValue(t, m, lastSuccess) > 0 }, 10*time.Second, 10*time.Millisecond,
		"a success once a read goes through (retried after a second)")
}

// --dry-run writes nothing, so nothing it plans is ever in flight: an adoption it would write
// must not hold back the entries of later plans, which it reports as a real run would write them.
func TestDryRunKeepsPlanning(t *testing.T) {
	client := withWarmer(tu.Node("j", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)))
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

// taintedForMaintenance returns node a of the pool, tainted by this installation for the
// NodeMaintenance nm, and a fake dynamic client serving nm.
func taintedForMaintenance() (*corev1.Node, *dynamicfake.FakeDynamicClient) {
	a := tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test",
			state.MaintenanceID, "uid-nm", state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-1",
			state.TaintedAt, state.FormatTime(time.Now())))
	gvr := sources.GVR(config.Default())
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": gvr.GroupVersion().String(), "kind": "NodeMaintenance",
		"metadata": map[string]any{"name": "nm", "uid": "uid-nm"},
		"spec":     map[string]any{"nodeName": "a"},
	}}
	return a, dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"}, nm)
}

// A maintenance resource that is served but could not be read when the controller started (a
// timeout, a 5xx) is not an empty maintenance set: planning from one would record every node
// tainted for a NodeMaintenance as out of maintenance, and release it (cancelled) after
// cancelAfter (0s here), before its upgrade. Nor does the process exit: it gets ready, leads,
// and plans without the source until a probe (one a second) reads it.
func TestUnreadableMaintenanceIsNotEmpty(t *testing.T) {
	n, dyn := taintedForMaintenance()
	client := withWarmer(n)
	mutate := func(cfg *config.Config) {
		cfg.Maintenance.NodeMaintenance.Enabled = true
		cfg.CancelAfter = config.NewDuration(0)
	}
	gvr := sources.GVR(config.Default())
	var lists atomic.Int32
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if lists.Add(1) <= 2 { // the probe at start-up, and the takeover's
			return true, nil, apierrors.NewInternalError(errors.New("etcd timeout"))
		}
		return false, nil, nil
	})
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, dyn, mutate, false, log)

	// Start gets ready (every replica crash-looping would release no warm node either), and
	// plans go without the source until a probe reads it, rather than from an empty one.
	leading(t, c)
	require.Eventually(t, func() bool {
		return strings.Contains(log.String(), "maintenance resource is now served; watching it")
	}, 10*time.Second, 10*time.Millisecond, log.String())
	c.Trigger()
	time.Sleep(200 * time.Millisecond)
	assert.Zero(t, countPatches(client), "node a is still in maintenance: nothing to write\n%s", log.String())
	assert.Equal(t, 1, strings.Count(log.String(), "probing the maintenance resource failed; no node is entered"), log.String())
}

// A replica that finds the maintenance resource not served probes for it again when it starts to
// lead, not a resync (30s) later: a standby may have seen the resource go away and come back.
func TestLeadProbesTheMaintenanceResource(t *testing.T) {
	client := fake.NewClientset()
	gvr := sources.GVR(config.Default())
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"})
	var served atomic.Bool
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		if !served.Load() {
			return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
		}
		return false, nil, nil
	})
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, dyn, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.Enabled = true }, false, log)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx), "a resource not served is an empty source, not an error")
	served.Store(true)
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	defer wg.Wait()
	defer cancel()
	require.Eventually(t, func() bool {
		return strings.Contains(log.String(), "maintenance resource is now served; watching it")
	}, 5*time.Second, 10*time.Millisecond, log.String())
}

// A replica that takes the lead after the maintenance resource became served (a standby that
// started before its CRD was installed) decides nothing that rests on maintenance until it knows
// the resource's objects: node a, tainted by the former leader for NodeMaintenance nm, stays in
// maintenance, not cancelled (cancelAfter 0s) by a plan that read the source as empty; the
// cordoned node c is entered only once the source is known. Node w, warm, is released meanwhile,
// its record of maintenance nm kept. The source is unknown while the informer the takeover
// started is syncing, while a probe fails (retried every second), and while the takeover's
// probe goes unanswered (it runs in the background: w's release does not wait for it). A replica whose informer's
// list keeps failing from start-up (the resource served, a conversion webhook down) gets ready
// and leads all the same after maintenanceSyncWait, with the source unknown until it syncs.
func TestTakeoverWaitsForTheMaintenanceSource(t *testing.T) {
	defer func(d time.Duration) { maintenanceSyncWait = d }(maintenanceSyncWait)
	maintenanceSyncWait = 300 * time.Millisecond
	for _, tc := range []struct {
		name    string
		slow    bool // the informer's list takes a while
		fail    bool // probes fail until the test lets them through
		atStart bool // served from the start; the informer's list fails until let through
		hang    bool // the takeover's probe gets no answer until the test lets it through
	}{
		{name: "informer syncing", slow: true},
		{name: "probe failing", fail: true},
		{name: "informer failing from start-up", atStart: true},
		{name: "probe unanswered", hang: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, dyn := taintedForMaintenance()
			w := tu.Node("w", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
				tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
				tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
					state.MaintenanceID, "uid-nm-w", state.BaselineKernel, "5.15.0-1", state.BaselineBootID, "boot-1",
					state.TaintedAt, state.FormatTime(time.Now()), state.UpgradedAt, state.FormatTime(time.Now()),
					state.StatusValues, "upgrading,warming"))
			warmer := config.Default().Warmer
			ds := tu.DaemonSet(warmer.Namespace, warmer.DaemonSetName)
			rev := tu.Revision(ds, 1, "h1")
			rev.Labels["app"] = ds.Name // the DaemonSet's selector, as its controller labels revisions
			client := withWarmer(a, w, tu.Node("c", tu.WithLabels("pool", "notebooks"), tu.Cordoned()),
				rev, tu.Pod(ds, "w", "h1", tu.Ready()))
			gvr := sources.GVR(config.Default())
			var served, failing, listFailing, hanging atomic.Bool
			hanging.Store(tc.hang)
			unhang := make(chan struct{})
			var failedProbes, servedLists atomic.Int32
			failing.Store(tc.fail)
			served.Store(tc.atStart)
			listFailing.Store(tc.atStart)
			listed := make(chan struct{})
			dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				switch {
				case !served.Load():
					return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
				case hanging.Load():
					select {
					case <-unhang:
					case <-time.After(20 * time.Second): // the test failed, without letting it through
					}
					return true, nil, apierrors.NewTimeoutError("the request timed out", 0)
				case failing.Load():
					failedProbes.Add(1)
					return true, nil, apierrors.NewInternalError(errors.New("etcd timeout"))
				case tc.slow && servedLists.Add(1) > 1:
					<-listed // the informer's list; the probe (the first) is answered
				case listFailing.Load() && servedLists.Add(1) > 1:
					return true, nil, apierrors.NewInternalError(errors.New("conversion webhook unreachable"))
				}
				return false, nil, nil
			})
			log := &tu.LogBuffer{}
			c := newLoggingController(t, client, dyn, func(cfg *config.Config) {
				cfg.Maintenance.NodeMaintenance.Enabled = true
				cfg.CancelAfter = config.NewDuration(0)
			}, false, log)
			m := metrics.New()
			c.metrics = m
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			require.NoError(t, c.Start(ctx), "standby: the resource is not served yet")
			served.Store(true) // its CRD installed; the former leader tainted a for nm
			// Before the takeover's probe, the first that can fail.
			leadStarted := time.Now()
			var wg sync.WaitGroup
			wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
			defer wg.Wait()
			defer cancel()

			// The takeover, and node events asking for plans: a probe each would hammer an API
			// server that is already failing.
			for i := range 30 {
				n, err := client.CoreV1().Nodes().Get(ctx, "c", metav1.GetOptions{})
				require.NoError(t, err)
				n.Labels["event"] = strconv.Itoa(i)
				_, err = client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
				require.NoError(t, err)
				time.Sleep(50 * time.Millisecond)
			}
			// w is released meanwhile, however long a loaded machine takes to get to it.
			var released *corev1.Node
			require.Eventually(t, func() bool {
				n, err := client.CoreV1().Nodes().Get(ctx, "w", metav1.GetOptions{})
				if err != nil || state.PhaseOf(n) != "" {
					return false
				}
				released = n
				return true
			}, 10*time.Second, 10*time.Millisecond, "w released while the maintenance source is unknown")
			assert.Equal(t, state.ReasonWarm, released.Annotations[state.ReleaseReason], "w released warm meanwhile")
			if tc.hang {
				// The unanswered probe is waited for by no plan, nor does it make plans spin: one
				// for each node event above, the takeover's, w's release and its follow-ups.
				assert.Less(t, watchReconciles(t, m), uint64(60), "plans while the probe hangs")
			}
			assert.Equal(t, "uid-nm-w", released.Annotations[state.MaintenanceID], "w's record of its maintenance kept")
			for name, phase := range map[string]string{"a": state.PhaseTainted, "c": ""} {
				n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
				require.NoError(t, err)
				assert.Equal(t, phase, state.PhaseOf(n), "%s while the maintenance source is unknown", name)
			}
			if tc.fail {
				assert.Equal(t, 1, strings.Count(log.String(), "probing the maintenance resource failed; no node is entered"), log.String())
				// The takeover's probe, then one each retryAfterError at most, however long the
				// events above took to send.
				probes := int(failedProbes.Load())
				most := 1 + int(time.Since(leadStarted)/retryAfterError)
				assert.LessOrEqual(t, probes, most, "a probe a second at most")
			}
			failing.Store(false)
			listFailing.Store(false)
			hanging.Store(false)
			close(unhang)
			close(listed)
			require.Eventually(t, func() bool {
				n, err := client.CoreV1().Nodes().Get(ctx, "c", metav1.GetOptions{})
				return err == nil && state.PhaseOf(n) == state.PhaseTainted
			}, 15*time.Second, 10*time.Millisecond, "planned once the source is known (an informer's list retried after its back-off)")
			got, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, state.PhaseTainted, got.Annotations[state.Phase], "still in maintenance nm")
			assert.NotContains(t, got.Annotations, state.LeftMaintenanceAt, "a never left maintenance nm")
		})
	}
}

// A wait for the maintenance source that lasts (its informer's list keeps failing or hanging) is
// said at WARN, once per resync; no node is entered meanwhile.
func TestLongWaitForTheMaintenanceSourceIsWarned(t *testing.T) {
	defer func(d time.Duration) { maintenanceWaitWarning = d }(maintenanceWaitWarning)
	maintenanceWaitWarning = 300 * time.Millisecond
	client := withWarmer(tu.Node("c", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	gvr := sources.GVR(config.Default())
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"})
	var served atomic.Bool
	var lists atomic.Int32
	hang := make(chan struct{})
	defer close(hang)
	dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
		switch {
		case !served.Load():
			return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
		case lists.Add(1) > 1:
			<-hang // the probe is answered; the informer's list never is
		}
		return false, nil, nil
	})
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, dyn, func(cfg *config.Config) { cfg.Maintenance.NodeMaintenance.Enabled = true }, false, log)
	c.resync = 200 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx))
	served.Store(true)
	started := time.Now() // the wait starts after this, at Lead's first plan
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	for range 75 {
		c.Trigger() // events asking for plans, between the resyncs
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	elapsed := time.Since(started)
	// Waiting from about 0 s, warned from maintenanceWaitWarning (0.3 s) on, and then at most
	// once per c.resync*9/10 (0.18 s), however many plans the events asked for (75 here).
	warning := regexp.MustCompile(`(?m)^time=(\S+) level=WARN msg="maintenance resource not read yet: no node is entered, and no tainted node leaves maintenance, until it is"`)
	var warned []time.Time
	for _, m := range warning.FindAllStringSubmatch(log.String(), -1) {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		require.NoError(t, err, m[0])
		warned = append(warned, at)
	}
	require.GreaterOrEqual(t, len(warned), 2, log.String())
	// The log's times are truncated to the millisecond.
	const truncated = time.Millisecond
	assert.GreaterOrEqual(t, warned[0].Sub(started), maintenanceWaitWarning-truncated,
		"first warned maintenanceWaitWarning after the wait started at the earliest\n%s", log.String())
	// Counted against the time the loop really took, which a loaded machine stretches: load can
	// only make fewer warnings, never more.
	most := 1 + int((elapsed-maintenanceWaitWarning)/(c.resync*9/10))
	assert.LessOrEqual(t, len(warned), most, "once per resync at most over %s\n%s", elapsed, log.String())
	assert.Zero(t, countPatches(client))
}

// A wait for the maintenance source ends with the first plan that has it read: a later wait is
// counted, and warned about, from its own start, not from the first wait's.
func TestMaintenanceWaitCountsFromItsOwnStart(t *testing.T) {
	c := &Controller{resync: 30 * time.Second}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	steps := []struct {
		at     time.Duration
		known  bool
		waited time.Duration
		warn   bool
	}{
		{at: 0, waited: 0},
		{at: 5 * time.Second, waited: 5 * time.Second},
		{at: maintenanceWaitWarning, waited: maintenanceWaitWarning, warn: true},
		{at: maintenanceWaitWarning + time.Second, waited: maintenanceWaitWarning + time.Second}, // warned a second ago
		{at: 40 * time.Second, waited: 40 * time.Second, warn: true},                             // a resync later
		{at: 41 * time.Second, known: true},
		{at: 100 * time.Second, waited: 0}, // a new wait
		{at: 105 * time.Second, waited: 5 * time.Second},
		{at: 100*time.Second + maintenanceWaitWarning, waited: maintenanceWaitWarning, warn: true},
	}
	for _, s := range steps {
		waited, warn := c.noteMaintenanceWait(at(s.at), s.known)
		assert.Equal(t, s.waited, waited, "at %s", s.at)
		assert.Equal(t, s.warn, warn, "at %s", s.at)
	}
}

// plansDone asks the leading controller for n whole-pool plans, one after the other, and waits
// for each to complete (c.metrics must be m): a check that something was not repeated then has
// the plans it counts on.
func plansDone(t *testing.T, c *Controller, m *metrics.Metrics, n int) {
	t.Helper()
	for range n {
		before := reconciles(t, m)
		c.Trigger()
		require.Eventually(t, func() bool { return reconciles(t, m) > before }, 5*time.Second, time.Millisecond, "a plan")
	}
}

// The event-driven mode plans from its DaemonSet cache as run --once does from a read: while the
// warmer DaemonSet does not exist no node is entered, and a warning says so (once, not at every
// reconcile); the DaemonSet's creation is an event that re-plans the pool, and the node is
// entered at once.
func TestMissingWarmerEntersNothingUntilItExists(t *testing.T) {
	client := fake.NewClientset(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, nil, nil, false, log)
	m := metrics.New()
	c.metrics = m
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
	defer wg.Wait()
	defer cancel()

	const warning = `level=WARN msg="warmer DaemonSet image-prewarmer/image-prewarmer-warmer not found: no node is tainted for maintenance until it exists (1 node(s) in maintenance are upgraded without pre-warming: a)"`
	require.Eventually(t, func() bool { return strings.Contains(log.String(), warning) }, 5*time.Second, 10*time.Millisecond, log.String())
	plansDone(t, c, m, 3)
	assert.Zero(t, countPatches(client), "nothing entered while the warmer is missing")
	assert.Equal(t, 1, strings.Count(log.String(), warning), "said once, not at every reconcile")
	assert.NotContains(t, log.String(), `node=""`)

	w := config.Default().Warmer
	_, err := client.AppsV1().DaemonSets(w.Namespace).Create(ctx, tu.DaemonSet(w.Namespace, w.DaemonSetName), metav1.CreateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		n, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
		return err == nil && state.PhaseOf(n) == state.PhaseTainted
	}, 5*time.Second, 10*time.Millisecond, "entered once the warmer exists")
}

// A pool selector that matches no node (a typo in the label) is said at WARN, naming the
// selector, once each time the pool becomes empty: not at every resync or plan.
func TestEmptyPoolIsWarnedOncePerTransition(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebook")))
	log := &tu.LogBuffer{}
	c := newLoggingController(t, client, nil, nil, false, log)
	m := metrics.New()
	c.metrics = m
	c.resync = 20 * time.Millisecond
	leading(t, c)
	ctx := context.Background()

	const warning = `level=WARN msg="no node matches the pool selector pool=notebooks: nothing to pre-warm until one does; check pool.nodeSelector against the nodes' labels"`
	warnings := func() int { return strings.Count(log.String(), warning) }
	plans := func(n int) { t.Helper(); plansDone(t, c, m, n) }
	require.Eventually(t, func() bool { return warnings() == 1 }, 5*time.Second, 10*time.Millisecond, log.String())
	plans(10)
	assert.Equal(t, 1, warnings(), "said once, not at every plan:\n%s", log.String())

	relabel := func(value string) {
		t.Helper()
		n, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
		require.NoError(t, err)
		n.Labels["pool"] = value
		_, err = client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		require.NoError(t, err)
	}
	// The label fixed: the pool has a node, and a whole-pool plan says nothing of it.
	relabel("notebooks")
	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.notes) == 0
	}, 5*time.Second, 10*time.Millisecond, "a whole-pool plan with the node")
	plans(5)
	assert.Equal(t, 1, warnings(), "nothing to say while the pool has a node:\n%s", log.String())

	// Empty again: said again, once.
	relabel("notebook")
	require.Eventually(t, func() bool { return warnings() == 2 }, 5*time.Second, 10*time.Millisecond, log.String())
	plans(10)
	assert.Equal(t, 2, warnings(), "once per transition to an empty pool:\n%s", log.String())
	assert.NotContains(t, log.String(), `node=`, "a note about the pool has no node attribute")
	assert.Zero(t, countPatches(client))
}

// A watched maintenance resource answered as not served (404) is not an empty source until probes
// confirm it for notServedConfirm: an API server that restarts answers 404 for a while for custom
// resources it serves, and node a, tainted for NodeMaintenance nm, would be taken out of
// maintenance and released cancelled (cancelAfter 0s) before its upgrade. Gone for good, the
// source is empty once confirmed, and a is released. A probe that fails meanwhile, and a takeover
// by a replica that saw the 404 while standing by, start the window again.
func TestMaintenanceNotServedIsConfirmed(t *testing.T) {
	defer func(d time.Duration) { notServedConfirm = d }(notServedConfirm)
	notServedConfirm = 2 * time.Second
	gvr := sources.GVR(config.Default())
	for _, tc := range []struct {
		name string
		// served ends the 404s half-way through the window; failing answers the probes with
		// an error (neither served nor not) for that long half-way through it, then 404 again.
		served  bool
		failing time.Duration
		// standby is how long the replica stands by after the 404 before it leads: it must
		// confirm the 404 from then on (it did not probe meanwhile).
		standby time.Duration
		// fromStart answers 404 from the start: the resource is never watched, and the
		// leader's first probe confirms it, as a (tainted for nm) records one of its objects.
		fromStart bool
	}{
		{name: "passing 404", served: true},
		{name: "gone"},
		// A probe error is no answer: the 404s must last the whole window after it.
		{name: "gone, a probe failing meanwhile", failing: 3 * retryAfterError / 2},
		{name: "gone while standing by", standby: 3 * notServedConfirm / 2},
		{name: "not served from the start", fromStart: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, dyn := taintedForMaintenance()
			client := withWarmer(a)
			var notFound, failing atomic.Bool
			var mu sync.Mutex
			var lastFailed time.Time
			dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				if failing.Load() {
					mu.Lock()
					lastFailed = time.Now()
					mu.Unlock()
					return true, nil, apierrors.NewInternalError(errors.New("etcd is restarting"))
				}
				if notFound.Load() {
					return true, nil, apierrors.NewNotFound(gvr.GroupResource(), "")
				}
				return false, nil, nil
			})
			log := &tu.LogBuffer{}
			c := newLoggingController(t, client, dyn, func(cfg *config.Config) {
				cfg.Maintenance.NodeMaintenance.Enabled = true
				cfg.CancelAfter = config.NewDuration(0)
			}, false, log)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			notFound.Store(tc.fromStart)
			require.NoError(t, c.Start(ctx))
			var wg sync.WaitGroup
			defer wg.Wait()
			defer cancel()
			if tc.fromStart {
				goneAt := time.Now()
				wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
				require.Eventually(t, func() bool {
					n, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
					return err == nil && n.Annotations[state.ReleaseReason] == state.ReasonCancelled
				}, 5*notServedConfirm, 20*time.Millisecond, log.String())
				assert.GreaterOrEqual(t, time.Since(goneAt), notServedConfirm, "released only once confirmed\n%s", log.String())
				assert.Contains(t, log.String(), "confirming before its source counts as empty")
				return
			}
			if tc.standby == 0 {
				wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
			}

			// The informer's watch is answered 404 (its error handler calls maintenanceGone).
			notFound.Store(true)
			c.nmMu.Lock()
			inf := c.nmInformer
			c.nmMu.Unlock()
			require.NotNil(t, inf)
			goneAt := time.Now()
			c.maintenanceGone(inf, apierrors.NewNotFound(gvr.GroupResource(), ""))
			require.Eventually(t, inf.IsStopped, 5*time.Second, 5*time.Millisecond,
				"the informer is stopped: client-go would re-list the resource forever")
			// A plan that read the caches now, after maintenanceReady said the source was
			// known, plans without it rather than from an empty source.
			cached, _, _ := c.cached(ctx, nil, true)
			assert.Equal(t, sources.ResourceName(c.cfg), cached.MaintenanceUnknown)
			if tc.standby > 0 {
				time.Sleep(tc.standby)
				goneAt = time.Now()
				wg.Go(func() { assert.NoError(t, c.Lead(ctx)) })
			}
			if tc.served {
				time.Sleep(notServedConfirm / 2)
				notFound.Store(false)
				require.Eventually(t, func() bool {
					return strings.Contains(log.String(), "maintenance resource is now served; watching it")
				}, 5*time.Second, 10*time.Millisecond, log.String())
				time.Sleep(notServedConfirm)
				assert.Zero(t, countPatches(client), "a is still in maintenance: nothing to write\n%s", log.String())
				assert.NotContains(t, log.String(), "no longer served")
				return
			}
			if tc.failing > 0 {
				time.Sleep(notServedConfirm / 2)
				failing.Store(true)
				time.Sleep(tc.failing)
				failing.Store(false)
				mu.Lock()
				require.False(t, lastFailed.IsZero(), "no probe while failing")
				goneAt = lastFailed
				mu.Unlock()
			}
			require.Eventually(t, func() bool {
				n, err := client.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
				return err == nil && n.Annotations[state.ReleaseReason] == state.ReasonCancelled
			}, 5*notServedConfirm, 20*time.Millisecond, log.String())
			assert.GreaterOrEqual(t, time.Since(goneAt), notServedConfirm, "released only once confirmed, after the last failed probe\n%s", log.String())
			assert.Equal(t, 1, strings.Count(log.String(), "maintenance resource is no longer served"), log.String())
		})
	}
}
