package orchestrator_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// ourKeys reports whether the node carries the installation's taint and status label.
func (e *env) ourKeys(n *corev1.Node) (taint, label bool) {
	_, label = n.Labels[e.Config.StatusLabel.Key]
	return state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect), label
}

// requireNotOurs checks that the node carries neither the installation's taint nor its status
// label, and is not recorded as its own.
func (e *env) requireNotOurs(n *corev1.Node) {
	e.T.Helper()
	taint, label := e.ourKeys(n)
	require.False(e.T, taint, "node %s must not carry %s's taint %s", n.Name, e.Config.Instance, e.Config.Taint.Key)
	require.False(e.T, label, "node %s must not carry %s's status label %s", n.Name, e.Config.Instance, e.Config.StatusLabel.Key)
	require.NotEqual(e.T, e.Config.Instance, n.Annotations[state.Owner], "owner of %s", n.Name)
}

func hasActionFor(p plan.Plan, node string) bool {
	for _, a := range p.Actions {
		if a.Node == node {
			return true
		}
	}
	return false
}

// Two installations whose pools overlap, with distinct taint and label keys (design.md: "an
// installation never touches a node another installation owns"): neither enters, releases,
// cleans up or re-taints a node the other owns, even when that node is in its own pool, in
// maintenance, upgraded and warm by the other's warmer; and when both cycle at once over nodes
// in both pools, each such node ends up owned by exactly one of them, carrying only its keys.
func TestTwoInstallationsOverlappingPools(t *testing.T) {
	a := newEnv(t, kernelTarget)
	const poolB = "e2e.image-prewarmer.io/pool-b"
	b := a.secondInstallation("b", func(c *config.Config) {
		c.Pool.NodeSelector = map[string]string{poolB: a.Name}
		c.Taint.Key = "example.com/prewarm-b"
		c.StatusLabel.Key = "example.com/prewarm-b-status"
	})
	inB := framework.WithLabels(map[string]string{poolB: a.Name})
	a.PoolNode("shared", inB)
	a.PoolNode("aonly")
	_, err := cluster.CreateNode(a.Ctx, a.NodeName("bonly"), framework.WithKernel(framework.InitialKernel),
		framework.WithLabels(map[string]string{poolB: a.Name, "kernel-version": framework.InitialKernel}))
	require.NoError(t, err)
	a.Warmer()
	b.Warmer()
	for _, s := range []string{"shared", "aonly", "bonly"} {
		a.Maintenance(s)
	}

	// A sees the maintenances first: it owns shared. B then enters only its own node.
	res := a.cycle()
	assert.Equal(t, 2, res.Applied[plan.Enter])
	a.requirePhase("shared", state.PhaseTainted, "upgrading")
	a.requirePhase("aonly", state.PhaseTainted, "upgrading")
	res = b.cycle()
	assert.Equal(t, 1, res.Applied[plan.Enter], "B enters bonly only")
	assert.False(t, hasActionFor(res.Plan, a.NodeName("shared")), "B plans nothing for a node A owns: %+v", res.Plan.Actions)
	b.requirePhase("bonly", state.PhaseTainted, "upgrading")
	assert.Equal(t, b.Config.Instance, b.Node("bonly").Annotations[state.Owner])
	a.requireNotOurs(b.Node("bonly"))
	shared := a.Node("shared")
	b.requireNotOurs(shared)
	a.requirePhase("shared", state.PhaseTainted, "upgrading")
	assert.Equal(t, a.Config.Instance, shared.Annotations[state.Owner])
	// Both write their Events to default; each names its installation.
	require.Len(t, b.Events("bonly", "PrewarmTainted"), 1, "B records its own entry")
	require.Len(t, a.Events("shared", "PrewarmTainted"), 1, "A records its entry")
	assert.Empty(t, b.Events("shared", ""), "B emits nothing about a node A owns")

	// B's uninstall hook releases what B owns, never what A owns.
	en := b.engine()
	res, err = en.Cleanup(b.Ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release], "B's cleanup releases bonly only")
	b.RequireReleased("bonly", state.ReasonCleanup)
	a.requirePhase("shared", state.PhaseTainted, "upgrading")
	a.requirePhase("aonly", state.PhaseTainted, "upgrading")
	assert.Equal(t, a.Config.Instance, a.Node("shared").Annotations[state.Owner])

	// Both installations cycle at once over new nodes in both pools: each node is entered by
	// exactly one of them (the other's patch conflicts, it re-reads and sees the owner).
	var racers []string
	for i := range 6 {
		s := fmt.Sprintf("race%d", i)
		racers = append(racers, s)
		a.PoolNode(s, inB)
	}
	for _, s := range racers {
		a.Maintenance(s)
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	results := make([]engine.Result, 2)
	for i, inst := range []*env{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = inst.engine().RunOnce(inst.Ctx)
		}()
	}
	wg.Wait()
	require.NoError(t, errs[0], "A's cycle")
	require.NoError(t, errs[1], "B's cycle")
	owners := map[string]int{}
	for _, s := range racers {
		n := a.Node(s)
		owner := n.Annotations[state.Owner]
		owners[owner]++
		var mine, other *env
		switch owner {
		case a.Config.Instance:
			mine, other = a, b
		case b.Config.Instance:
			mine, other = b, a
		default:
			t.Fatalf("node %s is in maintenance in both pools but owned by %q", s, owner)
		}
		taint, label := mine.ourKeys(n)
		assert.True(t, taint && label, "%s carries its owner's taint and label", s)
		other.requireNotOurs(n)
		count := 0
		for _, tt := range n.Spec.Taints {
			if tt.Key == a.Config.Taint.Key || tt.Key == b.Config.Taint.Key {
				count++
			}
		}
		assert.Equal(t, 1, count, "one prewarm taint on %s: %v", s, n.Spec.Taints)
	}
	t.Logf("racing cycles: owners %v; entries planned/written: A %d/%d, B %d/%d", owners,
		len(results[0].Plan.Actions), results[0].Applied[plan.Enter], len(results[1].Plan.Actions), results[1].Applied[plan.Enter])
	assert.Equal(t, len(racers), results[0].Applied[plan.Enter]+results[1].Applied[plan.Enter], "each node entered once")

	// shared is upgraded and A's warmer is Ready there: B, for which it is an upgraded pool node
	// in maintenance, still plans nothing; A releases it.
	a.Reboot("shared", newKernel)
	a.waitWarmerReady("shared")
	res = b.cycle()
	assert.False(t, hasActionFor(res.Plan, a.NodeName("shared")), "B plans nothing for a node A owns: %+v", res.Plan.Actions)
	a.requirePhase("shared", state.PhaseTainted, "upgrading")
	b.requireNotOurs(a.Node("shared"))
	res = a.cycle()
	assert.Equal(t, 1, res.Applied[plan.Release])
	n := a.RequireReleased("shared", state.ReasonWarm)
	b.requireNotOurs(n)
	assert.Empty(t, b.Events("shared", ""), "B never wrote anything about shared")
	a.requireNotOurs(b.Node("bonly"))
}

// foreignState is what other parties own on a node: taints other than ours, labels other than
// our status label (and the kernel label the simulated reboot changes), annotations outside our
// prefix, and the cordon.
type foreignState struct {
	Taints        []corev1.Taint
	Labels        map[string]string
	Annotations   map[string]string
	Unschedulable bool
}

func (e *env) foreign(short string) foreignState {
	e.T.Helper()
	n := e.Node(short)
	f := foreignState{Labels: map[string]string{}, Annotations: map[string]string{}, Unschedulable: n.Spec.Unschedulable}
	for _, t := range n.Spec.Taints {
		if t.Key != e.Config.Taint.Key {
			f.Taints = append(f.Taints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
		}
	}
	for k, v := range withoutControlPlaneKeys(n.Labels) {
		if k != e.Config.StatusLabel.Key && k != "kernel-version" {
			f.Labels[k] = v
		}
	}
	for k, v := range withoutControlPlaneKeys(n.Annotations) {
		if !strings.HasPrefix(k, state.Prefix) {
			f.Annotations[k] = v
		}
	}
	return f
}

// withoutLifecycleTaints returns taints without the node lifecycle's own (node.kubernetes.io/...,
// such as not-ready, which kube-controller-manager removes from a new node at its own pace).
func withoutLifecycleTaints(taints []corev1.Taint) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range taints {
		if !strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			out = append(out, t)
		}
	}
	return out
}

// withoutControlPlaneKeys returns m without the keys kube-controller-manager writes to every new
// node at its own pace (the beta os/arch labels, the TTL annotation): a node read before and after
// those writes differs by them, whoever else wrote it.
func withoutControlPlaneKeys(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if !strings.HasPrefix(k, "beta.kubernetes.io/") && k != "node.alpha.kubernetes.io/ttl" {
			out[k] = v
		}
	}
	return out
}

// writtenByUs reports whether the orchestrator's field manager ever wrote the node.
func (e *env) writtenByUs(short string) bool {
	e.T.Helper()
	for _, mf := range e.Node(short).ManagedFields {
		if mf.Manager == "image-prewarmer" {
			return true
		}
	}
	return false
}

// Only the taint and the label this installation adds are ever removed: other taints, labels,
// annotations and the cordon stay exactly as they were across enter, adopt, upgrade seen, warm
// release and left-pool release (labels changed, and the pool selector changed by a helm
// upgrade). A node outside the pool that carries our taint and status label but no phase of
// ours is never written.
func TestForeignStateKeptAndLeftPool(t *testing.T) {
	e := newEnv(t)
	const tier = "e2e.image-prewarmer.io/tier"
	ours := corev1.Taint{Key: e.Config.Taint.Key, Value: e.Config.Taint.Value, Effect: e.Config.Taint.Effect}
	foreign := func(tierValue string, extra ...framework.NodeOption) []framework.NodeOption {
		return append([]framework.NodeOption{
			framework.WithTaints(corev1.Taint{Key: "example.com/foreign", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}),
			framework.WithLabels(map[string]string{"team": "ml", tier: tierValue}),
			framework.WithAnnotations(map[string]string{"example.com/note": "keep me"}),
			framework.Unschedulable(),
		}, extra...)
	}
	e.PoolNode("entered", foreign("kept")...)
	e.PoolNode("joined", foreign("kept", framework.WithTaints(ours))...)
	e.PoolNode("relabelled", foreign("kept")...)
	e.PoolNode("deselected", foreign("dropped")...)
	e.otherNode("outside", framework.WithTaints(ours),
		framework.WithLabels(map[string]string{e.Config.StatusLabel.Key: e.Config.StatusLabel.Value}))
	e.Warmer()
	for _, s := range []string{"entered", "relabelled", "deselected", "outside"} {
		e.Maintenance(s)
	}
	managed := []string{"entered", "joined", "relabelled", "deselected"}
	before := map[string]foreignState{}
	for _, s := range managed {
		before[s] = e.foreign(s)
		require.NotEmpty(t, before[s].Taints, "the fixture has foreign taints")
		require.True(t, before[s].Unschedulable)
	}
	outside := e.Node("outside")
	check := func(stage string) {
		t.Helper()
		for _, s := range managed {
			assert.Equal(t, before[s], e.foreign(s), "%s: foreign state of %s", stage, s)
		}
		assert.False(t, e.writtenByUs("outside"), "%s: a node outside the pool with no phase of ours is never written", stage)
		assert.Equal(t, withoutControlPlaneKeys(outside.Labels), withoutControlPlaneKeys(e.Node("outside").Labels))
		assert.Equal(t, withoutLifecycleTaints(outside.Spec.Taints), withoutLifecycleTaints(e.Node("outside").Spec.Taints))
	}

	res := e.cycle()
	assert.Equal(t, 3, res.Applied[plan.Enter])
	assert.Equal(t, 1, res.Applied[plan.Adopt])
	for _, s := range []string{"entered", "relabelled", "deselected"} {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
	}
	e.requirePhase("joined", state.PhaseWarming, "warming")
	require.True(t, e.writtenByUs("entered"), "the orchestrator's writes are visible in managedFields")
	check("enter and adopt")

	e.waitWarmerReady("joined")
	e.Reboot("entered", newKernel)
	e.cycle()
	e.RequireReleased("joined", state.ReasonWarm)
	e.requirePhase("entered", state.PhaseWarming, "warming")
	check("upgrade seen, release of the adopted node")

	e.waitWarmerReady("entered")
	e.cycle()
	e.RequireReleased("entered", state.ReasonWarm)
	check("warm release")

	// relabelled leaves the pool by a label change; deselected by a helm upgrade that narrows
	// the pool selector. Both still carry the status label, so both are listed and released.
	_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("relabelled"), types.MergePatchType,
		[]byte(fmt.Sprintf(`{"metadata":{"labels":{%q:"elsewhere"}}}`, framework.PoolLabel)), metav1.PatchOptions{})
	require.NoError(t, err)
	before["relabelled"] = e.foreign("relabelled")
	e.Config.Pool.NodeSelector = map[string]string{framework.PoolLabel: e.Name, tier: "kept"}
	res = e.cycle()
	assert.Equal(t, 2, res.Applied[plan.Release])
	e.RequireReleased("relabelled", state.ReasonLeftPool)
	e.RequireReleased("deselected", state.ReasonLeftPool)
	check("left-pool release")

	// Out of the pool, still in maintenance: never tainted again; nothing left to do.
	res = e.cycle()
	assert.Empty(t, res.Plan.Actions)
	e.RequireReleased("relabelled", state.ReasonLeftPool)
	e.RequireReleased("deselected", state.ReasonLeftPool)
	check("after the releases")
}

// A tainted node whose upgrade never comes is released by maxWaitForUpgrade, not before, with
// one Warning Event, and no warmer pod ever ran on it; a node deleted between the snapshot and
// the write is forgotten: the cycle completes without an error, and its NodeMaintenance, still
// there, fails no later cycle.
func TestUpgradeTimeoutAndDeletedNode(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("slow")
	e.PoolNode("gone")
	e.Warmer()
	e.Maintenance("slow")
	e.Maintenance("gone")
	e.cycle()
	e.requirePhase("slow", state.PhaseTainted, "upgrading")
	e.requirePhase("gone", state.PhaseTainted, "upgrading")

	e.clock.Advance(e.Config.MaxWaitForUpgrade.Duration - time.Minute)
	res := e.cycle()
	assert.Empty(t, res.Plan.Actions, "nothing to do a minute before the timeout")
	e.requirePhase("slow", state.PhaseTainted, "upgrading")
	assert.Empty(t, e.Events("slow", "PrewarmTimeout"))
	e.consistentlyNoWarmer("slow", time.Second)

	e.clock.Advance(time.Minute)
	en := e.engine()
	obs, err := en.Observe(e.Ctx)
	require.NoError(t, err)
	p := en.Planner().Compute(obs.Snapshot)
	require.Len(t, p.Actions, 2)
	for _, a := range p.Actions {
		require.Equal(t, plan.Release, a.Type, a.Node)
		require.Equal(t, state.ReasonTimeout, a.Reason, a.Node)
	}
	// gone is deleted after the snapshot, before its release is written.
	require.NoError(t, cluster.DeleteNode(e.Ctx, e.NodeName("gone")))
	e.eventually("node gone deleted", func() bool {
		_, err := e.client.CoreV1().Nodes().Get(e.Ctx, e.NodeName("gone"), metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	res, err = en.Apply(e.Ctx, obs, p)
	require.NoError(t, err, "a deleted node is forgotten, not an error")
	en.WaitEvents()
	assert.Equal(t, 1, res.Applied[plan.Release])

	n := e.RequireReleased("slow", state.ReasonTimeout)
	assert.Empty(t, n.Spec.Taints, "open for user pods")
	warnings := e.Events("slow", "PrewarmTimeout")
	require.Len(t, warnings, 1)
	assert.Equal(t, corev1.EventTypeWarning, warnings[0].Type)
	assert.Contains(t, warnings[0].Message, "maxWaitForUpgrade")
	assert.Empty(t, e.Events("gone", "PrewarmTimeout"), "no Event about a node that is gone")

	// Released for this maintenance, which still exists: not tainted again. The deleted node's
	// NodeMaintenance is ignored.
	res = e.cycle()
	assert.Empty(t, res.Plan.Actions)
	e.RequireReleased("slow", state.ReasonTimeout)
	require.Len(t, e.Events("slow", "PrewarmTimeout"), 1)
}
