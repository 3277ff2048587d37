package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A cordon that comes while the NodeMaintenance a node was released for lasts is part of it
// (medik8s cordons the node of its NodeMaintenance again when someone uncordons it): the node
// is not entered again, and the cordon is recorded, so that the node still cordoned when the
// NodeMaintenance goes is not taken for a new maintenance either.
func TestPresenceUnderTheNodeMaintenanceReleasedFor(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true })
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	released := func(ids string, more ...string) *corev1.Node {
		return tu.Node("a", inPool(), tu.WithAnnotations(append([]string{state.MaintenanceID, ids, state.ReleaseReason, state.ReasonWarm}, more...)...))
	}
	plans := func(n *corev1.Node, ms ...plan.Maintenance) plan.Plan {
		return compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": ms}))
	}

	// Released while uncordoned, under its NodeMaintenance; cordoned again under it.
	joined := action(t, plans(released("uid-nm-a"), append(nm("a"), cordon)...), "a")
	assert.Equal(t, plan.Record, joined.Type, "not entered again")
	assert.Equal(t, "maintenance-joined", joined.Reason)
	assert.Contains(t, joined.Message, plan.SourceCordoned)
	assert.Equal(t, map[string]*string{state.MaintenanceID: ptr("cordoned,uid-nm-a")}, joined.Change.Annotations)

	// Recorded: nothing more while both last; the NodeMaintenance gone first, the cordon that
	// lasts a little longer is the same maintenance, and its end is stamped once it goes.
	assert.Empty(t, plans(released("cordoned,uid-nm-a"), append(nm("a"), cordon)...).Actions)
	assert.Empty(t, plans(released("cordoned,uid-nm-a"), cordon).Actions, "NodeMaintenance gone, still cordoned")
	ended := action(t, plans(released("cordoned,uid-nm-a")), "a")
	assert.Equal(t, map[string]*string{state.MaintenanceEnded: ptr(state.FormatTime(t0))}, ended.Change.Annotations)

	// An end stamped under the NodeMaintenance (another configuration's) is lifted with it.
	lifted := action(t, plans(released("uid-nm-a", state.MaintenanceEnded, state.FormatTime(t0.Add(-time.Hour))), append(nm("a"), cordon)...), "a")
	assert.Equal(t, plan.Record, lifted.Type)
	assert.Equal(t, map[string]*string{state.MaintenanceID: ptr("cordoned,uid-nm-a"), state.MaintenanceEnded: nil}, lifted.Change.Annotations)

	// Recorded already, with an end marked (by an installation that reads the cordon and not the
	// NodeMaintenance, or before a configuration change): the mark is lifted, the cordon lasts.
	marked := action(t, plans(released("cordoned,uid-nm-a", state.MaintenanceEnded, state.FormatTime(t0.Add(-time.Hour))), append(nm("a"), cordon)...), "a")
	assert.Equal(t, map[string]*string{state.MaintenanceEnded: nil}, marked.Change.Annotations)

	// A label is not a cordon: a pipeline labels a node for its next upgrade, which may come
	// while the last one's object lingers. It is a new maintenance.
	withLabel := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	got := compute(t, withLabel, snapshot(t0, []*corev1.Node{released("uid-nm-a")}, map[string][]plan.Maintenance{"a": append(nm("a"), label)}))
	assert.Equal(t, []want{{"a", plan.Enter, plan.SourceNodeMaintenance}}, summarize(got))

	// Only under a NodeMaintenance the node was released for, and while it lasts.
	other := []plan.Maintenance{{Source: plan.SourceNodeMaintenance, ID: "uid-nm-other", Object: "nm-other"}, cordon}
	assert.Equal(t, []want{{"a", plan.Enter, plan.SourceNodeMaintenance}}, summarize(plans(released("uid-nm-a"), other...)),
		"another NodeMaintenance is a new maintenance")
	assert.Equal(t, []want{{"a", plan.Enter, plan.SourceCordoned}}, summarize(plans(released("uid-nm-a"), cordon)),
		"cordoned after the NodeMaintenance it was released for is gone: new")
}

// A release under a NodeMaintenance keeps a cordon recorded at entry that is not there at the
// moment of the release: it is part of that NodeMaintenance, and the node cordoned again under
// it must not be entered again.
func TestReleaseUnderTheNodeMaintenanceKeepsItsCordon(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true })
	n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
		tu.WithAnnotations(state.MaintenanceID, "cordoned,uid-nm-a"))...)
	pod := tu.Pod(ds, "a", "new", tu.Ready())

	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, pod))
	require.Equal(t, []want{{"a", plan.Release, state.ReasonWarm}}, summarize(got))
	ch := got.Actions[0].Change
	assert.NotContains(t, ch.Annotations, state.MaintenanceID, "the record is kept as it is")
	assert.NotContains(t, ch.Annotations, state.MaintenanceEnded)
	apply(n, ch)
	cordoned := compute(t, cfg, snapshot(t0.Add(time.Minute), []*corev1.Node{n},
		map[string][]plan.Maintenance{"a": append(nm("a"), plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned})}))
	assert.Empty(t, cordoned.Actions, "cordoned again under the NodeMaintenance: not a new maintenance")
}

// A node being deleted (a finalizer holds it while it is drained) is neither entered nor
// adopted: a slot of maxConcurrent taken for it would hold back a node that comes back.
func TestNodeBeingDeletedIsNotTaken(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(1) })
	deleting := func(n *corev1.Node) *corev1.Node {
		n.DeletionTimestamp = &metav1.Time{Time: t0.Add(-time.Minute)}
		n.Finalizers = []string{"karpenter.sh/termination"}
		return n
	}
	gone := deleting(tu.Node("a", inPool()))
	next := tu.Node("b", inPool())
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{gone, next}, map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b")}))
	assert.Equal(t, []want{{"b", plan.Enter, plan.SourceNodeMaintenance}}, summarize(got), "the slot goes to the node that stays")
	assert.Contains(t, got.Notes, plan.Note{Node: "a", Message: "not tainted: in maintenance, but the node is being deleted"})

	joined := deleting(tu.Node("d", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)))
	assert.Empty(t, compute(t, cfg, snapshot(t0, []*corev1.Node{joined}, nil)).Actions, "not adopted")

	// status says so, rather than "waiting" or "joining" for what will not happen.
	p, err := plan.New(cfg)
	require.NoError(t, err)
	idle := deleting(tu.Node("c", inPool()))
	st := p.Describe(snapshot(t0, []*corev1.Node{gone, next, joined, idle}, map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b")}), true)
	phases := map[string]string{}
	for _, ns := range st.Nodes {
		phases[ns.Name] = ns.Phase
	}
	assert.Equal(t, map[string]string{"a": "deleting", "b": "waiting", "c": "", "d": "deleting"}, phases)
	assert.Equal(t, 2, st.Totals["deleting"])
}
