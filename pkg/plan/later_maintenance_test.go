package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A maintenance that begins while a node is warming (the pipeline's next NodeMaintenance, or its
// label) has its upgrade still to come: the release for being warm must not record it as done,
// or the node would not be tainted for it and would open cold after that upgrade. The node is
// released, and tainted again for it by the next plan.
func TestMaintenanceBegunWhileWarming(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	next := plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: "uid-nm-next", Object: "nm-next"}
	warm := tu.Pod(ds, "a", "new", tu.Ready())
	warming := func(bootAtWarming string) *corev1.Node {
		n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)
		n.Annotations[state.UpgradedBootID] = bootAtWarming
		return n
	}
	plans := func(n *corev1.Node, ms ...plan.Maintenance) plan.Plan {
		return compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": ms}, warm))
	}

	// The node's own NodeMaintenance lingers and the next one has begun: released, with only
	// its own recorded (unchanged), and the message says why it comes back.
	a := action(t, plans(warming("boot-2"), append(nm("a"), next)...), "a")
	require.Equal(t, plan.Release, a.Type)
	assert.Equal(t, state.ReasonWarm, a.Reason)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "uid-nm-a stays the record")
	assert.Contains(t, a.Message, "nodeMaintenance nm-next began after the upgrade was seen")

	released := tu.Node("a", inPool(), upgradedTo("6.8.0-1")[0], upgradedTo("6.8.0-1")[1],
		tu.WithAnnotations(state.MaintenanceID, "uid-nm-a", state.ReleaseReason, state.ReasonWarm))
	enter := action(t, plans(released, append(nm("a"), next)...), "a")
	assert.Equal(t, plan.Enter, enter.Type, "tainted for the next maintenance")
	assert.Equal(t, ptr("uid-nm-a,uid-nm-next"), enter.Change.Annotations[state.MaintenanceID])
	assert.Empty(t, plans(released, nm("a")...).Actions, "its own maintenance, lingering, is done")

	// A label that comes while the node is warming is its next maintenance too.
	a = action(t, plans(warming("boot-2"), append(nm("a"), label)...), "a")
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)
	// With none of its own left, only the later one: nothing recorded as done, nothing ended.
	a = action(t, plans(warming("boot-2"), next), "a")
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceEnded)
	// On a warm timeout as well.
	cold := warming("boot-2")
	cold.Annotations[state.UpgradedAt] = state.FormatTime(t0.Add(-3 * time.Hour))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{cold}, map[string][]plan.Maintenance{"a": append(nm("a"), next)})), "a")
	require.Equal(t, state.ReasonTimeout, a.Reason)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)

	// Rebooted since it went warming (that may have been the later maintenance's upgrade), or
	// warming since before the boot ID was recorded: every active maintenance is recorded, as a
	// release while both last records them.
	for _, n := range []*corev1.Node{warming("boot-1"), tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)} {
		a = action(t, plans(n, append(nm("a"), next)...), "a")
		assert.Equal(t, ptr("uid-nm-a,uid-nm-next"), a.Change.Annotations[state.MaintenanceID], "boot ID at warming %q", n.Annotations[state.UpgradedBootID])
	}

	// On a target kernel of upgrade.kernelVersions the node counts as upgraded at once: tainted
	// again it would only wait for a new warmer pod, so the maintenance is recorded.
	targets := testConfig(t, func(c *config.Config) { c.Upgrade.KernelVersions = []string{"6.8.0-1"} })
	a = action(t, compute(t, targets, snapshot(t0, []*corev1.Node{warming("boot-2")}, map[string][]plan.Maintenance{"a": append(nm("a"), next)}, warm)), "a")
	assert.Equal(t, ptr("uid-nm-a,uid-nm-next"), a.Change.Annotations[state.MaintenanceID])
}

// The maintenances that join a tainted node before its upgrade are the ones the upgrade is for:
// seeing the upgrade records them, with the node's boot ID then.
func TestUpgradeSeenRecordsItsMaintenances(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))...)

	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": append(nm("a"), label)})), "a")
	require.Equal(t, plan.Upgraded, a.Type)
	assert.Equal(t, ptr("nodeLabel,uid-nm-a"), a.Change.Annotations[state.MaintenanceID])
	assert.Equal(t, ptr("boot-2"), a.Change.Annotations[state.UpgradedBootID])

	// Recorded at entry and gone since: kept, as the maintenance this upgrade is for.
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": {label}})), "a")
	assert.Equal(t, ptr("nodeLabel,uid-nm-a"), a.Change.Annotations[state.MaintenanceID])
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})), "a")
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "nothing joined")

	// An adopted node records its boot ID when it starts warming too.
	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule), tu.WithBootID("boot-7"))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{joined}, nil)), "j")
	require.Equal(t, plan.Adopt, a.Type)
	assert.Equal(t, ptr("boot-7"), a.Change.Annotations[state.UpgradedBootID])
}

// A cordon or label of the node's maintenance that ended before its upgrade was seen is dropped
// from the record then (unless a recorded NodeMaintenance lasts, under which it is part of that):
// the same source naming the node while it warms is its next maintenance.
func TestUpgradeSeenDropsEndedPresence(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	tainted := func(ids string) *corev1.Node {
		n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))...)
		n.Annotations[state.MaintenanceID] = ids
		return n
	}
	seen := func(n *corev1.Node, ms ...plan.Maintenance) plan.Action {
		a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": ms})), "a")
		require.Equal(t, plan.Upgraded, a.Type)
		return a
	}

	// Labelled for its upgrade, the label removed at the reboot: kept for the record, marked ended.
	a := seen(tainted("nodeLabel"))
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)
	assert.Equal(t, ptr(state.FormatTime(t0)), a.Change.Annotations[state.MaintenanceEnded])
	// The pipeline labels it for its next upgrade while it warms: released, the label is not
	// taken for the one it was upgraded for, and the next plan taints the node for it.
	warming := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)
	warming.Annotations[state.MaintenanceID] = "nodeLabel"
	warming.Annotations[state.MaintenanceEnded] = state.FormatTime(t0.Add(-time.Minute))
	warming.Annotations[state.UpgradedBootID] = "boot-2"
	rel := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{warming}, map[string][]plan.Maintenance{"a": {label}}, tu.Pod(ds, "a", "new", tu.Ready()))), "a")
	require.Equal(t, plan.Release, rel.Type)
	assert.Contains(t, rel.Message, "nodeLabel began after the upgrade was seen")
	released := tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, "nodeLabel", state.ReleaseReason, state.ReasonWarm,
		state.MaintenanceEnded, state.FormatTime(t0)))
	enter := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{released}, map[string][]plan.Maintenance{"a": {label}})), "a")
	assert.Equal(t, plan.Enter, enter.Type)
	// Rebooted since (that may have been the label's maintenance's upgrade): the label is recorded
	// as done, and the end marked when the upgrade was seen is lifted, or the node would be
	// tainted again for it.
	rebooted := warming.DeepCopy()
	rebooted.Annotations[state.UpgradedBootID] = "boot-1"
	rel = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{rebooted}, map[string][]plan.Maintenance{"a": {label}}, tu.Pod(ds, "a", "new", tu.Ready()))), "a")
	require.Equal(t, plan.Release, rel.Type)
	assert.Contains(t, rel.Change.Annotations, state.MaintenanceEnded)
	assert.Nil(t, rel.Change.Annotations[state.MaintenanceEnded], "the end mark lifted")
	// Two labels' worth: one ended, one lasting; only the ended one is dropped.
	withCordon := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
		c.Maintenance.Cordoned.Enabled = true
	})
	a = action(t, compute(t, withCordon, snapshot(t0, []*corev1.Node{tainted("cordoned,nodeLabel")}, map[string][]plan.Maintenance{"a": {label}})), "a")
	assert.Equal(t, ptr("nodeLabel"), a.Change.Annotations[state.MaintenanceID])
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceEnded)

	// Under a NodeMaintenance that lasts, the label that came and went is part of it: kept.
	a = seen(tainted("nodeLabel,uid-nm-a"), nm("a")...)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "unchanged")
	// A NodeMaintenance deleted before the reboot was seen is still the one it was for.
	a = seen(tainted("uid-nm-a"))
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "unchanged")
	// A source this configuration does not read (another installation's) may well last: kept.
	a = seen(tainted("cordoned"))
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "unchanged")
}

// While the NodeMaintenance source is unknown (a run --once cycle whose list fails, the
// event-driven mode's informer syncing), a NodeMaintenance that joined since the entry is missing
// from the snapshot. The upgrade seen then records the boot ID, keeps the objects recorded and
// marks the node (upgraded-unread); the warm release, reading the objects again, counts one
// created before upgraded-at as one the upgrade was for, and one created since (in the same
// second too) as the next maintenance. Without the mark (the objects read when the upgrade was
// seen) an object not recorded then is the next maintenance, whenever it was created.
func TestUpgradeSeenWhileTheSourceIsUnknown(t *testing.T) {
	const unknown = "nodemaintenances.v1beta1.nodemaintenance.medik8s.io"
	cfg := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	// Entered for its NodeMaintenance and a label that has ended since.
	n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))...)
	n.Annotations[state.MaintenanceID] = "nodeLabel,uid-nm-a"
	s := snapshot(t0, []*corev1.Node{n}, nil)
	s.MaintenanceUnknown = unknown
	a := action(t, compute(t, cfg, s), "a")
	require.Equal(t, plan.Upgraded, a.Type)
	assert.Equal(t, ptr("boot-2"), a.Change.Annotations[state.UpgradedBootID])
	assert.Equal(t, ptr(unknown), a.Change.Annotations[state.UpgradedUnread])
	assert.Equal(t, ptr("uid-nm-a"), a.Change.Annotations[state.MaintenanceID],
		"the object kept, the label that ended dropped: no object is known to last")
	s.MaintenanceUnknown = ""
	a = action(t, compute(t, cfg, s), "a")
	require.Equal(t, plan.Upgraded, a.Type)
	assert.NotContains(t, a.Change.Annotations, state.UpgradedUnread, "read: no mark")

	warming := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)
	warming.Annotations[state.UpgradedBootID] = "boot-2"
	warming.Annotations[state.UpgradedUnread] = unknown
	upgradedAt, ok := state.Time(warming, state.UpgradedAt)
	require.True(t, ok)
	created := func(id string, at time.Time) plan.Maintenance {
		return plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: id, Object: id, Created: at}
	}
	release := func(ms ...plan.Maintenance) plan.Action {
		s := snapshot(upgradedAt.Add(10*time.Minute), []*corev1.Node{warming}, map[string][]plan.Maintenance{"a": ms},
			tu.Pod(ds, "a", "new", tu.Ready()))
		a := action(t, compute(t, cfg, s), "a")
		require.Equal(t, plan.Release, a.Type)
		require.Equal(t, state.ReasonWarm, a.Reason)
		return a
	}
	before := created("uid-joined", upgradedAt.Add(-time.Second))
	a = release(append(nm("a"), before)...)
	assert.Equal(t, ptr("uid-joined,uid-nm-a"), a.Change.Annotations[state.MaintenanceID], "joined before the upgrade was seen: done")
	assert.NotContains(t, a.Message, "began after")
	assert.Contains(t, a.Change.Annotations, state.UpgradedUnread)
	assert.Nil(t, a.Change.Annotations[state.UpgradedUnread], "the mark goes with the release")
	delete(warming.Annotations, state.UpgradedUnread)
	a = release(append(nm("a"), before)...)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "read when the upgrade was seen: it was not there")
	warming.Annotations[state.UpgradedUnread] = unknown
	for _, at := range []time.Time{upgradedAt, upgradedAt.Add(999 * time.Millisecond), upgradedAt.Add(time.Minute)} {
		a = release(append(nm("a"), created("uid-next", at))...)
		assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "created at %s: its upgrade is to come", at)
		assert.Contains(t, a.Message, "nodeMaintenance uid-next began after the upgrade was seen")
	}
	// Without a creation time (an object read with none) it is the next maintenance.
	a = release(append(nm("a"), created("uid-next", time.Time{}))...)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)
	// Without upgraded-at (lost; the warm release comes first) nothing is known to be before it.
	delete(warming.Annotations, state.UpgradedAt)
	a = release(append(nm("a"), before)...)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)

	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule), tu.WithBootID("boot-j"))
	s = snapshot(t0, []*corev1.Node{joined}, nil)
	s.MaintenanceUnknown = unknown
	a = action(t, compute(t, cfg, s), "j")
	require.Equal(t, plan.Adopt, a.Type)
	assert.Equal(t, ptr("boot-j"), a.Change.Annotations[state.UpgradedBootID])
	assert.Equal(t, ptr(unknown), a.Change.Annotations[state.UpgradedUnread])

	// A leftover mark (a hand edit, a release cut short) does not outlive the next entry.
	left := tu.Node("l", inPool(), tu.WithAnnotations(state.UpgradedUnread, unknown, state.UpgradedBootID, "boot-0"))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{left}, map[string][]plan.Maintenance{"l": nm("l")})), "l")
	require.Equal(t, plan.Enter, a.Type)
	assert.Contains(t, a.Change.Annotations, state.UpgradedUnread)
	assert.Nil(t, a.Change.Annotations[state.UpgradedUnread])
}

// An operator who removes the taint of a warming node opens it; a maintenance that began while it
// warmed is not recorded as done by that release either.
func TestExternalReleaseLeavesALaterMaintenance(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)
	n.Spec.Taints = nil
	n.Annotations[state.UpgradedBootID] = "boot-2"
	next := plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: "uid-nm-next", Object: "nm-next"}
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": append(nm("a"), next)})), "a")
	require.Equal(t, state.ReasonExternal, a.Reason)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID)
}

// A cordon that came while the node was warming is part of the NodeMaintenance recorded on it
// only if that object is read: while the source is unknown it may be gone, and the cordon the
// next maintenance, with its upgrade still to come. A warm release then leaves the cordon out of
// the record (and keeps the recorded object); read and lasting, the object takes the cordon in.
func TestCordonUnderAnUnreadNodeMaintenanceIsNotRecordedAsDone(t *testing.T) {
	cfg := testConfig(t)
	warming := tu.Node("a", append(upgradedTo("6.8.0-1"), inPool(), tu.Cordoned(), managed(state.PhaseWarming, t0.Add(-time.Hour)))...)
	warming.Annotations[state.UpgradedBootID] = "boot-2"
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	warm := tu.Pod(ds, "a", "new", tu.Ready())

	s := snapshot(t0, []*corev1.Node{warming}, map[string][]plan.Maintenance{"a": {cordon}}, warm)
	s.MaintenanceUnknown = "nodemaintenances.v1beta1.nodemaintenance.medik8s.io"
	a := action(t, compute(t, cfg, s), "a")
	require.Equal(t, plan.Release, a.Type)
	assert.Equal(t, state.ReasonWarm, a.Reason)
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "uid-nm-a stays the record, the cordon left out")
	assert.Contains(t, a.Message, "cordoned began after the upgrade was seen: the node is tainted again for it, the cordon only if no NodeMaintenance it records lasts")

	s = snapshot(t0, []*corev1.Node{warming}, map[string][]plan.Maintenance{"a": append(nm("a"), cordon)}, warm)
	a = action(t, compute(t, cfg, s), "a")
	require.Equal(t, plan.Release, a.Type)
	assert.Equal(t, ptr("cordoned,uid-nm-a"), a.Change.Annotations[state.MaintenanceID], "under its lasting NodeMaintenance")
}
