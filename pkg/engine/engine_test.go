package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// These tests use a fake clientset: for error paths, and for the engine's own decisions (what it
// writes, in what order, what it logs) given what the API answers. Behaviour against a real API
// server (patch semantics, conflicts, RBAC, dry runs, uninstall sweeps) is covered by the e2e
// suite in test/e2e.

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// testConfig is a valid configuration: pool "pool=notebooks", the cordoned source only.
func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Instance = "prewarm/test"
	cfg.Pool.NodeSelector = map[string]string{"pool": "notebooks"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	require.NoError(t, cfg.Validate())
	return cfg
}

func testEngine(t *testing.T, client *fake.Clientset, dryRun bool) *Engine {
	t.Helper()
	e, err := New(Options{
		Config: testConfig(t), Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), DryRun: dryRun,
	})
	require.NoError(t, err)
	return e
}

// withWarmer returns a fake clientset holding objs and testConfig's warmer DaemonSet: without it
// no node is entered.
func withWarmer(objs ...runtime.Object) *fake.Clientset {
	w := config.Default().Warmer
	return fake.NewClientset(append(objs, tu.DaemonSet(w.Namespace, w.DaemonSetName))...)
}

func patches(client *fake.Clientset) []k8stesting.PatchAction {
	var out []k8stesting.PatchAction
	for _, a := range client.Actions() {
		if p, ok := a.(k8stesting.PatchAction); ok {
			out = append(out, p)
		}
	}
	return out
}

func TestConflictRereadsAndReplans(t *testing.T) {
	n := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client := withWarmer(n)
	conflicts := 0
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			conflicts++
			// Someone else adds a taint between our read and our write.
			fresh, _ := client.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, "", "a")
			node := fresh.(*corev1.Node).DeepCopy()
			node.Spec.Taints = append(node.Spec.Taints, corev1.Taint{Key: "other", Effect: corev1.TaintEffectNoSchedule})
			node.ResourceVersion = "2"
			require.NoError(t, client.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, node, ""))
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("modified"))
		}
		return false, nil, nil
	})
	e := testEngine(t, client, false)
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Enter])

	ps := patches(client)
	require.Len(t, ps, 2, "one conflicting patch, one retry")
	var second map[string]any
	require.NoError(t, json.Unmarshal(ps[1].GetPatch(), &second))
	meta := second["metadata"].(map[string]any)
	assert.Equal(t, "2", meta["resourceVersion"], "the retry is guarded by the fresh resourceVersion")
	taints := second["spec"].(map[string]any)["taints"].([]any)
	require.Len(t, taints, 2, "the other writer's taint is kept")
	assert.Equal(t, "other", taints[0].(map[string]any)["key"])
	assert.Equal(t, "os-upgrade", taints[1].(map[string]any)["key"])
}

func TestFailedPatchFailsTheCycleButOthersAreApplied(t *testing.T) {
	a := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	b := tu.Node("b", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	client := withWarmer(a, b)
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() == "a" {
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("RBAC"))
		}
		return false, nil, nil
	})
	e := testEngine(t, client, false)
	res, err := e.RunOnce(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "patching node a")
	assert.Equal(t, 1, res.Applied[plan.Enter], "node b is still handled")
}

func TestDryRunWritesNothing(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	e := testEngine(t, client, true)
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 1)
	for _, act := range client.Actions() {
		assert.Contains(t, []string{"list", "get"}, act.GetVerb(), "dry run only reads (got %s %s)", act.GetVerb(), act.GetResource().Resource)
	}
}

// A node deleted between the cycle's read and its patch (404) is forgotten: the cycle succeeds,
// and nothing counts or reports a transition that was not written.
func TestDeletedNodeIsForgotten(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "nodes"}, "a")
	})
	cfg := testConfig(t)
	cfg.Events.Transitions = true // an Event for every transition written
	m := metrics.New()
	e, err := New(Options{
		Config: cfg, Client: client, Clock: clocktesting.NewFakePassiveClock(t0), Metrics: m,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	e.WaitEvents()
	assert.Len(t, patches(client), 1, "the entry was tried once")
	assert.Zero(t, res.Applied[plan.Enter])
	assert.Empty(t, res.Written)
	assert.Zero(t, countActions(client, "create", "events"), "no Event for a transition not written")
	families, err := m.Registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == "image_prewarmer_transitions_total" {
			for _, s := range f.GetMetric() {
				assert.Zero(t, s.GetCounter().GetValue(), "no transition counted: %v", s.GetLabel())
			}
		}
	}
}

func TestMergePatch(t *testing.T) {
	n := tu.Node("a", tu.WithTaint("keep", "1", corev1.TaintEffectNoSchedule), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule))
	n.ResourceVersion = "42"
	remove := corev1.Taint{Key: "os-upgrade", Effect: corev1.TaintEffectNoSchedule}
	b, err := mergePatch(n, plan.Change{
		RemoveTaint: &remove,
		Labels:      map[string]*string{"os-upgrade/status": nil},
		Annotations: map[string]*string{state.ReleaseReason: ptr("warm")},
	})
	require.NoError(t, err)
	assert.JSONEq(t, `{"metadata":{"resourceVersion":"42","labels":{"os-upgrade/status":null},
		"annotations":{"image-prewarmer.io/release-reason":"warm"}},
		"spec":{"taints":[{"key":"keep","value":"1","effect":"NoSchedule"}]}}`, string(b))

	only := tu.Node("b", tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule))
	b, err = mergePatch(only, plan.Change{RemoveTaint: &remove})
	require.NoError(t, err)
	assert.JSONEq(t, `{"metadata":{"resourceVersion":"1"},"spec":{"taints":null}}`, string(b))

	add := corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	b, err = mergePatch(only, plan.Change{AddTaint: &add})
	require.NoError(t, err)
	assert.JSONEq(t, `{"metadata":{"resourceVersion":"1"}}`, string(b), "our taint already there: not added twice")

	// A changed taint value: the old taint is removed and the new one added in the same patch.
	old := corev1.Taint{Key: "os-upgrade", Value: "old", Effect: corev1.TaintEffectNoSchedule}
	b, err = mergePatch(only, plan.Change{RemoveTaint: &old, AddTaint: &corev1.Taint{Key: "os-upgrade", Value: "new", Effect: corev1.TaintEffectNoSchedule}})
	require.NoError(t, err)
	assert.JSONEq(t, `{"metadata":{"resourceVersion":"1"},"spec":{"taints":[{"key":"os-upgrade","value":"new","effect":"NoSchedule"}]}}`, string(b))
}

func ptr(s string) *string { return &s }

// plannedEntry observes a cordoned pool node at resourceVersion 5 and plans its entry.
func plannedEntry(t *testing.T) (*corev1.Node, *fake.Clientset, *Engine, Observation, plan.Plan) {
	t.Helper()
	stale := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	stale.ResourceVersion = "5"
	client := withWarmer(stale)
	e := testEngine(t, client, false)
	obs, err := e.Observe(context.Background())
	require.NoError(t, err)
	p := e.Planner().Compute(obs.Snapshot)
	require.Len(t, p.Actions, 1)
	require.Equal(t, plan.Enter, p.Actions[0].Type)
	return stale, client, e, obs, p
}

// An action that waited for a write slot is re-planned from the newest version of its node the
// caller knows, rather than written with a version bound to conflict.
func TestApplyStartsFromLatestVersion(t *testing.T) {
	stale, client, e, obs, p := plannedEntry(t)

	// Meanwhile the node was entered (by a previous leader, say): nothing is left to do.
	other := withWarmer(stale.DeepCopy())
	_, err := testEngine(t, other, false).RunOnce(context.Background())
	require.NoError(t, err)
	obj, err := other.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, "", "a")
	require.NoError(t, err)
	fresh := obj.(*corev1.Node)
	require.Equal(t, state.PhaseTainted, state.PhaseOf(fresh))
	fresh.ResourceVersion = "7"
	var done []plan.Action
	res, err := e.ApplyNotify(context.Background(), obs, p,
		func(name string) *corev1.Node { return map[string]*corev1.Node{"a": fresh}[name] },
		func(a plan.Action, w *Written, err error) {
			assert.Nil(t, w)
			assert.NoError(t, err)
			done = append(done, a)
		})
	require.NoError(t, err)
	assert.Empty(t, patches(client), "nothing left to write")
	assert.Empty(t, res.Written)
	assert.Len(t, done, 1, "the caller still hears the node is finished with")

	// An older version than the snapshot's is ignored.
	older := fresh.DeepCopy()
	older.ResourceVersion = "3"
	res, err = e.ApplyNotify(context.Background(), obs, p,
		func(string) *corev1.Node { return older }, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Enter])
}

// Re-planning a node from a fresher copy re-reads the maintenances that come from the node
// itself: a node uncordoned meanwhile is no longer in maintenance.
func TestReplanRederivesNodeSources(t *testing.T) {
	stale, client, e, obs, p := plannedEntry(t)

	fresh := stale.DeepCopy()
	fresh.Spec.Unschedulable = false
	fresh.ResourceVersion = "7"
	res, err := e.ApplyNotify(context.Background(), obs, p, func(string) *corev1.Node { return fresh }, nil)
	require.NoError(t, err)
	assert.Empty(t, res.Written)
	assert.Empty(t, patches(client))
}

func TestReleasePatch(t *testing.T) {
	n := tu.Node("a", tu.WithTaint("keep", "1", corev1.TaintEffectNoSchedule), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithLabels("os-upgrade/status", "warming"))
	n.Annotations = map[string]string{state.Phase: "warming", state.Owner: "prewarm/test", state.MaintenanceID: "nm/x", state.LastError: ""}
	remove := corev1.Taint{Key: "os-upgrade", Effect: corev1.TaintEffectNoSchedule}
	b, ok, err := releasePatch(n, plan.Change{
		RemoveTaint: &remove,
		Labels:      map[string]*string{"os-upgrade/status": nil},
		Annotations: map[string]*string{
			state.Phase: nil, state.Owner: nil, state.TaintedAt: nil, // tainted-at is absent: nothing to remove
			state.ReleaseReason: ptr("warm"), state.LastError: ptr(""),
		},
	})
	require.NoError(t, err)
	require.True(t, ok)
	assert.JSONEq(t, `[
		{"op":"test","path":"/metadata/annotations/image-prewarmer.io~1maintenance-id","value":"nm/x"},
		{"op":"test","path":"/metadata/annotations/image-prewarmer.io~1last-error","value":""},
		{"op":"test","path":"/metadata/annotations/image-prewarmer.io~1owner","value":"prewarm/test"},
		{"op":"test","path":"/metadata/annotations/image-prewarmer.io~1phase","value":"warming"},
		{"op":"test","path":"/metadata/labels/os-upgrade~1status","value":"warming"},
		{"op":"test","path":"/spec/taints/1","value":{"key":"os-upgrade","value":"true","effect":"NoSchedule"}},
		{"op":"add","path":"/metadata/annotations/image-prewarmer.io~1last-error","value":""},
		{"op":"remove","path":"/metadata/annotations/image-prewarmer.io~1owner"},
		{"op":"remove","path":"/metadata/annotations/image-prewarmer.io~1phase"},
		{"op":"add","path":"/metadata/annotations/image-prewarmer.io~1release-reason","value":"warm"},
		{"op":"remove","path":"/metadata/labels/os-upgrade~1status"},
		{"op":"remove","path":"/spec/taints/1"}
	]`, string(b), "tests on our keys and our taint, as read; edits only to them; the other taint untouched")

	// A node without annotations (or labels): creating the map would replace one another writer
	// created since the read, which no test operation can rule out; the merge patch, guarded by
	// the resourceVersion, is used instead.
	bare := tu.Node("b")
	bare.Annotations, bare.Labels = nil, nil
	_, ok, err = releasePatch(bare, plan.Change{Annotations: map[string]*string{state.ReleaseReason: ptr("cleanup")}})
	require.NoError(t, err)
	assert.False(t, ok, "annotations to create")
	_, ok, err = releasePatch(bare, plan.Change{Labels: map[string]*string{"a": ptr("b")}})
	require.NoError(t, err)
	assert.False(t, ok, "labels to create")
	b, ok, err = releasePatch(bare, plan.Change{Annotations: map[string]*string{state.Phase: nil}})
	require.NoError(t, err)
	assert.True(t, ok, "nothing to add")
	assert.Nil(t, b, "nothing to remove either")

	_, ok, _ = releasePatch(n, plan.Change{AddTaint: &remove})
	assert.False(t, ok, "a change that adds a taint is not a release's")
}

// Uninstall marks the DaemonSet, then sweeps until a sweep finds nothing: an entry that lands
// after the first sweep read the pool (a cycle that read it before the mark) is released too.
func TestUninstallSweepsUntilNothingIsLeft(t *testing.T) {
	nodesGVR := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	client := fake.NewClientset(taintedNode("a"), tu.Node("b", tu.WithLabels("pool", "notebooks")))
	late := false
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !late {
			late = true
			// A write of a cycle that read the pool before the mark lands now.
			require.NoError(t, client.Tracker().Update(nodesGVR, taintedNode("b"), ""))
		}
		return false, nil, nil
	})
	e := testEngine(t, client, false)
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	require.NoError(t, client.Tracker().Add(tu.DaemonSet(ns, name)))

	res, err := e.Uninstall(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Applied[plan.Release])
	for _, n := range []string{"a", "b"} {
		got, err := client.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, state.ReasonCleanup, got.Annotations[state.ReleaseReason], n)
		assert.False(t, state.HasTaint(got, "os-upgrade", corev1.TaintEffectNoSchedule), n)
	}
	ds, err := client.AppsV1().DaemonSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, state.FormatTime(t0), ds.Annotations[state.Uninstalling])
}

// Nodes that keep joining the pool with the taint while the uninstall sweeps are released as
// they come, but do not keep it sweeping: it ends at the first sweep after the settle that
// released no node of the installation's.
func TestUninstallSweepsEndWhileNodesKeepJoiningTainted(t *testing.T) {
	client := withWarmer(taintedNode("a"))
	lists := 0
	client.PrependReactor("list", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		lists++
		if lists > 10 {
			return false, nil, nil // the pool stops growing (sweeping until it does is the failure)
		}
		joined := tu.Node(fmt.Sprintf("joined-%d", lists), tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
			tu.WithAnnotations("node.alpha.kubernetes.io/ttl", "0"))
		require.NoError(t, client.Tracker().Add(joined)) // one more before each list
		return false, nil, nil
	})
	res, err := testEngine(t, client, false).Uninstall(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, 2, lists, "the first sweep released a; the second only a joined node")
	assert.Equal(t, 3, res.Applied[plan.Release], "a and both joined nodes")
	for _, n := range []string{"a", "joined-1", "joined-2"} {
		node, err := client.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, node.Spec.Taints, n)
	}
}

// taintedNode is a pool node this installation (testConfig's) has tainted.
func taintedNode(name string) *corev1.Node {
	return tu.Node(name, tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.Owner, "prewarm/test"))
}

// An uninstall that fails after marking the DaemonSet removes the mark again, whether a release
// failed or the hook was stopped (its deadline, SIGTERM): the release Helm keeps works as before.
func TestFailedUninstallRemovesItsMark(t *testing.T) {
	managed := taintedNode("a")
	cases := []struct {
		name string
		// fail makes the uninstall fail: it gets the client and a cancel for Uninstall's context.
		fail func(client *fake.Clientset, cancel context.CancelFunc)
		want string
	}{
		{
			name: "a release is refused",
			fail: func(client *fake.Clientset, _ context.CancelFunc) {
				client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("denied"))
				})
			},
			want: "forbidden",
		},
		{
			name: "the hook is stopped while it sweeps",
			fail: func(client *fake.Clientset, cancel context.CancelFunc) {
				client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
					cancel() // SIGTERM arrives while the first sweep writes
					return false, nil, nil
				})
			},
			want: context.Canceled.Error(),
		},
		{
			name: "the mark lands but its answer is lost",
			fail: func(client *fake.Clientset, _ context.CancelFunc) {
				first := true
				client.PrependReactor("patch", "daemonsets", func(a k8stesting.Action) (bool, runtime.Object, error) {
					if !first {
						return false, nil, nil
					}
					first = false
					// The API server applies the patch; the connection drops before the answer.
					obj, err := client.Tracker().Get(a.GetResource(), a.GetNamespace(), a.(k8stesting.PatchAction).GetName())
					require.NoError(t, err)
					var sent struct {
						Metadata struct{ Annotations map[string]string }
					}
					require.NoError(t, json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &sent))
					ds := obj.(*appsv1.DaemonSet).DeepCopy()
					ds.Annotations = sent.Metadata.Annotations
					require.NoError(t, client.Tracker().Update(a.GetResource(), ds, a.GetNamespace()))
					return true, nil, errors.New("connection reset by peer")
				})
			},
			want: "connection reset by peer",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(managed.DeepCopy())
			e := testEngine(t, client, false)
			ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
			require.NoError(t, client.Tracker().Add(tu.DaemonSet(ns, name)))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tc.fail(client, cancel)

			_, err := e.Uninstall(ctx, time.Minute)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			ds, err := client.AppsV1().DaemonSets(ns).Get(context.Background(), name, metav1.GetOptions{})
			require.NoError(t, err)
			assert.NotContains(t, ds.Annotations, state.Uninstalling, "the mark is removed")
			assert.Equal(t, 2, countActions(client, "patch", "daemonsets"), "marked, then unmarked")
		})
	}
}

// A failed uninstall removes its own mark only: a retried uninstall's hook (Helm replaces the
// Job, and the old pod is stopped while the new one sweeps) may have marked the DaemonSet since,
// and lifting that mark would let the orchestrator taint nodes during that uninstall.
func TestFailedUninstallLeavesAnotherUninstallsMark(t *testing.T) {
	managed := taintedNode("a")
	client := withWarmer(managed)
	e, log := loggingEngine(t, client, false)
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	const theirs = "2026-11-25T12:00:07.123456789Z"
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		// The retried hook marks the DaemonSet while this one's release is refused.
		gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
		obj, err := client.Tracker().Get(gvr, ns, name) // the tracker: the fake client is locked here
		require.NoError(t, err)
		ds := obj.(*appsv1.DaemonSet).DeepCopy()
		ds.Annotations[state.Uninstalling] = theirs
		require.NoError(t, client.Tracker().Update(gvr, ds, ns))
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "nodes"}, "a", errors.New("denied"))
	})
	_, err := e.Uninstall(context.Background(), time.Minute)
	require.Error(t, err)
	ds, err := client.AppsV1().DaemonSets(ns).Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, theirs, ds.Annotations[state.Uninstalling], "the other uninstall's mark stays")
	assert.Contains(t, log.String(), "its mark is not on the warmer DaemonSet")
	assert.NotContains(t, log.String(), "could not be removed", "no fix that would lift the other's mark")
}

// Without its DaemonSet (already gone, or never installed) Uninstall still releases the nodes.
func TestUninstallWithoutDaemonSet(t *testing.T) {
	n := taintedNode("a")
	client := fake.NewClientset(n)
	e := testEngine(t, client, false)
	res, err := e.Uninstall(context.Background(), 0)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release])
}

// cleanup and the uninstall find every node the installation manages, also one that lost both
// its pool labels and its status label (edited away by hand): no selector finds it, only its
// annotations mark it as this installation's. Another installation's node stays as it is.
func TestCleanupFindsManagedNodesOutsideThePool(t *testing.T) {
	managed := func(name, owner string) *corev1.Node {
		return tu.Node(name, tu.WithLabels("team", "ml"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
			tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, owner))
	}
	for _, uninstall := range []bool{false, true} {
		client := withWarmer(managed("lost", "prewarm/test"), managed("theirs", "other/x"), tu.Node("idle", tu.WithLabels("pool", "notebooks")))
		e := testEngine(t, client, false)
		var err error
		if uninstall {
			_, err = e.Uninstall(context.Background(), 0)
		} else {
			_, err = e.Cleanup(context.Background())
		}
		require.NoError(t, err)
		lost, err := client.CoreV1().Nodes().Get(context.Background(), "lost", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, lost.Spec.Taints, "uninstall %v: released", uninstall)
		assert.Equal(t, state.ReasonCleanup, lost.Annotations[state.ReleaseReason])
		theirs, err := client.CoreV1().Nodes().Get(context.Background(), "theirs", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Len(t, theirs.Spec.Taints, 1, "another installation's node")
	}
}

func TestWrittenNodesAreTrimmed(t *testing.T) {
	// What the patch returns is kept until the cycle ends: trimmed like the snapshot, so that a
	// cycle entering hundreds of nodes does not hold their managed fields and image lists.
	n := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example.com/base:1"}, SizeBytes: 10 << 30}}
	client := withWarmer(n)
	e := testEngine(t, client, false)
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Written, 1)
	w := res.Written[0].Node
	assert.Equal(t, plan.Enter, res.Written[0].Action.Type)
	assert.True(t, state.HasTaint(w, e.cfg.Taint.Key, e.cfg.Taint.Effect), "the written node is the patched one")
	assert.Empty(t, w.ManagedFields)
	assert.Empty(t, w.Status.Images)

	stored, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.NotEmpty(t, stored.Status.Images, "only the copy the engine keeps is trimmed")
}

// markable is an engine writing one node at a time on a fake clock, over pool nodes in
// maintenance (cordoned) and the warmer DaemonSet, and mark, which sets the uninstall mark on
// that DaemonSet and moves the clock by uninstallCheckInterval.
func markable(t *testing.T, nodes ...string) (e *Engine, client *fake.Clientset, ds *appsv1.DaemonSet, mark func()) {
	t.Helper()
	client = fake.NewClientset()
	for _, n := range nodes {
		require.NoError(t, client.Tracker().Add(tu.Node(n, tu.WithLabels("pool", "notebooks"), tu.Cordoned())))
	}
	cfg := testConfig(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	e, err := New(Options{Config: cfg, Client: client, Clock: clk, Workers: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ds = tu.DaemonSet(cfg.Warmer.Namespace, cfg.Warmer.DaemonSetName)
	require.NoError(t, client.Tracker().Add(ds))
	mark = func() {
		m := ds.DeepCopy()
		m.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
		require.NoError(t, client.Tracker().Update(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, m, m.Namespace))
		clk.SetTime(t0.Add(uninstallCheckInterval))
	}
	return e, client, ds, mark
}

// A plan still entering nodes when `cleanup --uninstall` marks the DaemonSet stops entering
// them: the DaemonSet is re-read once the write phase has run for uninstallCheckInterval.
func TestUninstallMarkStopsEntriesBeingWritten(t *testing.T) {
	e, client, _, mark := markable(t, "a", "b", "c")
	marked := false
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if !marked {
			marked = true
			// The uninstall begins while the first entry is written, and the writes go on.
			mark()
		}
		return false, nil, nil
	})
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 3, "the snapshot had no mark: three entries planned")
	assert.Equal(t, 1, res.Applied[plan.Enter], "only the entry written before the mark was read")
	assert.Len(t, patches(client), 1)
	assert.Equal(t, 2, countActions(client, "get", "daemonsets"), "observation, then one re-read: the second entry's check found the mark and the third needed none")
}

// An entry sent again after a conflict is checked again: the uninstall marked the DaemonSet
// while its first patch was refused, and the re-planned entry is dropped, not written after the
// mark (however long its retries take, the uninstall's sweeps may be over by then).
func TestUninstallMarkStopsAnEntryRetriedAfterAConflict(t *testing.T) {
	e, client, _, mark := markable(t, "a")
	conflicted := false
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		mark()
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("the object has been modified"))
	})
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err, "a dropped entry is no failure")
	require.Len(t, res.Plan.Actions, 1)
	assert.Zero(t, res.Applied[plan.Enter], "the retry found the mark")
	assert.Len(t, patches(client), 1, "only the refused patch went out")
	n, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, n.Spec.Taints)
}

// An entry re-planned after a conflict into another write (here a release: another writer had
// entered the node, which then left the pool) is not checked as an entry: under the uninstall
// mark it goes out, as releases do.
func TestEntryReplannedIntoAReleaseIsNotHeld(t *testing.T) {
	e, client, _, mark := markable(t, "a")
	nodesGVR := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	conflicted := false
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicted {
			return false, nil, nil
		}
		conflicted = true
		entered := taintedNode("a")
		entered.Labels["pool"] = "elsewhere"
		require.NoError(t, client.Tracker().Update(nodesGVR, entered, ""))
		mark()
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("the object has been modified"))
	})
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release], "the re-planned release went out under the mark")
	n, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, n.Spec.Taints)
	assert.Equal(t, state.ReasonLeftPool, n.Annotations[state.ReleaseReason])
}

// A mark the event-driven mode's cache showed holds adoptions back once Helm deletes the marked
// DaemonSet after the uninstall's hook: the plans made without it adopt a node that joined
// tainted, and the re-read that checks them finds no DaemonSet, not the mark. An observation
// showing the mark is enough (the controller applies no empty plan).
func TestUninstallMarkOutlivesItsDaemonSet(t *testing.T) {
	e, client, ds, _ := markable(t)
	marked := ds.DeepCopy()
	marked.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	obs, err := e.ObserveFrom(Cached{MaintenanceServed: true, DaemonSet: marked})
	require.NoError(t, err)
	require.Empty(t, e.Planner().Compute(obs.Snapshot).Actions)

	require.NoError(t, client.Tracker().Delete(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, ds.Namespace, ds.Name))
	joined := tu.Node("j", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule))
	require.NoError(t, client.Tracker().Add(joined))
	obs, err = e.ObserveFrom(Cached{Nodes: []*corev1.Node{joined}, MaintenanceServed: true})
	require.NoError(t, err)
	p := e.Planner().Compute(obs.Snapshot)
	require.Len(t, p.Actions, 1)
	require.Equal(t, plan.Adopt, p.Actions[0].Type, "without its DaemonSet the planner adopts")
	res, err := e.Apply(context.Background(), obs, p)
	require.NoError(t, err)
	assert.Zero(t, res.Applied[plan.Adopt], "the mark once seen holds the adoption")
	assert.Empty(t, patches(client))
}

// A mark seen in an observation goes once a re-read finds the DaemonSet without it (a failed
// uninstall removed its mark): the entries go on.
func TestSeenMarkGoesWithAnUnmarkedRead(t *testing.T) {
	e, client, ds, _ := markable(t, "a")
	marked := ds.DeepCopy()
	marked.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	_, err := e.ObserveFrom(Cached{MaintenanceServed: true, DaemonSet: marked})
	require.NoError(t, err)

	a, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	obs, err := e.ObserveFrom(Cached{Nodes: []*corev1.Node{a}, MaintenanceServed: true, DaemonSet: ds.DeepCopy()})
	require.NoError(t, err)
	res, err := e.Apply(context.Background(), obs, e.Planner().Compute(obs.Snapshot))
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Enter], "the re-read found no mark")
	assert.Equal(t, 1, countActions(client, "get", "daemonsets"))
}

// A snapshot of cached objects (the event-driven mode) may hold a DaemonSet of any age: a watch
// broken by an API server restart keeps the cache from before the uninstall's mark. The first
// entry re-reads the mark.
func TestUninstallMarkIsReadOverACachedSnapshot(t *testing.T) {
	e, client, ds, mark := markable(t, "a")
	a, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	mark() // the cache has not seen it
	obs, err := e.ObserveFrom(Cached{Nodes: []*corev1.Node{a}, MaintenanceServed: true, DaemonSet: ds.DeepCopy()})
	require.NoError(t, err)
	p := e.Planner().Compute(obs.Snapshot)
	require.Len(t, p.Actions, 1, "the cached DaemonSet has no mark: a is entered")
	res, err := e.Apply(context.Background(), obs, p)
	require.NoError(t, err)
	assert.Zero(t, res.Applied[plan.Enter], "the mark was read before the entry")
	assert.Empty(t, patches(client))
	assert.Equal(t, 1, countActions(client, "get", "daemonsets"))
}

// An observation that took longer than uninstallCheckInterval (thousands of nodes, a slow API
// server) has a DaemonSet that old: a mark set since is read before the first entry is written.
func TestUninstallMarkAfterASlowObservation(t *testing.T) {
	e, client, ds, mark := markable(t, "a", "b")
	reads := 0
	client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		reads++
		if reads == 1 {
			// Read unmarked; the uninstall marks it while the node lists are still being read.
			mark()
			return true, ds.DeepCopy(), nil
		}
		return false, nil, nil
	})
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 2, "the snapshot had no mark: two entries planned")
	assert.Zero(t, res.Applied[plan.Enter], "the mark was read before the first entry")
	assert.Empty(t, patches(client))
}

// Plans written at the same time (the event-driven mode's many small ones) share one re-read of
// the DaemonSet per uninstallCheckInterval, however many of them have been writing that long.
// A re-read that fails (a 5xx, a timeout, throttling) keeps a mark already seen: entries resumed
// on it could land after the uninstall's last sweep and leave a node tainted with no orchestrator
// to release it.
func TestUninstallMarkIsReadOncePerInterval(t *testing.T) {
	e, client, clk, ds := guardedEngine(t)
	dsReads := func() int { return countActions(client, "get", "daemonsets") }
	ctx := context.Background()
	plans := make([]*uninstallGuard, 50)
	for i := range plans {
		plans[i] = &uninstallGuard{e: e, start: t0}
	}
	for _, g := range plans {
		assert.False(t, g.holds(ctx, plan.Enter), "a plan that began writing just now trusts its snapshot")
	}
	assert.Zero(t, dsReads())

	clk.SetTime(t0.Add(uninstallCheckInterval))
	for _, g := range plans {
		assert.False(t, g.holds(ctx, plan.Enter))
	}
	assert.Equal(t, 1, dsReads(), "one read for all the plans")

	m := ds.DeepCopy()
	m.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	require.NoError(t, client.Tracker().Update(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}, m, m.Namespace))
	clk.SetTime(t0.Add(2 * uninstallCheckInterval))
	for _, g := range plans {
		assert.True(t, g.holds(ctx, plan.Enter), "the mark read by one plan stops them all")
	}
	assert.Equal(t, 2, dsReads())

	client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServerTimeout(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "get", 1)
	})
	clk.SetTime(t0.Add(3 * uninstallCheckInterval))
	assert.True(t, plans[0].holds(ctx, plan.Adopt), "a failed re-read does not undo a mark already seen")
	assert.Equal(t, 3, dsReads())
}

// A warmer DaemonSet deleted while a plan is being written (by hand, or by an uninstall after its
// mark, while a cycle's pod lives on) stops the entries still waiting: tainted without a warmer,
// a node could only open cold at its timeout. Adoptions go on, as the planner plans them while
// the warmer is missing, unless the uninstall mark was seen. Once the DaemonSet is back, entries
// go on too.
func TestMissingWarmerStopsEntriesBeingWritten(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	for _, tc := range []struct {
		markedFirst bool
		// deleting: the DaemonSet stays, being deleted (foreground deletion, a finalizer), which
		// creates no more pods: it counts as missing.
		deleting bool
	}{{false, false}, {true, false}, {false, true}, {true, true}} {
		markedFirst := tc.markedFirst
		t.Run(fmt.Sprintf("marked first=%v, being deleted=%v", markedFirst, tc.deleting), func(t *testing.T) {
			e, client, clk, ds := guardedEngine(t)
			cfg := e.cfg
			g := &uninstallGuard{e: e, start: t0}
			ctx := context.Background()
			step := 1
			next := func() { step++; clk.SetTime(t0.Add(time.Duration(step) * uninstallCheckInterval)) }

			clk.SetTime(t0.Add(uninstallCheckInterval))
			if markedFirst {
				m := ds.DeepCopy()
				m.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
				require.NoError(t, client.Tracker().Update(gvr, m, m.Namespace))
			}
			assert.Equal(t, markedFirst, g.holds(ctx, plan.Enter))
			assert.False(t, g.holds(ctx, plan.Release), "releases always go")

			if tc.deleting {
				d, err := client.Tracker().Get(gvr, ds.Namespace, ds.Name)
				require.NoError(t, err)
				d.(*appsv1.DaemonSet).DeletionTimestamp = &metav1.Time{Time: t0}
				require.NoError(t, client.Tracker().Update(gvr, d, ds.Namespace))
			} else {
				require.NoError(t, client.Tracker().Delete(gvr, ds.Namespace, ds.Name))
			}
			next()
			assert.True(t, g.holds(ctx, plan.Enter), "no entry without a warmer")
			assert.Equal(t, markedFirst, g.holds(ctx, plan.Adopt), "adoptions stop only for the uninstall")
			assert.False(t, g.holds(ctx, plan.Release))

			if tc.deleting {
				require.NoError(t, client.Tracker().Delete(gvr, ds.Namespace, ds.Name))
			}
			require.NoError(t, client.Tracker().Add(tu.DaemonSet(cfg.Warmer.Namespace, cfg.Warmer.DaemonSetName)))
			next()
			assert.False(t, g.holds(ctx, plan.Enter), "the warmer is back, unmarked")
			assert.False(t, g.holds(ctx, plan.Adopt))
		})
	}
}

// guardedEngine returns an engine on a fake clientset holding the warmer DaemonSet, with a clock
// the test moves, for the uninstall guard's tests.
func guardedEngine(t *testing.T) (*Engine, *fake.Clientset, *clocktesting.FakePassiveClock, *appsv1.DaemonSet) {
	t.Helper()
	client := fake.NewClientset()
	cfg := testConfig(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	e, err := New(Options{Config: cfg, Client: client, Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ds := tu.DaemonSet(cfg.Warmer.Namespace, cfg.Warmer.DaemonSetName)
	require.NoError(t, client.Tracker().Add(ds))
	return e, client, clk, ds
}

// countActions counts the fake client's requests with this verb on this resource.
func countActions(client *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == resource {
			n++
		}
	}
	return n
}

// The node lists, the maintenance list and the warmer's reads run concurrently; a failure is
// reported in a fixed order (nodes first) whichever request failed first, so the one-line reason
// of a failed cycle does not depend on timing.
func TestObserveReportsTheFirstFailedReadInOrder(t *testing.T) {
	fail := func(client *fake.Clientset, verb, resource string, delay time.Duration) {
		client.PrependReactor(verb, resource, func(k8stesting.Action) (bool, runtime.Object, error) {
			time.Sleep(delay)
			return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: resource}, "", errors.New("denied"))
		})
	}
	pool := tu.Node("a", tu.WithLabels("pool", "notebooks"))

	client := fake.NewClientset(pool)
	fail(client, "get", "daemonsets", 0)
	fail(client, "list", "nodes", 50*time.Millisecond)
	_, err := testEngine(t, client, false).Observe(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "listing pool nodes", "the node list failed last but comes first")

	client = fake.NewClientset(pool)
	fail(client, "get", "daemonsets", 0)
	_, err = testEngine(t, client, false).Observe(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "getting warmer DaemonSet")

	client = fake.NewClientset(pool)
	obs, err := testEngine(t, client, false).Observe(context.Background())
	require.NoError(t, err)
	require.Len(t, obs.Snapshot.Nodes, 1)
	assert.Equal(t, "a", obs.Snapshot.Nodes[0].Name)
	assert.Nil(t, obs.Snapshot.DaemonSet, "no warmer DaemonSet: not an error")
}

// A node list whose continue token expires starts over, and forgets only what that list had
// read: the pool nodes listed before the status-label list stay in the snapshot.
func TestExpiredContinueKeepsTheOtherList(t *testing.T) {
	pool := tu.Node("a", tu.WithLabels("pool", "notebooks"))
	labelled := tu.Node("b", tu.WithLabels("os-upgrade/status", "upgrading"))
	client := fake.NewClientset(pool, labelled)
	client.PrependReactor("list", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		opts := act.(k8stesting.ListActionImpl).ListOptions
		if opts.LabelSelector == "pool=notebooks" {
			return false, nil, nil
		}
		switch {
		case opts.Continue == "" && opts.Limit > 0:
			return true, &corev1.NodeList{ListMeta: metav1.ListMeta{Continue: "next"}, Items: []corev1.Node{*labelled}}, nil
		case opts.Continue != "":
			return true, nil, apierrors.NewResourceExpired("continue token expired")
		}
		return false, nil, nil
	})
	obs, err := testEngine(t, client, false).Observe(context.Background())
	require.NoError(t, err)
	var names []string
	for _, n := range obs.Snapshot.Nodes {
		names = append(names, n.Name)
	}
	assert.Equal(t, []string{"a", "b"}, names)
}

// A re-plan after a conflict never turns another action into an entry: the entry would be
// counted against maxConcurrent from a snapshot that misses the entries written alongside it
// (and, in the event-driven mode, from a snapshot of a few nodes only).
func TestReplanDoesNotTurnIntoAnEntry(t *testing.T) {
	joined := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule))
	client := withWarmer(joined, tu.Node("b", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	conflicted := false
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() != "a" || conflicted {
			return false, nil, nil
		}
		conflicted = true
		// Before its adoption is written, someone takes the taint off a and cordons it.
		n := joined.DeepCopy()
		n.Spec.Taints, n.Spec.Unschedulable, n.ResourceVersion = nil, true, "2"
		require.NoError(t, client.Tracker().Update(nodes, n, ""))
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("modified"))
	})
	e := budgetEngine(t, client, intstr.FromInt32(1))
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	// a's adoption takes the only slot, so b waits; a, re-read cordoned without the taint, would
	// be an entry now, which the budget (counted from a snapshot without a's adoption) cannot admit.
	assert.Equal(t, 0, res.Applied[plan.Enter], "maxConcurrent is 1 and a's adoption took it: no entry")
}

// Nor does a re-plan turn a write that taints no node into an adoption, which counts against
// maxConcurrent: the event-driven mode knows a write in flight only by the type it handed out,
// and would not hold entries back for it.
func TestReplanDoesNotTurnIntoAnAdoption(t *testing.T) {
	timedOut := tu.Node("m", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
			state.TaintedAt, state.FormatTime(t0.Add(-4*time.Hour)),
			state.UpgradedAt, state.FormatTime(t0.Add(-3*time.Hour)))) // maxWaitForWarm (2h) passed
	client := withWarmer(timedOut, tu.Node("n", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	e := budgetEngine(t, client, intstr.FromInt32(2))
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	conflicted := false
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if act.(k8stesting.PatchAction).GetName() != "m" || conflicted {
			return false, nil, nil
		}
		conflicted = true
		// Before m's release is written, someone strips its annotations and label, and leaves
		// the taint: m looks like a node that joined with the taint.
		n := tu.Node("m", tu.WithLabels("pool", "notebooks"), tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule))
		n.ResourceVersion = "2"
		require.NoError(t, client.Tracker().Update(nodes, n, ""))
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "m", errors.New("modified"))
	})
	res, err := e.RunOnce(context.Background())
	require.NoError(t, err)
	assert.Zero(t, res.Applied[plan.Adopt], "m's release did not become an adoption")
	assert.Equal(t, 1, res.Applied[plan.Enter], "n has a slot of its own")
	m, err := client.CoreV1().Nodes().Get(context.Background(), "m", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, m.Annotations[state.Phase], "the next plan adopts m")

	res, err = e.RunOnce(context.Background())
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Adopt], "the next plan adopts m")
}

// A conflict whose re-read shows nothing left to do (someone else made the change) writes
// nothing more, and hands the caller the node as re-read, so that the event-driven mode plans
// from it rather than write again from a cache that has not caught up.
func TestConflictWithNothingLeftReturnsTheNodeReRead(t *testing.T) {
	stale, client, e, obs, p := plannedEntry(t)
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	other := withWarmer(stale.DeepCopy())
	_, err := testEngine(t, other, false).RunOnce(context.Background())
	require.NoError(t, err)
	obj, err := other.Tracker().Get(nodes, "", "a")
	require.NoError(t, err)
	entered := obj.(*corev1.Node)
	entered.ResourceVersion = "9"
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		// Another writer entered the node first.
		require.NoError(t, client.Tracker().Update(nodes, entered, ""))
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("modified"))
	})
	var got []*Written
	res, err := e.ApplyNotify(context.Background(), obs, p, nil, func(_ plan.Action, w *Written, err error) {
		assert.NoError(t, err)
		got = append(got, w)
	})
	require.NoError(t, err)
	assert.Len(t, patches(client), 1, "no second patch")
	assert.Empty(t, res.Written)
	assert.Zero(t, res.Applied[plan.Enter])
	require.Len(t, got, 1)
	require.NotNil(t, got[0])
	assert.True(t, got[0].Unchanged)
	assert.Equal(t, "9", got[0].Node.ResourceVersion)
	assert.Equal(t, state.PhaseTainted, state.PhaseOf(got[0].Node))
}

// A patch whose answer is lost is re-read: when the node does not carry the change (here another
// writer's version, not ours), the write failed and the cycle says so.
func TestLostAnswerOfAPatchNotAppliedFailsTheWrite(t *testing.T) {
	n := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	n.ResourceVersion = "1"
	client := withWarmer(n)
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		cur, err := client.Tracker().Get(nodes, "", "a")
		require.NoError(t, err)
		other := cur.(*corev1.Node).DeepCopy()
		other.Labels["other.example.com/x"] = "y"
		other.ResourceVersion = "2"
		require.NoError(t, client.Tracker().Update(nodes, other, ""))
		return true, nil, errors.New("http2: client connection lost")
	})
	res, err := testEngine(t, client, false).RunOnce(context.Background())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "client connection lost")
	assert.Zero(t, res.Applied[plan.Enter])
	var reads int
	for _, act := range client.Actions() {
		if act.GetVerb() == "get" && act.GetResource().Resource == "nodes" {
			reads++
		}
	}
	assert.Equal(t, 1, reads, "the node is re-read once to learn whether the patch was applied")
}

// A patch applied whose answer is lost because the command was stopped meanwhile (SIGTERM) is
// still found by the re-read: the write is said done, not failed.
func TestLostAnswerAfterTheStopIsReadBack(t *testing.T) {
	n := tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned())
	n.ResourceVersion = "1"
	client := withWarmer(n)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	apply := k8stesting.ObjectReaction(client.Tracker())
	nodes := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		if _, _, err := apply(act); err != nil {
			return true, nil, err
		}
		// The API server's version after the write (the fake tracker keeps none of its own).
		cur, err := client.Tracker().Get(nodes, "", "a")
		require.NoError(t, err)
		written := cur.(*corev1.Node).DeepCopy()
		written.ResourceVersion = "2"
		require.NoError(t, client.Tracker().Update(nodes, written, ""))
		stop()
		return true, nil, context.Canceled
	})
	res, err := testEngine(t, client, false).RunOnce(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Enter])
	require.Len(t, res.Written, 1)
	assert.Equal(t, state.PhaseTainted, state.PhaseOf(res.Written[0].Node))

	// Not applied: the error says the write may have been, rather than only "context canceled".
	client = withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	ctx, stop = context.WithCancel(context.Background())
	client.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		stop()
		return true, nil, context.Canceled
	})
	_, err = testEngine(t, client, false).RunOnce(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), "patching node a (enter): no answer, so it may have been applied: context canceled")
}

func TestOutcomeUnknown(t *testing.T) {
	gr := schema.GroupResource{Resource: "nodes"}
	for err, unknown := range map[error]bool{
		errors.New("http2: client connection lost"):                    true,
		context.DeadlineExceeded:                                       true,
		apierrors.NewTimeoutError("request did not complete", 0):       true,
		apierrors.NewServerTimeout(gr, "patch", 0):                     true,
		apierrors.NewConflict(gr, "a", errors.New("modified")):         false,
		apierrors.NewForbidden(gr, "a", errors.New("RBAC")):            false,
		apierrors.NewInvalid(schema.GroupKind{Kind: "Node"}, "a", nil): false,
		apierrors.NewNotFound(gr, "a"):                                 false,
	} {
		assert.Equal(t, unknown, outcomeUnknown(err), "%v", err)
	}
}

func TestCarries(t *testing.T) {
	v := func(s string) *string { return &s }
	taint := &corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	enter := plan.Change{AddTaint: taint, Labels: map[string]*string{"os-upgrade/status": v("upgrading")},
		Annotations: map[string]*string{state.Phase: v(state.PhaseTainted), state.TaintedAt: v("2026-11-25T12:00:00Z")}}
	release := plan.Change{RemoveTaint: taint, Labels: map[string]*string{"os-upgrade/status": nil},
		Annotations: map[string]*string{state.Phase: nil, state.ReleasedAt: v("2026-11-25T13:00:00Z")}}
	valueSwap := plan.Change{RemoveTaint: taint, AddTaint: &corev1.Taint{Key: "os-upgrade", Value: "yes", Effect: corev1.TaintEffectNoSchedule}}
	keySwap := plan.Change{RemoveTaint: taint, AddTaint: &corev1.Taint{Key: "prewarm", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	entered := tu.Node("a", tu.WithLabels("os-upgrade/status", "upgrading", "other", "x"),
		tu.WithAnnotations(state.Phase, state.PhaseTainted, state.TaintedAt, "2026-11-25T12:00:00Z"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule), tu.WithTaint("foreign", "", corev1.TaintEffectNoSchedule))
	released := tu.Node("a", tu.WithLabels("other", "x"), tu.WithAnnotations(state.ReleasedAt, "2026-11-25T13:00:00Z"),
		tu.WithTaint("foreign", "", corev1.TaintEffectNoSchedule))
	for _, tc := range []struct {
		name string
		node *corev1.Node
		ch   plan.Change
		want bool
	}{
		{"entry written", entered, enter, true},
		{"entry not written", released, enter, false},
		{"entry written at another time", tu.Node("a", tu.WithLabels("os-upgrade/status", "upgrading"),
			tu.WithAnnotations(state.Phase, state.PhaseTainted, state.TaintedAt, "2026-11-25T11:00:00Z"),
			tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)), enter, false},
		{"entry without its taint", tu.Node("a", tu.WithLabels("os-upgrade/status", "upgrading"),
			tu.WithAnnotations(state.Phase, state.PhaseTainted, state.TaintedAt, "2026-11-25T12:00:00Z")), enter, false},
		{"release written", released, release, true},
		{"release not written", entered, release, false},
		{"release with the taint still there", tu.Node("a", tu.WithAnnotations(state.ReleasedAt, "2026-11-25T13:00:00Z"),
			tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)), release, false},
		{"release with the label still there", tu.Node("a", tu.WithLabels("os-upgrade/status", "warming"),
			tu.WithAnnotations(state.ReleasedAt, "2026-11-25T13:00:00Z")), release, false},
		// A configuration swap (the record) that changes only the taint's value removes and adds a
		// taint of the same key and effect.
		{"value swap written", tu.Node("a", tu.WithTaint("os-upgrade", "yes", corev1.TaintEffectNoSchedule)), valueSwap, true},
		{"value swap not written", tu.Node("a", tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)), valueSwap, false},
		{"value swap over no taint", tu.Node("a"), valueSwap, false},
		{"entry over the taint with another value", tu.Node("a", tu.WithLabels("os-upgrade/status", "upgrading"),
			tu.WithAnnotations(state.Phase, state.PhaseTainted, state.TaintedAt, "2026-11-25T12:00:00Z"),
			tu.WithTaint("os-upgrade", "set-by-hand", corev1.TaintEffectNoSchedule)), enter, true},
		{"key swap written", tu.Node("a", tu.WithTaint("prewarm", "true", corev1.TaintEffectNoSchedule)), keySwap, true},
		{"key swap with the old taint left", tu.Node("a", tu.WithTaint("prewarm", "true", corev1.TaintEffectNoSchedule),
			tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule)), keySwap, false},
	} {
		assert.Equal(t, tc.want, carries(tc.node, tc.ch), tc.name)
	}
}

func TestCountByPhaseProblemAndPool(t *testing.T) {
	e := testEngine(t, fake.NewClientset(), true)
	owned := func(phase string, kv ...string) tu.NodeOption {
		return tu.WithAnnotations(append([]string{state.Phase, phase, state.Owner, "prewarm/test"}, kv...)...)
	}
	got := e.Count([]*corev1.Node{
		tu.Node("idle", tu.WithLabels("pool", "notebooks")),
		tu.Node("pulling", tu.WithLabels("pool", "notebooks"), owned(state.PhaseWarming, state.LastError, "ImagePull: pod w container c: ErrImagePull: x")),
		tu.Node("kept", tu.WithLabels("pool", "notebooks"), owned(state.PhaseWarming, state.LastError, "WarmTimeout: kept tainted")),
		tu.Node("tainted", tu.WithLabels("pool", "notebooks"), owned(state.PhaseTainted)),
		// Managed, but outside the pool now (it is about to be released as left-pool).
		tu.Node("left", owned(state.PhaseTainted, state.LastError, "hand-written")),
		// Released: its last-error stays for the record and counts no more.
		tu.Node("released", tu.WithLabels("pool", "notebooks"), tu.WithAnnotations(state.LastError, "ImagePull: x")),
		// Another installation's.
		tu.Node("foreign", tu.WithLabels("pool", "notebooks"), tu.WithAnnotations(state.Phase, state.PhaseWarming,
			state.Owner, "other/prewarm", state.LastError, "ImagePull: x")),
		// A phase set by hand that the planner does not know: nothing releases it, a problem.
		tu.Node("held", tu.WithLabels("pool", "notebooks"), owned("hold")),
	})
	assert.Equal(t, map[string]int{state.PhaseWarming: 2, state.PhaseTainted: 2, "hold": 1}, got.ByPhase)
	assert.Equal(t, map[string]int{"ImagePull": 1, plan.ProblemWarmTimeout: 1, plan.ProblemOther: 2}, got.ByProblem)
	assert.Equal(t, 7, got.Pool)
}

// Events about nodes go to default, the one namespace the API server accepts them in for a
// cluster-scoped object, which installations share: each names the installation that wrote it.
func TestEventsNameTheirInstallation(t *testing.T) {
	client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	cfg := testConfig(t)
	cfg.Events.Transitions = true
	e, err := New(Options{Config: cfg, Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	_, err = e.RunOnce(context.Background())
	require.NoError(t, err)
	e.WaitEvents()
	events, err := client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, events.Items, 1)
	ev := events.Items[0]
	assert.Equal(t, "PrewarmTainted", ev.Reason)
	assert.Equal(t, "a", ev.InvolvedObject.Name)
	assert.Empty(t, ev.InvolvedObject.Namespace, "a node has none")
	assert.Equal(t, cfg.Instance, ev.Annotations[state.Owner])
}

// WaitEventsFor waits for the Events in flight, but no longer than it is told to: a leader that
// shuts down while the Events API hangs must still exit within its grace period.
func TestWaitEventsForGivesUp(t *testing.T) {
	client := fake.NewClientset()
	unblock := make(chan struct{})
	client.PrependReactor("create", "events", func(k8stesting.Action) (bool, runtime.Object, error) {
		<-unblock
		return false, nil, nil
	})
	e := testEngine(t, client, false)
	assert.True(t, e.WaitEventsFor(time.Second), "nothing in flight")
	e.emit(context.Background(), tu.Node("a"), plan.Action{Node: "a", Type: plan.Enter,
		Events: []plan.Event{{Type: corev1.EventTypeNormal, Reason: "PrewarmTainted", Message: "m"}}})
	assert.False(t, e.WaitEventsFor(50*time.Millisecond), "the Event hangs: given up")
	close(unblock)
	assert.True(t, e.WaitEventsFor(10*time.Second), "written once the API answers")
	events, err := client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Len(t, events.Items, 1)
}

// A JSON patch that no longer applies to the node (a failed test operation) is answered with the
// API server's bare 422; a refusal of the patched node (validation, an admission policy or
// webhook) is not re-planned. The real server's answers: TestWriteBetweenReadAndPatch and
// TestReleaseRefusedByAPolicy (test/e2e/orchestrator).
func TestNotApplicable(t *testing.T) {
	webhook := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusUnprocessableEntity, Reason: metav1.StatusReasonInvalid,
		Message: `admission webhook "nodes.example.com" denied the request: keep the taint`,
	}}
	for err, want := range map[error]bool{
		apierrors.NewGenericServerResponse(http.StatusUnprocessableEntity, "", schema.GroupResource{}, "", "testing value /spec/taints/0 failed: test failed", 0, false): true,
		apierrors.NewInvalid(schema.GroupKind{Kind: "Node"}, "a", nil): false,
		webhook: false,
		apierrors.NewConflict(schema.GroupResource{Resource: "nodes"}, "a", errors.New("modified")): false,
		errors.New("connection reset"): false,
	} {
		assert.Equal(t, want, notApplicable(err), "%v", err)
	}
}

// A one-shot command stopped (SIGTERM, the Job's deadline) waits for its Events no longer than
// stoppedEventsWait, then says they may be lost: what it must still do comes first. Until then
// it waits for them.
func TestStoppedCommandBoundsItsEventsWait(t *testing.T) {
	defer func(d time.Duration) { stoppedEventsWait = d }(stoppedEventsWait)
	stoppedEventsWait = 50 * time.Millisecond
	var logs tu.LogBuffer
	e, err := New(Options{Config: testConfig(t), Client: fake.NewClientset(), Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	e.pendingEvents.Add(1) // an Event whose write never ends

	waited := func(ctx context.Context) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			e.waitEvents(ctx)
			close(done)
		}()
		return done
	}
	live := waited(context.Background())
	stopped, cancel := context.WithCancel(context.Background())
	cancel()
	select {
	case <-waited(stopped):
	case <-time.After(30 * time.Second):
		t.Fatal("a stopped command waits for its Events without end")
	}
	assert.Contains(t, logs.String(), "stopping with Events not yet written: they may be lost")

	select {
	case <-live:
		t.Fatal("a command still running returned before its Events were written")
	case <-time.After(100 * time.Millisecond):
	}
	e.pendingEvents.Done()
	<-live
}

// A cycle whose writes all fail says how many, listing a few: not thousands of lines.
func TestManyFailedWritesAreCounted(t *testing.T) {
	var nodes []runtime.Object
	for i := range 25 {
		nodes = append(nodes, tu.Node(fmt.Sprintf("n%02d", i), tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
	}
	client := withWarmer(nodes...)
	gr := schema.GroupResource{Resource: "nodes"}
	client.PrependReactor("patch", "nodes", func(act k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(gr, act.(k8stesting.PatchAction).GetName(), errors.New("RBAC: patch not allowed"))
	})
	_, err := testEngine(t, client, false).RunOnce(context.Background())
	require.Error(t, err)
	lines := strings.Split(err.Error(), "\n")
	assert.Len(t, lines, maxListedErrors+1)
	assert.Equal(t, fmt.Sprintf("and %d more (each is logged)", 25-maxListedErrors), lines[len(lines)-1])
	assert.True(t, apierrors.IsForbidden(err), "the causes stay reachable")
	var all interface{ Unwrap() []error }
	require.ErrorAs(t, err, &all)
	assert.Len(t, all.Unwrap(), 25)
}

// Each write priority has slots of its own: while a burst of entries or adoptions holds every
// slot of theirs (one here, its write hanging), a release and the writes of nodes on their way
// to a release (the upgrade seen, a warmer pod's problem recorded) from other plans still go
// out. The event-driven mode plans nothing else for a node while one of its writes is in
// flight: a record waiting behind a thousand adoptions would hold the node's release back as
// long.
func TestWritePrioritiesHaveSlotsOfTheirOwn(t *testing.T) {
	taint := &corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	client := withWarmer(
		tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()),
		tu.Node("r", tu.WithLabels("pool", "notebooks")),
		tu.Node("u", tu.WithLabels("pool", "notebooks")),
		tu.Node("x", tu.WithLabels("pool", "notebooks"), tu.WithTaint(taint.Key, taint.Value, taint.Effect)))
	e, err := New(Options{Config: testConfig(t), Client: client, Clock: clocktesting.NewFakePassiveClock(t0), Workers: 1,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	obs, err := e.Observe(context.Background())
	require.NoError(t, err)
	planned := e.Planner().Compute(obs.Snapshot).Actions
	i := slices.IndexFunc(planned, func(a plan.Action) bool { return a.Node == "a" })
	require.GreaterOrEqual(t, i, 0)
	entry := planned[i]
	require.Equal(t, plan.Enter, entry.Type)

	// The fake clientset runs its reactors under one lock: the entry hangs before it.
	sent := make(chan string, 8)
	hold := make(chan struct{})
	e.client = hangingPatches{Clientset: client, patch: func(name string) {
		sent <- name
		if name == "a" {
			<-hold // the entry hangs, holding the only slot of its priority
		}
	}}
	var wg sync.WaitGroup
	apply := func(actions ...plan.Action) {
		wg.Go(func() {
			_, err := e.Apply(context.Background(), obs, plan.Plan{Actions: actions})
			assert.NoError(t, err)
		})
	}
	apply(entry)
	require.Equal(t, "a", <-sent)

	lastError := "ImagePull: pod warmer-r: ErrImagePull"
	apply(plan.Action{Node: "r", Type: plan.Record, Reason: "ImagePull",
		Change: plan.Change{Annotations: map[string]*string{state.LastError: &lastError}}})
	upgradedAt := state.FormatTime(t0)
	apply(plan.Action{Node: "u", Type: plan.Upgraded, Reason: "upgraded",
		Change: plan.Change{Annotations: map[string]*string{state.UpgradedAt: &upgradedAt}}})
	apply(plan.Action{Node: "x", Type: plan.Release, Reason: state.ReasonLeftPool, Change: plan.Change{RemoveTaint: taint}})
	var others []string
	deadline := time.After(10 * time.Second)
	for len(others) < 3 {
		select {
		case name := <-sent:
			others = append(others, name)
			continue
		case <-deadline:
			assert.Fail(t, "a write waits for the entry's slot", "sent: %v", others)
		}
		break
	}
	assert.ElementsMatch(t, []string{"r", "u", "x"}, others)
	close(hold)
	wg.Wait()
	n, err := client.CoreV1().Nodes().Get(context.Background(), "a", metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, state.HasTaint(n, taint.Key, taint.Effect), "the entry went through once let go")
}

// hangingPatches is a clientset whose node patches call patch with the node's name first.
type hangingPatches struct {
	*fake.Clientset
	patch func(name string)
}

func (c hangingPatches) CoreV1() typedcorev1.CoreV1Interface {
	return hangingCoreV1{CoreV1Interface: c.Clientset.CoreV1(), patch: c.patch}
}

type hangingCoreV1 struct {
	typedcorev1.CoreV1Interface
	patch func(name string)
}

func (c hangingCoreV1) Nodes() typedcorev1.NodeInterface {
	return hangingNodes{NodeInterface: c.CoreV1Interface.Nodes(), patch: c.patch}
}

type hangingNodes struct {
	typedcorev1.NodeInterface
	patch func(name string)
}

func (n hangingNodes) Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, sub ...string) (*corev1.Node, error) {
	n.patch(name)
	return n.NodeInterface.Patch(ctx, name, pt, data, opts, sub...)
}
