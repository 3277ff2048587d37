package plan_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// notesOf returns the plan's notes about node.
func notesOf(p plan.Plan, node string) []plan.Note {
	var out []plan.Note
	for _, n := range p.Notes {
		if n.Node == node {
			out = append(out, n)
		}
	}
	return out
}

// noNodeInfo is a node that reports no status.nodeInfo (hand-made, or a broken kubelet).
func noNodeInfo() tu.NodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo = corev1.NodeSystemInfo{} }
}

// With the default change rule, a node that reports neither a kernel nor a boot ID could never be
// seen upgraded: it is not tainted (it would wait maxWaitForUpgrade, then open cold), and a WARN
// note says why. A kernel or a boot ID alone, target kernels or a template make it detectable.
func TestUndetectableUpgradeIsNotEntered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*config.Config)
		node  []tu.NodeOption
		enter bool
	}{
		{"no nodeInfo", nil, []tu.NodeOption{noNodeInfo()}, false},
		{"no nodeInfo, kernel label configured but absent", func(c *config.Config) { c.Upgrade.KernelVersionLabel = "kernel-version" },
			[]tu.NodeOption{noNodeInfo()}, false},
		{"kernel only", nil, []tu.NodeOption{noNodeInfo(), tu.WithKernel("5.15.0-1")}, true},
		{"boot ID only", nil, []tu.NodeOption{noNodeInfo(), tu.WithBootID("boot-1")}, true},
		{"kernel from the label", func(c *config.Config) { c.Upgrade.KernelVersionLabel = "kernel-version" },
			[]tu.NodeOption{noNodeInfo(), tu.WithLabels("kernel-version", "5.15.0-1")}, true},
		{"target kernels", func(c *config.Config) { c.Upgrade.KernelVersions = []string{"6.8.0-1"} },
			[]tu.NodeOption{noNodeInfo()}, true},
		{"upgrade.when", func(c *config.Config) { c.Upgrade.When = `{{ ne .BootID .Baseline.BootID }}` },
			[]tu.NodeOption{noNodeInfo()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mutate []func(*config.Config)
			if tc.cfg != nil {
				mutate = append(mutate, tc.cfg)
			}
			cfg := testConfig(t, mutate...)
			n := tu.Node("a", append([]tu.NodeOption{inPool()}, tc.node...)...)
			got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
			p, err := plan.New(cfg)
			require.NoError(t, err)
			st := p.Describe(snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}), false)
			require.Len(t, st.Nodes, 1)
			if tc.enter {
				assert.Equal(t, []want{{"a", plan.Enter, plan.SourceNodeMaintenance}}, summarize(got))
				assert.Empty(t, got.Notes)
				assert.Equal(t, "waiting", st.Nodes[0].Phase, "until the next cycle")
				assert.Empty(t, st.Nodes[0].LastProblem)
				return
			}
			assert.Empty(t, got.Actions, "not tainted")
			notes := notesOf(got, "a")
			require.Len(t, notes, 1)
			assert.True(t, notes[0].Warning, "logged at WARN")
			assert.Contains(t, notes[0].Message, "upgrade could not be detected")
			assert.Contains(t, notes[0].Message, "no kernel")
			assert.Contains(t, notes[0].Message, "no boot ID")
			if cfg.Upgrade.KernelVersionLabel != "" {
				assert.Contains(t, notes[0].Message, "label kernel-version")
			}

			// status shows it waiting, as a node in maintenance that is not tainted, and why it
			// is not a wait for the next cycle: the plan's note.
			assert.Equal(t, "waiting", st.Nodes[0].Phase)
			assert.Equal(t, notes[0].Message, st.Nodes[0].LastProblem)
		})
	}
}

// A node left untainted because its upgrade could not be detected takes no slot of
// maxConcurrent: the next node in maintenance enters in its stead, and the note about it says
// why it is left alone rather than that the budget is full.
func TestUndetectableTakesNoBudget(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(1) })
	blind := tu.Node("a", inPool(), noNodeInfo())
	fine := tu.Node("b", inPool())
	other := tu.Node("c", inPool())
	maint := map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b"), "c": nm("c")}

	got := compute(t, cfg, snapshot(t0, []*corev1.Node{blind, fine, other}, maint))
	assert.Equal(t, []want{{"b", plan.Enter, plan.SourceNodeMaintenance}}, summarize(got))
	require.Len(t, notesOf(got, "a"), 1)
	assert.True(t, notesOf(got, "a")[0].Warning)
	assert.Contains(t, notesOf(got, "a")[0].Message, "upgrade could not be detected")
	require.Len(t, notesOf(got, "c"), 1)
	assert.Contains(t, notesOf(got, "c")[0].Message, "maxConcurrent (1)")
	assert.Equal(t, 0, got.EntriesOnReleases)

	// The budget full (b tainted): a's note is still why it is left alone.
	tainted := tu.Node("b", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	got = compute(t, cfg, snapshot(t0, []*corev1.Node{blind, tainted, other}, maint))
	assert.Empty(t, got.Actions)
	require.Len(t, notesOf(got, "a"), 1)
	assert.Contains(t, notesOf(got, "a")[0].Message, "upgrade could not be detected")

	// b released (warm) in the same plan: c takes its slot, on the release; a takes none.
	warming := tu.Node("b", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	got = compute(t, cfg, snapshot(t0, []*corev1.Node{blind, warming, other}, maint, tu.Pod(ds, "b", "new", tu.Ready())))
	assert.Equal(t, []want{{"b", plan.Release, state.ReasonWarm}, {"c", plan.Enter, plan.SourceNodeMaintenance}}, summarize(got))
	assert.Equal(t, 1, got.EntriesOnReleases)
}

// A node with our phase whose owner record names no installation (missing, empty, or not
// <namespace>/<release>) is nobody's: nothing would ever remove its taint, so the note is a
// warning that says what to do. It is still not written, nor released by cleanup. Another
// installation's node is skipped quietly, unless that installation uses our taint or status label
// key: then the note is a warning that the two need distinct keys.
func TestOwnerRecordMissingOrMalformed(t *testing.T) {
	const other = `is owned by "other/release", which uses this installation's (` + instance + `) `
	const distinct = `: installations whose pools overlap need distinct taint.key and statusLabel.key`
	for _, tc := range []struct {
		name    string
		owner   *string
		node    func(n *corev1.Node, cfg *config.Config) // after the owner is set
		warning bool
		nobodys bool
		says    string
	}{
		{name: "missing", warning: true, nobodys: true, says: "is missing"},
		{name: "empty", owner: ptr(""), warning: true, nobodys: true, says: "is empty"},
		{name: "trailing space", owner: ptr(instance + " "), warning: true, nobodys: true, says: `is malformed ("prewarm/test "`},
		{name: "no slash", owner: ptr("prewarm"), warning: true, nobodys: true, says: "is malformed"},
		{name: "two slashes", owner: ptr("prewarm/test/x"), warning: true, nobodys: true, says: "is malformed"},
		{name: "upper case", owner: ptr("Prewarm/Test"), warning: true, nobodys: true, says: "is malformed"},
		{name: "another installation", owner: ptr("other/release"), node: func(n *corev1.Node, _ *config.Config) { otherKeys(n) },
			says: `is owned by "other/release", not this installation`},
		{name: "another installation with our keys", owner: ptr("other/release"), warning: true,
			says: other + `taint key ` + taintKey + ` and status label key ` + labelKey + distinct},
		{name: "another installation with our keys, in a pool of its own", owner: ptr("other/release"),
			node: func(n *corev1.Node, cfg *config.Config) {
				for k := range cfg.Pool.NodeSelector { // listed for the status label it carries
					delete(n.Labels, k)
				}
			},
			says: `is owned by "other/release", not this installation`},
		{name: "another installation with our taint key, recorded with another effect", owner: ptr("other/release"),
			node: func(n *corev1.Node, _ *config.Config) {
				otherKeys(n)
				n.Spec.Taints = []corev1.Taint{{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoExecute}}
				n.Annotations[state.Taint] = taintKey + "=true:NoExecute"
				n.Annotations[state.StatusLabel] = "other-upgrade/status"
			},
			warning: true, says: other + `taint key ` + taintKey + distinct},
		{name: "another installation with our status label key, recorded", owner: ptr("other/release"),
			node: func(n *corev1.Node, _ *config.Config) {
				otherKeys(n)
				n.Annotations[state.Taint] = "other-upgrade=true:NoSchedule"
				n.Annotations[state.StatusLabel] = labelKey
			},
			warning: true, says: other + `status label key ` + labelKey + distinct},
		{name: "another installation whose records name other keys", owner: ptr("other/release"),
			node: func(n *corev1.Node, _ *config.Config) {
				// The records, not a taint or label someone else put on the node, say whose keys.
				n.Annotations[state.Taint] = "other-upgrade=true:NoSchedule"
				n.Annotations[state.StatusLabel] = "other-upgrade/status"
			},
			says: `is owned by "other/release", not this installation`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
			delete(n.Annotations, state.Owner)
			if tc.owner != nil {
				n.Annotations[state.Owner] = *tc.owner
			}
			if tc.node != nil {
				tc.node(n, cfg)
			}
			s := snapshot(t0.Add(100*time.Hour), []*corev1.Node{n}, nil)
			got := compute(t, cfg, s)
			assert.Empty(t, got.Actions, "not written, whatever its timestamps")
			notes := notesOf(got, "a")
			require.Len(t, notes, 1)
			assert.Equal(t, tc.warning, notes[0].Warning)
			assert.Contains(t, notes[0].Message, tc.says)
			if tc.nobodys {
				assert.Contains(t, notes[0].Message, "set "+state.Owner+" to "+instance)
				assert.Contains(t, notes[0].Message, "cleanup")
			}

			p, err := plan.New(cfg)
			require.NoError(t, err)
			assert.Empty(t, p.Cleanup(s, false).Actions, "cleanup releases only the nodes this installation owns")
		})
	}
}

// otherKeys gives a managed node another installation's taint and status label keys instead of
// ours.
func otherKeys(n *corev1.Node) {
	for i := range n.Spec.Taints {
		if n.Spec.Taints[i].Key == taintKey {
			n.Spec.Taints[i].Key = "other-upgrade"
		}
	}
	if v, ok := n.Labels[labelKey]; ok {
		delete(n.Labels, labelKey)
		n.Labels["other-upgrade/status"] = v
	}
}

// Annotation values are editable by hand and may be huge (the API server allows 256 KiB): the
// notes, messages and Events that quote them cut them, rather than log them whole every cycle.
func TestQuotedAnnotationValuesAreCut(t *testing.T) {
	const size = 60 << 10
	huge := strings.Repeat("x", size)
	const limit = 600 // the message around one cut value

	short := func(t *testing.T, what, s string) {
		t.Helper()
		assert.Less(t, len(s), limit, "%s is %d bytes", what, len(s))
		assert.Contains(t, s, "... (61440 bytes)", what)
		assert.True(t, utf8.ValidString(s), "%s is not valid UTF-8", what)
	}
	managedNode := func(mutate func(n *corev1.Node)) *corev1.Node {
		n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
		mutate(n)
		return n
	}

	for _, tc := range []struct {
		name   string
		mutate func(n *corev1.Node)
	}{
		{"unknown phase", func(n *corev1.Node) { n.Annotations[state.Phase] = huge }},
		{"unknown phase of multi-byte characters", func(n *corev1.Node) { n.Annotations[state.Phase] = strings.Repeat("é", size/2) }},
		{"unknown phase of control characters", func(n *corev1.Node) { n.Annotations[state.Phase] = strings.Repeat("\x00", size) }},
		{"phase of another installation", func(n *corev1.Node) {
			n.Annotations[state.Phase] = huge
			n.Annotations[state.Owner] = "other/release"
		}},
		{"malformed owner", func(n *corev1.Node) { n.Annotations[state.Owner] = huge }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := compute(t, testConfig(t), snapshot(t0, []*corev1.Node{managedNode(tc.mutate)}, nil))
			require.Len(t, got.Notes, 1)
			short(t, "note", got.Notes[0].Message)
		})
	}

	t.Run("malformed tainted-at", func(t *testing.T) {
		n := managedNode(func(n *corev1.Node) { n.Annotations[state.TaintedAt] = huge })
		got := compute(t, testConfig(t), snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
		a := action(t, got, "a")
		require.Equal(t, "repaired", a.Reason)
		short(t, "message", a.Message)
		require.Len(t, a.Events, 1)
		short(t, "event", a.Events[0].Message)
	})

	t.Run("baseline kernel", func(t *testing.T) {
		cfg := testConfig(t, func(c *config.Config) { c.Events.Transitions = true })
		n := managedNode(func(n *corev1.Node) { n.Annotations[state.BaselineKernel] = huge })
		upgradedTo("6.8.0-1")[1](n)
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
		a := action(t, got, "a")
		require.Equal(t, plan.Upgraded, a.Type)
		short(t, "message", a.Message)
		require.Len(t, a.Events, 1)
		short(t, "event", a.Events[0].Message)
	})

	t.Run("short values are quoted whole", func(t *testing.T) {
		n := managedNode(func(n *corev1.Node) { n.Annotations[state.Phase] = "bogus" })
		got := compute(t, testConfig(t), snapshot(t0, []*corev1.Node{n}, nil))
		require.Len(t, got.Notes, 1)
		assert.Contains(t, got.Notes[0].Message, `unknown phase "bogus";`)
	})
}

// A pool selector that matches no node (a typo in pool.nodeSelector) is said at WARN, naming the
// selector, in every plan of the whole pool; status shows it. Nodes that left the pool are still
// released. A pool with a node has no such note.
func TestEmptyPoolIsAWarning(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	const message = "no node matches the pool selector " + poolKey + "=" + poolVal +
		": nothing to pre-warm until one does; check pool.nodeSelector against the nodes' labels"
	left := tu.Node("left", managed(state.PhaseWarming, t0))
	for _, tc := range []struct {
		name  string
		nodes []*corev1.Node
		want  []want
	}{
		{"no node", nil, nil},
		{"nodes of another pool", []*corev1.Node{tu.Node("x", tu.WithLabels(poolKey, "notebook"), tu.Cordoned())}, nil},
		{"a managed node that left the pool", []*corev1.Node{left}, []want{{"left", plan.Release, state.ReasonLeftPool}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t0, tc.nodes, nil)
			got := p.Compute(s)
			assert.Equal(t, tc.want, summarize(got))
			require.Len(t, got.Notes, 1, "%+v", got.Notes)
			assert.Equal(t, plan.Note{Warning: true, Message: message}, got.Notes[0])
			assert.Equal(t, poolKey+"="+poolVal, p.Describe(s, false).EmptyPool)
		})
	}

	s := snapshot(t0, []*corev1.Node{tu.Node("a", inPool())}, nil)
	assert.Empty(t, p.Compute(s).Notes)
	assert.Empty(t, p.Describe(s, false).EmptyPool)
}
