package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A node whose upgrade.when fails, cancelled once it left maintenance, may have been upgraded: its
// release carries a Warning Event saying so.
func TestRuleErrorCancelIsNotSilent(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel time.Duration
		left   string // left-maintenance-at, "" when not recorded yet
	}{
		{"cancelAfter 0", 0, ""},
		{"left before the last cycle, error never reported", 10 * time.Minute, state.FormatTime(t0.Add(-15 * time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, failingTemplate, func(c *config.Config) { c.CancelAfter = config.NewDuration(tc.cancel) })
			n := tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, upgradedTo("6.8.0-1")...)...)
			if tc.left != "" {
				n.Annotations[state.LeftMaintenanceAt] = tc.left
			}
			got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil))
			released, warned := false, false
			for _, a := range got.Actions {
				released = released || a.Type == plan.Release
				for _, ev := range a.Events {
					warned = warned || ev.Type == corev1.EventTypeWarning
				}
			}
			assert.True(t, released, "cancelled: %+v", summarize(got))
			assert.True(t, warned, "released (%+v) although upgrade.when cannot tell whether it was upgraded, and no Warning Event says so", summarize(got))
		})
	}
}
