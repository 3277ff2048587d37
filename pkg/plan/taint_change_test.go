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

// A configuration change from one cluster-autoscaler taint key (ignore-taint.* before 1.29,
// startup-taint.* after, both under kubernetes.io) to another, or to os-upgrade, swaps the taint
// on managed nodes, and the uninstall's cleanup removes the old one: no taint is left behind.
func TestTaintKeyChangeFromAutoscalerPrefix(t *testing.T) {
	for _, tc := range []struct{ from, to string }{
		{"ignore-taint.cluster-autoscaler.kubernetes.io/prewarm", "startup-taint.cluster-autoscaler.kubernetes.io/prewarm"},
		{"startup-taint.cluster-autoscaler.kubernetes.io/prewarm", "os-upgrade"},
	} {
		t.Run(tc.from+"->"+tc.to, func(t *testing.T) {
			old := corev1.Taint{Key: tc.from, Value: "true", Effect: corev1.TaintEffectNoSchedule}
			// The old configuration is valid.
			testConfig(t, func(c *config.Config) { c.Taint.Key = tc.from })
			cfg := testConfig(t, func(c *config.Config) { c.Taint.Key = tc.to })

			n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
			n.Spec.Taints = []corev1.Taint{old} // what the old configuration put there
			n.Annotations[state.Taint] = state.FormatTaint(old)
			maint := map[string][]plan.Maintenance{"a": nm("a")}
			p, err := plan.New(cfg)
			require.NoError(t, err)

			got := p.Compute(snapshot(t0, []*corev1.Node{n}, maint))
			require.Len(t, got.Actions, 1)
			a := got.Actions[0]
			assert.NotEqual(t, state.ReasonExternal, a.Reason, "nobody removed the taint: %s", a.Message)
			if assert.NotNil(t, a.Change.RemoveTaint, "the old taint %s must be swapped or removed (%s/%s)", tc.from, a.Type, a.Reason) {
				assert.Equal(t, tc.from, a.Change.RemoveTaint.Key)
			}

			clean := p.Cleanup(snapshot(t0, []*corev1.Node{n}, maint), true)
			require.Len(t, clean.Actions, 1)
			if assert.NotNil(t, clean.Actions[0].Change.RemoveTaint, "uninstall leaves taint %s on the node", tc.from) {
				assert.Equal(t, tc.from, clean.Actions[0].Change.RemoveTaint.Key)
			}
		})
	}
}

// A record the node's phase plans goes before a swap for a changed configuration, which follows
// at the next plan: a tainted node that left its maintenance starts its cancelAfter timer even if
// the API server keeps refusing the swap (a patch carrying both would be refused whole), and is
// cancelled on time.
func TestRecordGoesBeforeASwap(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Taint.Key = "example.com/new-upgrade" })
	old := corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}
	n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	n.Spec.Taints = []corev1.Taint{old}
	n.Annotations[state.Taint] = state.FormatTaint(old)

	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
	require.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "left-maintenance", a.Reason)
	assert.Nil(t, a.Change.RemoveTaint, "the swap waits")
	require.NotNil(t, a.Change.Annotations[state.LeftMaintenanceAt])
	apply(n, a.Change)

	a = action(t, compute(t, cfg, snapshot(t0.Add(time.Minute), []*corev1.Node{n}, nil)), "a")
	require.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "taint-changed", a.Reason, "then the swap")
	require.NotNil(t, a.Change.RemoveTaint)
	assert.Equal(t, taintKey, a.Change.RemoveTaint.Key)

	// The swap is refused, again and again; the timer it waited for runs: cancelAfter after the
	// node left its maintenance, it is cancelled.
	a = action(t, compute(t, cfg, snapshot(t0.Add(cfg.CancelAfter.Duration), []*corev1.Node{n}, nil)), "a")
	assert.Equal(t, plan.Release, a.Type)
	assert.Equal(t, state.ReasonCancelled, a.Reason)
}

// An upgrade seen while a swap is due goes in the swap's patch: the node goes warming under the
// configured taint and status label at once, so that the new warmer, which tolerates only the new
// taint and follows only the new key, starts now rather than a cycle later.
func TestUpgradeSeenWithASwap(t *testing.T) {
	const newLabel = "example.com/prewarm-status"
	cfg := testConfig(t, func(c *config.Config) {
		c.Taint.Key = "example.com/new-upgrade"
		c.StatusLabel.Key = newLabel
	})
	old := corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}
	n := tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, upgradedTo("5.15.0-2")...)...)
	n.Annotations[state.Taint] = state.FormatTaint(old)
	n.Annotations[state.StatusLabel] = labelKey

	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})), "a")
	require.Equal(t, plan.Upgraded, a.Type, a.Message)
	require.NotNil(t, a.Change.RemoveTaint)
	assert.Equal(t, old, *a.Change.RemoveTaint)
	require.NotNil(t, a.Change.AddTaint)
	assert.Equal(t, "example.com/new-upgrade", a.Change.AddTaint.Key)
	require.Contains(t, a.Change.Labels, labelKey)
	assert.Nil(t, a.Change.Labels[labelKey], "the old key goes")
	require.NotNil(t, a.Change.Labels[newLabel])
	assert.Equal(t, "warming", *a.Change.Labels[newLabel])
	assert.Equal(t, state.PhaseWarming, *a.Change.Annotations[state.Phase])
	assert.Equal(t, state.FormatTaint(*a.Change.AddTaint), *a.Change.Annotations[state.Taint])
	assert.Equal(t, newLabel, *a.Change.Annotations[state.StatusLabel])

	// Applied, the node is warming under the new keys and needs nothing more.
	apply(n, a.Change)
	assert.Empty(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})).Actions)
}
