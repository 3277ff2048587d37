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

func TestPodNode(t *testing.T) {
	term := func(op corev1.NodeSelectorOperator, values ...string) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: op, Values: values}}}
	}
	withTerms := func(terms ...corev1.NodeSelectorTerm) tu.PodOption {
		return func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms},
			}}
		}
	}
	unbound := func(p *corev1.Pod) { p.Spec.NodeName = "" }
	cases := []struct {
		name string
		pod  *corev1.Pod
		want string
	}{
		{"bound", tu.Pod(ds, "a", "new"), "a"},
		{"bound: the binding wins over the affinity", tu.Pod(ds, "a", "new", withTerms(term(corev1.NodeSelectorOpIn, "b"))), "a"},
		{"not bound: the node its DaemonSet named", tu.Pod(ds, "a", "new", tu.Unbound()), "a"},
		{"not bound, no affinity", tu.Pod(ds, "a", "new", unbound), ""},
		{"two terms naming one node", tu.Pod(ds, "a", "new", unbound, withTerms(term(corev1.NodeSelectorOpIn, "a"), term(corev1.NodeSelectorOpIn, "a"))), "a"},
		{"two terms naming two nodes", tu.Pod(ds, "a", "new", unbound, withTerms(term(corev1.NodeSelectorOpIn, "a"), term(corev1.NodeSelectorOpIn, "b"))), ""},
		{"a term naming none", tu.Pod(ds, "a", "new", unbound, withTerms(term(corev1.NodeSelectorOpIn, "a"), corev1.NodeSelectorTerm{})), ""},
		{"several nodes in one term", tu.Pod(ds, "a", "new", unbound, withTerms(term(corev1.NodeSelectorOpIn, "a", "b"))), ""},
		{"NotIn", tu.Pod(ds, "a", "new", unbound, withTerms(term(corev1.NodeSelectorOpNotIn, "a"))), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, plan.PodNode(tc.pod))
		})
	}
}

// A warmer pod the scheduler cannot place is never bound, so it has no spec.nodeName: it is still
// the node's warmer pod, and its Unschedulable condition is reported as a pull problem is.
func TestUnschedulableWarmerIsReported(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	pod := tu.Pod(ds, "a", "new", tu.Unbound(), tu.Unschedulable("0/3 nodes are available: 1 Insufficient cpu."))
	s := snapshot(t0, []*corev1.Node{n}, nil, pod)
	a := action(t, compute(t, cfg, s), "a")
	require.Equal(t, plan.Record, a.Type)
	assert.Equal(t, plan.ProblemUnschedulable, a.Reason)
	require.Len(t, a.Events, 1)
	assert.Equal(t, corev1.EventTypeWarning, a.Events[0].Type)
	assert.Equal(t, "PrewarmUnschedulable", a.Events[0].Reason)
	require.NotNil(t, a.Change.Annotations[state.LastError])
	assert.Equal(t, "Unschedulable: pod warmer-a: 0/3 nodes are available: 1 Insufficient cpu.", *a.Change.Annotations[state.LastError])
	assert.Nil(t, a.Change.RemoveTaint, "not warm")

	p, err := plan.New(cfg)
	require.NoError(t, err)
	st := p.Describe(s, false)
	require.Len(t, st.Nodes, 1)
	assert.Equal(t, plan.ProblemUnschedulable, st.Nodes[0].Warmer)
}

// A warmer pod waiting for the scheduler when its node enters maintenance has run nothing there:
// it is not recorded as a pod that was already on the node, and counts once it is bound and Ready.
func TestUnboundPodIsNotAPreExistingOne(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool())
	pod := tu.Pod(ds, "a", "new", tu.Unbound())
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, pod)), "a")
	require.Equal(t, plan.Enter, a.Type)
	assert.NotContains(t, a.Change.Annotations, state.WarmerPodUID)
	assert.NotContains(t, a.Change.Annotations, state.WarmerPodRestarts)

	bound := tu.Pod(ds, "a", "new")
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, bound)), "a")
	require.Equal(t, plan.Enter, a.Type)
	require.Contains(t, a.Change.Annotations, state.WarmerPodUID, "a bound pod is recorded")
	assert.Equal(t, string(bound.UID), *a.Change.Annotations[state.WarmerPodUID])
}

// With target kernels, a node that enters maintenance already on one is upgraded at once: it is
// tainted as usual, and a warning note says that it opens once warm, before any reboot.
func TestEnteredOnATargetKernelIsAWarningNote(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Upgrade.KernelVersions = []string{"6.8.0-1"} })
	nodes := []*corev1.Node{
		tu.Node("on", inPool(), tu.WithKernel("6.8.0-1")),
		tu.Node("off", inPool(), tu.WithKernel("6.1.0-9")),
	}
	got := compute(t, cfg, snapshot(t0, nodes, map[string][]plan.Maintenance{"on": nm("on"), "off": nm("off")}))
	assert.Equal(t, plan.Enter, action(t, got, "on").Type)
	assert.Equal(t, plan.Enter, action(t, got, "off").Type)
	var warned []string
	for _, n := range got.Notes {
		if n.Warning {
			warned = append(warned, n.Node)
			assert.Contains(t, n.Message, "already on target kernel 6.8.0-1")
		}
	}
	assert.Equal(t, []string{"on"}, warned)

	// With a template the rule is the template's: no note.
	cfg.Upgrade.When = `{{ has .Kernel .KernelVersions }}`
	got = compute(t, cfg, snapshot(t0, nodes, map[string][]plan.Maintenance{"on": nm("on")}))
	assert.Equal(t, plan.Enter, action(t, got, "on").Type)
	for _, n := range got.Notes {
		assert.False(t, n.Warning, n.Message)
	}
}

// status shows what the planner does with odd records: a phase set by hand that the planner does
// not know is "unknown" (with the value quoted), not counted as the phase or total it names; an
// uninstall mark with no value stops the installation, and status says so.
func TestStatusOfOddRecords(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	handSet := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	handSet.Annotations[state.Phase] = "released"
	s := snapshot(t0, []*corev1.Node{handSet}, nil)
	st := p.Describe(s, false)
	require.Len(t, st.Nodes, 1)
	assert.Equal(t, "unknown", st.Nodes[0].Phase)
	assert.Contains(t, st.Nodes[0].LastProblem, `unknown phase "released"`)
	assert.Equal(t, map[string]int{"pool": 1, "unknown": 1}, st.Totals)
	assert.Equal(t, map[string]int{plan.ProblemOther: 1}, st.Problems, "a problem, as node_problems counts it")
	assert.Empty(t, st.Uninstalling)

	s.DaemonSet = s.DaemonSet.DeepCopy()
	s.DaemonSet.Annotations = map[string]string{state.Uninstalling: ""}
	assert.Equal(t, "(no time recorded)", p.Describe(s, false).Uninstalling)
	s.DaemonSet.Annotations[state.Uninstalling] = "2026-11-27T12:00:00Z"
	assert.Equal(t, "2026-11-27T12:00:00Z", p.Describe(s, false).Uninstalling)
}

// status shows a managed node's time in phase as the planner reads it: a time annotation that
// is missing, malformed or in the future has no age, and its last problem says a cycle repairs
// it (an age clamped to 0 would hide that the timeout has not started).
func TestStatusOfOddTimes(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	future := tu.Node("f", inPool(), managed(state.PhaseTainted, t0.Add(48*time.Hour)))
	garbage := tu.Node("g", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	garbage.Annotations[state.UpgradedAt] = "yesterday"
	missing := tu.Node("m", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	delete(missing.Annotations, state.TaintedAt)
	fine := tu.Node("ok", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	st := p.Describe(snapshot(t0, []*corev1.Node{future, garbage, missing, fine}, nil), false)
	require.Len(t, st.Nodes, 4)
	byName := map[string]plan.NodeStatus{}
	for _, n := range st.Nodes {
		byName[n.Name] = n
	}
	for name, want := range map[string]string{
		"f": state.TaintedAt + " is in the future (",
		"g": state.UpgradedAt + ` is malformed ("yesterday"): a cycle sets it to now (PrewarmStateRepaired)`,
		"m": state.TaintedAt + " is missing: a cycle sets it to now (PrewarmStateRepaired)",
	} {
		assert.True(t, byName[name].Since.IsZero(), name)
		assert.Contains(t, byName[name].LastProblem, want, name)
	}
	assert.Equal(t, t0.Add(-time.Hour), byName["ok"].Since)
	assert.Empty(t, byName["ok"].LastProblem)
}
