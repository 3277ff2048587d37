package plan_test

import (
	"slices"
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
	assert.Empty(t, summarize(got),
		"upgraded (kernel 6.8.0-1, new boot ID) but NotReady, an hour into maxWaitForUpgrade: not cancelled, not warming yet, nothing to do")
}

// With upgrade.kernelVersions, a node that rebooted during its maintenance onto a kernel the list
// does not name is not upgraded by the rule; cancelAfter releases it once its maintenance is gone,
// and since it may have lost its images, the release comes with a Warning Event naming the
// kernel. One that never rebooted is cancelled as usual, without one.
func TestRebootOntoAnUnlistedKernelIsAWarningCancel(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Upgrade.KernelVersions = []string{"6.8.0-1"} })
	left := tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-20*time.Minute)))
	rebooted := tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), left},
		upgradedTo("6.9.0-1")...)...)
	newBootOnly := tu.Node("b", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), left, tu.WithKernel("5.15.0-1"), tu.WithBootID("boot-2"))
	untouched := tu.Node("c", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), left, tu.WithKernel("5.15.0-1"), tu.WithBootID("boot-1"))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{rebooted, newBootOnly, untouched}, nil))
	assert.Equal(t, []want{
		{"a", plan.Release, state.ReasonCancelled},
		{"b", plan.Release, state.ReasonCancelled},
		{"c", plan.Release, state.ReasonCancelled},
	}, summarize(got))
	warnings := map[string][]plan.Event{}
	for _, a := range got.Actions {
		for _, ev := range a.Events {
			if ev.Type == corev1.EventTypeWarning {
				warnings[a.Node] = append(warnings[a.Node], ev)
			}
		}
	}
	if assert.Len(t, warnings["a"], 1) {
		assert.Equal(t, "PrewarmKernelNotTargeted", warnings["a"][0].Reason)
		assert.Contains(t, warnings["a"][0].Message, "kernel 6.9.0-1, which upgrade.kernelVersions does not list")
	}
	assert.Len(t, warnings["b"], 1, "a new boot ID on the old kernel is a reboot too")
	assert.Empty(t, warnings["c"], "never rebooted: a plain cancel")
}

// With upgrade.kernelVersionLabel, a node's kernel is the label where the node has it, else
// status.nodeInfo. The baseline records which of the two it was read from, and the change rule
// reads the node's kernel from there again: a label that appears (or goes) between the entry
// and the reboot, written in a form of its own, is no upgrade; a change in the same source is.
func TestKernelBaselineIsComparedWithItsOwnSource(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Upgrade.KernelVersionLabel = "example.com/kernel" })
	maint := map[string][]plan.Maintenance{"info": nm("info"), "label": nm("label")}
	fromInfo := tu.Node("info", inPool(), tu.WithKernel("5.15.0-1057-azure"), tu.WithBootID("boot-1"))
	fromLabel := tu.Node("label", inPool(), tu.WithKernel("5.15.0-1057-azure"), tu.WithBootID("boot-1"), tu.WithLabels("example.com/kernel", "5.15.0-1057"))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{fromInfo, fromLabel}, maint))
	require.Len(t, got.Actions, 2)
	entered := map[string]*corev1.Node{"info": fromInfo, "label": fromLabel}
	for _, a := range got.Actions {
		require.Equal(t, plan.Enter, a.Type)
		ann := a.Change.Annotations
		want := map[string][2]string{"info": {"5.15.0-1057-azure", "nodeInfo"}, "label": {"5.15.0-1057", "label"}}[a.Node]
		assert.Equal(t, want[0], *ann[state.BaselineKernel], a.Node)
		assert.Equal(t, want[1], *ann[state.BaselineKernelSource], a.Node)
		apply(entered[a.Node], a.Change)
	}

	// Before any reboot, the first node gets the label, the second loses it: no upgrade.
	fromInfo.Labels["example.com/kernel"] = "5.15.0-1057"
	delete(fromLabel.Labels, "example.com/kernel")
	got = compute(t, cfg, snapshot(t0.Add(time.Minute), []*corev1.Node{fromInfo, fromLabel}, maint))
	for _, a := range got.Actions {
		assert.NotEqual(t, plan.Upgraded, a.Type, "%s: %s", a.Node, a.Message)
	}

	// A new kernel in the source the baseline was read from is an upgrade.
	fromInfo.Status.NodeInfo.KernelVersion = "5.15.0-1060-azure"
	fromLabel.Labels["example.com/kernel"] = "5.15.0-1060"
	got = compute(t, cfg, snapshot(t0.Add(2*time.Minute), []*corev1.Node{fromInfo, fromLabel}, maint))
	assert.Equal(t, []want{{"info", plan.Upgraded, "upgrade-seen"}, {"label", plan.Upgraded, "upgrade-seen"}}, summarize(got))
}

// apply writes ch to n as the engine's patch would.
func apply(n *corev1.Node, ch plan.Change) {
	for _, m := range []struct {
		to      *map[string]string
		changes map[string]*string
	}{{&n.Labels, ch.Labels}, {&n.Annotations, ch.Annotations}} {
		if *m.to == nil {
			*m.to = map[string]string{}
		}
		for k, v := range m.changes {
			if v == nil {
				delete(*m.to, k)
			} else {
				(*m.to)[k] = *v
			}
		}
	}
	if rm := ch.RemoveTaint; rm != nil {
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == rm.Key && t.Effect == rm.Effect })
	}
	if add := ch.AddTaint; add != nil {
		n.Spec.Taints = append(n.Spec.Taints, *add)
	}
}

// The kernel source also decides what counts as a reboot for the target-kernel cancel Warning,
// what a configuration without the kernel label reads, and how a baseline recorded without its
// source (by an older version) is compared.
func TestKernelSourceEdgeCases(t *testing.T) {
	left := tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-20*time.Minute)))

	t.Run("a label that appeared is no reboot onto an unlisted kernel", func(t *testing.T) {
		cfg := testConfig(t, func(c *config.Config) {
			c.Upgrade.KernelVersions = []string{"6.8.0-1"}
			c.Upgrade.KernelVersionLabel = "example.com/kernel"
		})
		n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), left,
			tu.WithKernel("5.15.0-1"), tu.WithBootID("boot-1"), tu.WithLabels("example.com/kernel", "5.15.0"))
		n.Annotations[state.BaselineKernelSource] = "nodeInfo"
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil))
		assert.Equal(t, []want{{"a", plan.Release, state.ReasonCancelled}}, summarize(got))
		assert.Empty(t, got.Actions[0].Events, "never rebooted: a plain cancel")
	})

	t.Run("read from a label no longer configured: the boot ID decides", func(t *testing.T) {
		cfg := testConfig(t)
		n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithKernel("5.15.0-1-azure"), tu.WithBootID("boot-1"))
		n.Annotations[state.BaselineKernel] = "5.15.0-1"
		n.Annotations[state.BaselineKernelSource] = "label"
		maint := map[string][]plan.Maintenance{"a": nm("a")}
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
		assert.Empty(t, got.Actions, "same boot: not upgraded")
		n.Status.NodeInfo.BootID = "boot-2"
		got = compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
		assert.Equal(t, []want{{"a", plan.Upgraded, "upgrade-seen"}}, summarize(got))
	})

	t.Run("a baseline without its source matches either", func(t *testing.T) {
		cfg := testConfig(t, func(c *config.Config) { c.Upgrade.KernelVersionLabel = "example.com/kernel" })
		maint := map[string][]plan.Maintenance{"a": nm("a")}
		n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithKernel("5.15.0-1-azure"), tu.WithBootID("boot-1"),
			tu.WithLabels("example.com/kernel", "5.15.0-1"))
		n.Annotations[state.BaselineKernel] = "5.15.0-1-azure" // read from nodeInfo, before the label came
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
		assert.Empty(t, got.Actions, "the baseline is nodeInfo's kernel: not upgraded")
		n.Status.NodeInfo.KernelVersion = "5.15.0-2-azure"
		n.Labels["example.com/kernel"] = "5.15.0-2"
		got = compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
		assert.Equal(t, []want{{"a", plan.Upgraded, "upgrade-seen"}}, summarize(got), "neither matches: upgraded")
	})
}
