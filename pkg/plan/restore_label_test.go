package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Putting back a removed status label never holds back a release: a node whose warmer pod is
// Ready, or whose timeout passed, is released whether or not the label is there.
func TestRestoredStatusLabelDoesNotHoldBackReleases(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		name   string
		now    time.Time
		pods   []*corev1.Pod
		reason string
	}{
		{"warmer pod Ready", t0, []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())}, state.ReasonWarm},
		{"maxWaitForWarm passed", t0.Add(3 * time.Hour), nil, state.ReasonTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
			repairs := 0
			released := false
			for cycle := 0; cycle < 5 && !released; cycle++ {
				delete(n.Labels, labelKey) // removed again since the last cycle
				got := compute(t, cfg, snapshot(tc.now.Add(time.Duration(cycle)*5*time.Minute), []*corev1.Node{n}, nil, tc.pods...))
				require.Len(t, got.Actions, 1)
				a := got.Actions[0]
				switch {
				case a.Type == plan.Release:
					released = true
					assert.Equal(t, tc.reason, a.Reason)
				case a.Reason == "repaired":
					repairs++
					n = n.DeepCopy()
					n.Labels[labelKey] = *a.Change.Labels[labelKey]
				}
			}
			assert.True(t, released, "never released after %d repairs of the status label", repairs)
		})
	}
}

// Nor does it put off a record that starts or repairs a timer: a tainted node whose maintenance
// ended gets its left-maintenance time in the same patch that puts the label back, so cancelAfter
// runs even while a tool keeps removing the label.
func TestRestoredStatusLabelKeepsTheTimerRecord(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	delete(n.Labels, labelKey)
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil))
	require.Len(t, got.Actions, 1)
	a := got.Actions[0]
	assert.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "left-maintenance", a.Reason)
	require.NotNil(t, a.Change.Annotations[state.LeftMaintenanceAt])
	assert.Equal(t, state.FormatTime(t0), *a.Change.Annotations[state.LeftMaintenanceAt])
	require.NotNil(t, a.Change.Labels[labelKey], "the label is put back in the same patch")
	assert.Equal(t, "upgrading", *a.Change.Labels[labelKey])
	var repaired bool
	for _, ev := range a.Events {
		repaired = repaired || (ev.Reason == "PrewarmStateRepaired" && ev.Type == corev1.EventTypeWarning)
	}
	assert.True(t, repaired, "the repair is still said: %+v", a.Events)

	// cancelAfter later, the node is cancelled, label or not.
	n.Annotations[state.LeftMaintenanceAt] = state.FormatTime(t0)
	got = compute(t, cfg, snapshot(t0.Add(cfg.CancelAfter.Duration), []*corev1.Node{n}, nil))
	require.Len(t, got.Actions, 1)
	assert.Equal(t, plan.Release, got.Actions[0].Type)
	assert.Equal(t, state.ReasonCancelled, got.Actions[0].Reason)
}

// A node that joins with our taint while a maintenance names it records that maintenance at
// adoption, as an entry would: released while it lasts, it is not taken for new and entered.
func TestAdoptionRecordsTheMaintenanceNamingTheNode(t *testing.T) {
	cfg := testConfig(t)
	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{joined}, map[string][]plan.Maintenance{"j": nm("j")})), "j")
	require.Equal(t, plan.Adopt, a.Type)
	require.NotNil(t, a.Change.Annotations[state.MaintenanceID])
	assert.Equal(t, "uid-nm-j", *a.Change.Annotations[state.MaintenanceID])

	// Without a maintenance, an old record goes, as before.
	stale := tu.Node("k", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule), tu.WithAnnotations(state.MaintenanceID, "uid-old"))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{stale}, nil)), "k")
	require.Equal(t, plan.Adopt, a.Type)
	require.Contains(t, a.Change.Annotations, state.MaintenanceID)
	assert.Nil(t, a.Change.Annotations[state.MaintenanceID])
}
