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

// failingTemplate renders on the sample node used at start-up and fails on real nodes (a label
// that some nodes lack, read with missingkey=error).
func failingTemplate(c *config.Config) {
	c.Upgrade.When = `{{ if eq .Node.Name "sample" }}true{{ else }}{{ .Labels.nope }}{{ end }}`
}

// A tainted node whose upgrade.when template fails on it is still released (timeout) once
// maxWaitForUpgrade passes, whether or not the error is recorded yet (design.md rule 6).
func TestTemplateErrorStillTimesOut(t *testing.T) {
	cfg := testConfig(t, failingTemplate)
	// Tainted 7 hours ago; maxWaitForUpgrade is 6 hours.
	fresh := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-7*time.Hour)))
	reported := tu.Node("b", inPool(), managed(state.PhaseTainted, t0.Add(-7*time.Hour)),
		tu.WithAnnotations(state.LastError, "UpgradeRuleError: upgrade.when: map has no entry for key \"nope\""))
	maint := map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b")}
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{fresh, reported}, maint))
	assert.Equal(t, []want{
		{"a", plan.Release, state.ReasonTimeout},
		{"b", plan.Release, state.ReasonTimeout},
	}, summarize(got), "maxWaitForUpgrade passed: released with a Warning, whatever the template says")
}

// A tainted node that left its maintenance more than cancelAfter ago is released (cancelled)
// when its upgrade.when template fails on it too (design.md rule 5).
func TestTemplateErrorStillCancels(t *testing.T) {
	cfg := testConfig(t, failingTemplate)
	n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
		tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-20*time.Minute)),
			state.LastError, "UpgradeRuleError: upgrade.when: map has no entry for key \"nope\""))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil))
	assert.Equal(t, []want{{"a", plan.Release, state.ReasonCancelled}}, summarize(got),
		"left maintenance 20 minutes ago, cancelAfter is 10 minutes")
}

// Only a node that is not upgraded is cancelled (design.md rule 5): one that came back on the
// new kernel but is not Ready yet (CNI, a GPU driver still starting) when its maintenance ends
// waits for Ready, and then for its warmer pod, or for maxWaitForUpgrade.
func TestUpgradedButNotReadyIsNotCancelled(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.NotReady(),
		tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-20*time.Minute)))},
		upgradedTo("6.8.0-1")...)...)
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil))
	for _, a := range got.Actions {
		assert.False(t, a.Type == plan.Release && a.Reason == state.ReasonCancelled,
			"upgraded (kernel 6.8.0-1, new boot ID) but NotReady: not a cancelled maintenance, got %s/%s: %s", a.Type, a.Reason, a.Message)
	}
}
