package plan_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

const (
	instance = "prewarm/test"
	poolKey  = "pool"
	poolVal  = "notebooks"
	taintKey = "os-upgrade"
	labelKey = "os-upgrade/status"
)

func testConfig(t testing.TB, mutate ...func(*config.Config)) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Instance = instance
	cfg.Warmer = config.Warmer{Namespace: "prewarm", DaemonSetName: "warmer"}
	cfg.Pool.NodeSelector = map[string]string{poolKey: poolVal}
	cfg.CancelAfter = config.NewDuration(10 * time.Minute)
	cfg.MaxWaitForUpgrade = config.NewDuration(6 * time.Hour)
	cfg.MaxWaitForWarm = config.NewDuration(2 * time.Hour)
	for _, m := range mutate {
		m(cfg)
	}
	require.NoError(t, cfg.Validate())
	return cfg
}

func inPool() tu.NodeOption { return tu.WithLabels(poolKey, poolVal) }

// managed builds the state a node has after Enter (tainted) or after the upgrade (warming).
func managed(phase string, taintedAt time.Time) tu.NodeOption {
	return func(n *corev1.Node) {
		tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)(n)
		value := "upgrading"
		if phase == state.PhaseWarming {
			value = "warming"
			n.Annotations[state.UpgradedAt] = state.FormatTime(taintedAt.Add(30 * time.Minute))
		}
		n.Labels[labelKey] = value
		n.Annotations[state.Phase] = phase
		n.Annotations[state.Owner] = instance
		n.Annotations[state.BaselineKernel] = "5.15.0-1"
		n.Annotations[state.BaselineBootID] = "boot-1"
		n.Annotations[state.TaintedAt] = state.FormatTime(taintedAt)
		n.Annotations[state.MaintenanceID] = "uid-nm-" + n.Name
		n.Annotations[state.StatusValues] = "upgrading,warming"
	}
}

func upgradedTo(kernel string) []tu.NodeOption {
	return []tu.NodeOption{tu.WithKernel(kernel), tu.WithBootID("boot-2")}
}

func nm(node string) []plan.Maintenance {
	return []plan.Maintenance{{Source: plan.SourceNodeMaintenance, ID: "uid-nm-" + node, Object: "nm-" + node}}
}

var (
	ds      = tu.DaemonSet("prewarm", "warmer")
	revOld  = tu.Revision(ds, 1, "old")
	revNew  = tu.Revision(ds, 2, "new")
	otherDS = func() *appsv1.DaemonSet { d := tu.DaemonSet("prewarm", "other"); return d }()
)

func snapshot(now time.Time, nodes []*corev1.Node, maint map[string][]plan.Maintenance, pods ...*corev1.Pod) plan.Snapshot {
	if maint == nil {
		maint = map[string][]plan.Maintenance{}
	}
	return plan.Snapshot{
		Nodes: nodes, Maintenance: maint, DaemonSet: ds,
		Revisions: []*appsv1.ControllerRevision{revOld, revNew}, Pods: pods, Now: now,
	}
}

func compute(t *testing.T, cfg *config.Config, s plan.Snapshot) plan.Plan {
	t.Helper()
	p, err := plan.New(cfg)
	require.NoError(t, err)
	out := p.Compute(s)
	assertInvariants(t, cfg, p, s, out)
	return out
}

type want struct {
	node   string
	typ    plan.ActionType
	reason string
}

func summarize(p plan.Plan) []want {
	var out []want
	for _, a := range p.Actions {
		out = append(out, want{a.Node, a.Type, a.Reason})
	}
	return out
}

func action(t *testing.T, p plan.Plan, node string) plan.Action {
	t.Helper()
	for _, a := range p.Actions {
		if a.Node == node {
			return a
		}
	}
	t.Fatalf("no action for node %s in %+v", node, summarize(p))
	return plan.Action{}
}

func TestTransitions(t *testing.T) {
	kernelTarget := func(c *config.Config) {
		c.Upgrade.KernelVersions = []string{"6.8.0-1"}
		c.Upgrade.KernelVersionLabel = "kernel-version"
	}
	cases := []struct {
		name  string
		cfg   func(*config.Config)
		now   time.Time
		nodes []*corev1.Node
		maint map[string][]plan.Maintenance
		pods  []*corev1.Pod
		want  []want
	}{
		{
			name:  "enter: pool node in maintenance is tainted",
			nodes: []*corev1.Node{tu.Node("a", inPool()), tu.Node("b", inPool()), tu.Node("x")},
			maint: map[string][]plan.Maintenance{"a": nm("a"), "x": nm("x")},
			want:  []want{{"a", plan.Enter, plan.SourceNodeMaintenance}},
		},
		{
			name:  "enter: not again for the maintenance it was released from",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, "uid-nm-a", state.ReleaseReason, "warm"))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name:  "enter: again for a new maintenance object",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, "uid-nm-old", state.ReleaseReason, "warm"))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Enter, plan.SourceNodeMaintenance}},
		},
		{
			name:  "enter: again for a new maintenance object while the one it was released from remains",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, "uid-nm-a", state.ReleaseReason, "warm"))},
			maint: map[string][]plan.Maintenance{"a": append(nm("a"), plan.Maintenance{Source: plan.SourceNodeMaintenance, ID: "uid-nm-b", Object: "nm-b"})},
			want:  []want{{"a", plan.Enter, plan.SourceNodeMaintenance}},
		},
		{
			name: "enter: not again while every maintenance it was released from remains",
			cfg:  func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true },
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.Cordoned(),
				tu.WithAnnotations(state.MaintenanceID, "uid-nm-a,"+plan.SourceCordoned, state.ReleaseReason, "warm"))},
			maint: map[string][]plan.Maintenance{"a": append(nm("a"), plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned})},
		},
		{
			name: "enter: not again while still cordoned after release",
			cfg:  func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true },
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.Cordoned(),
				tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned, state.ReleaseReason, "warm"))},
			maint: map[string][]plan.Maintenance{"a": {{Source: plan.SourceCordoned, ID: plan.SourceCordoned}}},
		},
		{
			name: "enter: cordoned again after the cordon ended is a new maintenance",
			cfg:  func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true },
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.Cordoned(), tu.WithAnnotations(
				state.MaintenanceID, plan.SourceCordoned, state.ReleaseReason, "warm", state.MaintenanceEnded, state.FormatTime(t0)))},
			maint: map[string][]plan.Maintenance{"a": {{Source: plan.SourceCordoned, ID: plan.SourceCordoned}}},
			want:  []want{{"a", plan.Enter, plan.SourceCordoned}},
		},
		{
			name:  "released node that left its cordon is marked so the next cordon is new",
			cfg:   func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true },
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned, state.ReleaseReason, "warm"))},
			want:  []want{{"a", plan.Record, "maintenance-ended"}},
		},
		{
			name:  "a cordon recorded where this installation does not read cordons may last: not marked",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned, state.ReleaseReason, "warm"))},
		},
		{
			name: "tainted node whose status label was removed by hand gets it back",
			nodes: []*corev1.Node{func() *corev1.Node {
				n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
				delete(n.Labels, labelKey)
				return n
			}()},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Record, "repaired"}},
		},
		{
			name:  "adopt: pool node that joined with our taint becomes warming",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))},
			want:  []want{{"a", plan.Adopt, "joined-tainted"}},
		},
		{
			name:  "adopt: already warm is released at once",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())},
			want:  []want{{"a", plan.Release, state.ReasonWarm}},
		},
		{
			name:  "adopt: a warmer pod already there but not Ready does not release",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new")},
			want:  []want{{"a", plan.Adopt, "joined-tainted"}},
		},
		{
			name:  "adopt: a taint with our key but another effect is not ours",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoExecute))},
		},
		{
			name:  "tainted, not upgraded, still in maintenance: nothing",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name:  "upgrade seen by kernel change",
			nodes: []*corev1.Node{tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, tu.WithKernel("6.8.0-1"))...)},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Upgraded, "upgrade-seen"}},
		},
		{
			name:  "upgrade seen by boot ID change alone",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithBootID("boot-2"))},
			want:  []want{{"a", plan.Upgraded, "upgrade-seen"}},
		},
		{
			name:  "upgraded but NotReady: wait",
			nodes: []*corev1.Node{tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.NotReady()}, upgradedTo("6.8.0-1")...)...)},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name:  "kernel target: reboot onto another kernel is not the upgrade",
			cfg:   kernelTarget,
			nodes: []*corev1.Node{tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, upgradedTo("6.1.0-9")...)...)},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name: "kernel target: kernel label matches",
			cfg:  kernelTarget,
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
				tu.WithLabels("kernel-version", "6.8.0-1"))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Upgraded, "upgrade-seen"}},
		},
		{
			name: "kernel target: upgraded and already warm goes straight to released",
			cfg:  kernelTarget,
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
				tu.WithLabels("kernel-version", "6.8.0-1"))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())},
			want:  []want{{"a", plan.Release, state.ReasonWarm}},
		},
		{
			name: "template rule replaces the default",
			cfg: func(c *config.Config) {
				c.Upgrade.When = `{{ ne .Node.Status.NodeInfo.OSImage "Old OS" }}`
			},
			nodes: []*corev1.Node{
				tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithKernel("9.9"), func(n *corev1.Node) { n.Status.NodeInfo.OSImage = "Old OS" }),
				tu.Node("b", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), func(n *corev1.Node) { n.Status.NodeInfo.OSImage = "New OS" }),
			},
			maint: map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b")},
			want:  []want{{"b", plan.Upgraded, "upgrade-seen"}},
		},
		{
			name:  "warm: Ready pod of the current revision releases",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())},
			want:  []want{{"a", plan.Release, state.ReasonWarm}},
		},
		{
			name:  "warm: pod of an old revision does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "old", tu.Ready())},
		},
		{
			name:  "warm: pod not Ready does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new")},
		},
		{
			name:  "warm: pod of another DaemonSet does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready(), tu.OwnedBy(otherDS))},
		},
		{
			name:  "warm: terminating pod does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready(), tu.Terminating())},
		},
		{
			name:  "warm: pod on another node does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "b", "new", tu.Ready())},
		},
		{
			name: "warm: pod that was Ready before the reboot does not count",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.WarmerPodUID, "pre", state.WarmerPodRestarts, "0"))},
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(0))},
		},
		{
			name: "warm: pod from before the reboot counts once its containers restarted",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.WarmerPodUID, "pre", state.WarmerPodRestarts, "0"))},
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(1))},
			want: []want{{"a", plan.Release, state.ReasonWarm}},
		},
		{
			name:  "cancelled: left maintenance is recorded first",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))},
			want:  []want{{"a", plan.Record, "left-maintenance"}},
		},
		{
			name: "cancelled: released once cancelAfter has passed",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-10*time.Minute))))},
			want: []want{{"a", plan.Release, state.ReasonCancelled}},
		},
		{
			name: "cancelled: not a second before cancelAfter",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-10*time.Minute+time.Second))))},
		},
		{
			name: "cancelled: back in maintenance clears the record",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-5*time.Minute))))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Record, "back-in-maintenance"}},
		},
		{
			name:  "cancelled: upgraded nodes are not cancelled when maintenance ends",
			nodes: []*corev1.Node{tu.Node("a", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, upgradedTo("6.8.0-1")...)...)},
			want:  []want{{"a", plan.Upgraded, "upgrade-seen"}},
		},
		{
			name:  "timeout: tainted exactly maxWaitForUpgrade",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-6*time.Hour)))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Release, state.ReasonTimeout}},
		},
		{
			name:  "timeout: tainted a second less than maxWaitForUpgrade",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-6*time.Hour+time.Second)))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name: "timeout: warming exactly maxWaitForWarm releases",
			// managed() sets upgraded-at 30 minutes after tainted-at.
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-2*time.Hour-30*time.Minute)))},
			want:  []want{{"a", plan.Release, state.ReasonTimeout}},
		},
		{
			name:  "timeout: warming with onWarmTimeout keep stays tainted and says so",
			cfg:   func(c *config.Config) { c.OnWarmTimeout = config.OnWarmTimeoutKeep },
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-3*time.Hour)))},
			want:  []want{{"a", plan.Record, "WarmTimeout"}},
		},
		{
			name: "timeout: keep says so only once",
			cfg:  func(c *config.Config) { c.OnWarmTimeout = config.OnWarmTimeoutKeep },
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-3*time.Hour)),
				tu.WithAnnotations(state.LastError, "WarmTimeout: earlier"))},
		},
		{
			name:  "pull problem: recorded with a Warning",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off pulling image"))},
			want:  []want{{"a", plan.Record, "ImagePull"}},
		},
		{
			name: "pull problem: ErrImagePull after ImagePullBackOff is the same problem, no new Event",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
				tu.WithAnnotations(state.LastError, "ImagePull: pod x container warm-0: ImagePullBackOff"))},
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ErrImagePull", "not found"))},
		},
		{
			name:  "pull problem: invalid image name",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "Bad Name", "InvalidImageName", "invalid"))},
			want:  []want{{"a", plan.Record, "InvalidImageName"}},
		},
		{
			name:  "pull problem: ContainerCreating is not a problem",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			pods:  []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ContainerCreating", ""))},
		},
		{
			name:  "external: taint removed by an operator releases without re-tainting",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), func(n *corev1.Node) { n.Spec.Taints = nil })},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Release, state.ReasonExternal}},
		},
		{
			name:  "external: not re-entered while the same maintenance lasts",
			nodes: []*corev1.Node{tu.Node("a", inPool(), tu.WithAnnotations(state.MaintenanceID, "uid-nm-a", state.ReleaseReason, state.ReasonExternal))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
		{
			name:  "left pool: a managed node whose labels changed is released",
			nodes: []*corev1.Node{tu.Node("a", managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithLabels(poolKey, "other"))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			want:  []want{{"a", plan.Release, state.ReasonLeftPool}},
		},
		{
			name:  "ownership: another installation's node is never touched",
			nodes: []*corev1.Node{tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithAnnotations(state.Owner, "other/release"))},
		},
		{
			name:  "ownership: not even when it left our pool",
			nodes: []*corev1.Node{tu.Node("a", managed(state.PhaseWarming, t0.Add(-time.Hour)), tu.WithAnnotations(state.Owner, "other/release"))},
		},
		{
			name:  "not in pool and not ours: status label alone is not enough",
			nodes: []*corev1.Node{tu.Node("a", tu.WithLabels(labelKey, "upgrading"), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))},
			maint: map[string][]plan.Maintenance{"a": nm("a")},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mut []func(*config.Config)
			if tc.cfg != nil {
				mut = append(mut, tc.cfg)
			}
			cfg := testConfig(t, mut...)
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			got := compute(t, cfg, snapshot(now, tc.nodes, tc.maint, tc.pods...))
			assert.Equal(t, tc.want, summarize(got))
		})
	}
}

// Adoption records no warmer pod as "already there" (design.md rule 2): a node that joined with
// our taint has not rebooted since, so a warmer pod that was on it, not Ready yet, when it was
// adopted proves the node warm once Ready, with no restart.
func TestAdoptionDoesNotRecordAPodAlreadyThere(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	pending := tu.Pod(ds, "a", "new", tu.WithUID("early"), tu.Restarts(0))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, pending))
	require.Equal(t, []want{{"a", plan.Adopt, "joined-tainted"}}, summarize(got), "not Ready yet: adopted, not released")
	a := got.Actions[0]
	for _, k := range []string{state.WarmerPodUID, state.WarmerPodRestarts} {
		assert.Nil(t, a.Change.Annotations[k], "adoption records no pod as already there (%s)", k)
	}
	apply(n, a.Change)
	require.Equal(t, state.PhaseWarming, n.Annotations[state.Phase])

	// The same pod, Ready now and never restarted, releases the node.
	ready := tu.Pod(ds, "a", "new", tu.WithUID("early"), tu.Restarts(0), tu.Ready())
	got = compute(t, cfg, snapshot(t0.Add(time.Minute), []*corev1.Node{n}, nil, ready))
	require.Equal(t, []want{{"a", plan.Release, state.ReasonWarm}}, summarize(got))
	require.NotNil(t, got.Actions[0].WarmPod)
	assert.Equal(t, "early", string(got.Actions[0].WarmPod.UID))
}

func TestEnterRecordsBaselineAndPreexistingPod(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), tu.WithKernel("5.15.0-1"), tu.WithBootID("boot-1"),
		tu.WithAnnotations(state.ReleaseReason, "warm", state.ReleasedAt, "2026-01-01T00:00:00Z", state.LastError, "ImagePull: old"))
	pre := tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(2))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, pre))
	a := action(t, got, "a")

	require.Equal(t, plan.Enter, a.Type)
	require.NotNil(t, a.Change.AddTaint)
	assert.Equal(t, corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}, *a.Change.AddTaint)
	assert.Equal(t, map[string]*string{labelKey: ptr("upgrading")}, a.Change.Labels)
	assert.Equal(t, map[string]*string{
		state.Phase:             ptr(state.PhaseTainted),
		state.Owner:             ptr(instance),
		state.BaselineKernel:    ptr("5.15.0-1"),
		state.BaselineBootID:    ptr("boot-1"),
		state.TaintedAt:         ptr("2026-11-25T12:00:00Z"),
		state.Taint:             ptr("os-upgrade=true:NoSchedule"),
		state.StatusLabel:       ptr(labelKey),
		state.StatusValues:      ptr("upgrading,warming"),
		state.MaintenanceID:     ptr("uid-nm-a"),
		state.WarmerPodUID:      ptr("pre"),
		state.WarmerPodRestarts: ptr("2"),
		state.ReleaseReason:     nil,
		state.ReleasedAt:        nil,
		state.LastError:         nil,
	}, a.Change.Annotations)
}

// A warming node that leaves the pool before its warmer pod is Ready opens without its images: a
// Warning Event says so, as for a timeout. Warm, or not upgraded yet, it is a routine release.
func TestLeftPoolWhileWarmingIsAWarning(t *testing.T) {
	cfg := testConfig(t)
	for _, tc := range []struct {
		name    string
		phase   string
		pods    []*corev1.Pod
		warning bool
	}{
		{"warming, no warmer pod", state.PhaseWarming, nil, true},
		{"warming, its pod pulling", state.PhaseWarming, []*corev1.Pod{tu.Pod(ds, "a", "new")}, true},
		{"warming, its pod Ready", state.PhaseWarming, []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())}, false},
		{"tainted, not upgraded yet", state.PhaseTainted, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tu.Node("a", managed(tc.phase, t0.Add(-time.Hour)), tu.WithLabels(poolKey, "other"))
			a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, tc.pods...)), "a")
			require.Equal(t, plan.Release, a.Type)
			assert.Equal(t, state.ReasonLeftPool, a.Reason)
			var warnings []string
			for _, ev := range a.Events {
				if ev.Type == corev1.EventTypeWarning {
					warnings = append(warnings, ev.Reason)
				}
			}
			if tc.warning {
				assert.Equal(t, []string{"PrewarmLeftPoolCold"}, warnings)
				assert.Contains(t, a.Message, "opens without its images")
			} else {
				assert.Empty(t, warnings)
			}
		})
	}
}

// An evicted (Failed) warmer pod that the DaemonSet controller keeps beside its replacement is
// not the pod recorded as already there: the running one is, so that it counts as warm only once
// it restarts after the upgrade.
func TestEnterRecordsTheRunningPodNotAFailedOne(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool())
	failed := tu.Pod(ds, "a", "new", tu.WithUID("evicted"), func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })
	running := tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(1))
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, failed, running)), "a")
	require.Equal(t, plan.Enter, a.Type)
	require.NotNil(t, a.Change.Annotations[state.WarmerPodUID])
	assert.Equal(t, "pre", *a.Change.Annotations[state.WarmerPodUID])
	assert.Equal(t, "1", *a.Change.Annotations[state.WarmerPodRestarts])
}

// TestTransitionEvents: routine transitions record a Normal Event only when events.transitions
// asks for it; Warnings and the release of a node someone else opened are always recorded.
func TestTransitionEvents(t *testing.T) {
	warming := managed(state.PhaseWarming, t0.Add(-time.Hour))
	cases := []struct {
		name  string
		node  *corev1.Node
		maint map[string][]plan.Maintenance
		pods  []*corev1.Pod
		quiet []string // Events with events.transitions off
		all   []string // Events with events.transitions on
	}{
		{
			name: "enter", node: tu.Node("a", inPool()), maint: map[string][]plan.Maintenance{"a": nm("a")},
			all: []string{"Normal PrewarmTainted"},
		},
		{
			name: "adopt", node: tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)),
			all: []string{"Normal PrewarmAdopted"},
		},
		{
			name:  "upgrade seen",
			node:  tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithKernel("6.8.0-1")),
			maint: map[string][]plan.Maintenance{"a": nm("a")},
			all:   []string{"Normal PrewarmUpgradeSeen"},
		},
		{
			name: "released warm", node: tu.Node("a", inPool(), warming),
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())},
			all:  []string{"Normal PrewarmReleased"},
		},
		{
			name:  "released by someone else",
			node:  tu.Node("a", inPool(), warming, func(n *corev1.Node) { n.Spec.Taints = nil }),
			quiet: []string{"Normal PrewarmReleased"}, all: []string{"Normal PrewarmReleased"},
		},
		{
			name:  "timeout",
			node:  tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-3*time.Hour))),
			quiet: []string{"Warning PrewarmTimeout"}, all: []string{"Warning PrewarmTimeout"},
		},
	}
	events := func(a plan.Action) []string {
		var out []string
		for _, ev := range a.Events {
			out = append(out, ev.Type+" "+ev.Reason)
		}
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t0, []*corev1.Node{tc.node}, tc.maint, tc.pods...)
			quiet := action(t, compute(t, testConfig(t), s), "a")
			assert.Equal(t, tc.quiet, events(quiet), "events.transitions off")
			all := action(t, compute(t, testConfig(t, func(c *config.Config) { c.Events.Transitions = true }), s), "a")
			assert.Equal(t, tc.all, events(all), "events.transitions on")
			assert.Equal(t, quiet.Change, all.Change, "Events change nothing else")
		})
	}
}

func TestReleaseRemovesOnlyOursAndKeepsRecord(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
		tu.WithTaint("dedicated", "gpu", corev1.TaintEffectNoSchedule), tu.WithLabels("team", "ml"),
		tu.WithAnnotations("example.com/keep", "me"), tu.Cordoned())
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, tu.Pod(ds, "a", "new", tu.Ready())))
	a := action(t, got, "a")

	require.Equal(t, plan.Release, a.Type)
	assert.Equal(t, &corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}, a.Change.RemoveTaint)
	assert.Nil(t, a.Change.AddTaint)
	assert.Equal(t, map[string]*string{labelKey: nil}, a.Change.Labels)
	assert.Equal(t, ptr(state.ReasonWarm), a.Change.Annotations[state.ReleaseReason])
	assert.Equal(t, ptr("2026-11-25T12:00:00Z"), a.Change.Annotations[state.ReleasedAt])
	assert.NotContains(t, a.Change.Annotations, state.MaintenanceID, "maintenance-id is kept for the record")
	for _, k := range []string{state.Phase, state.Owner, state.TaintedAt, state.UpgradedAt, state.BaselineKernel} {
		assert.Contains(t, a.Change.Annotations, k)
		assert.Nil(t, a.Change.Annotations[k], k)
	}
}

// withRecordedTaint puts a taint on a managed node and records it as the one ours.
func withRecordedTaint(key, value string, effect corev1.TaintEffect) tu.NodeOption {
	return func(n *corev1.Node) {
		var kept []corev1.Taint
		for _, t := range n.Spec.Taints {
			if t.Key != taintKey {
				kept = append(kept, t)
			}
		}
		n.Spec.Taints = kept
		tu.WithTaint(key, value, effect)(n)
		n.Annotations[state.Taint] = state.FormatTaint(corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

// A helm upgrade that changes the taint: each managed node's recorded taint is replaced by the
// configured one in one patch (the node stays closed; the new warmer tolerates only the new
// taint), and a release removes the taint recorded on the node, whatever the configuration says.
func TestChangedTaint(t *testing.T) {
	cfg := testConfig(t)
	configured := corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}
	cases := []struct {
		name   string
		old    corev1.Taint
		extra  []tu.NodeOption
		want   plan.ActionType
		remove *corev1.Taint
		add    *corev1.Taint
	}{
		{name: "key changed", old: corev1.Taint{Key: "prewarm", Value: "true", Effect: corev1.TaintEffectNoSchedule},
			want: plan.Record, add: &configured},
		{name: "effect changed", old: corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoExecute},
			want: plan.Record, add: &configured},
		{name: "value changed", old: corev1.Taint{Key: taintKey, Value: "old", Effect: corev1.TaintEffectNoSchedule},
			want: plan.Record, add: &configured},
		{name: "left the pool: the recorded taint is removed", old: corev1.Taint{Key: "prewarm", Value: "true", Effect: corev1.TaintEffectNoSchedule},
			extra: []tu.NodeOption{func(n *corev1.Node) { delete(n.Labels, "pool") }}, want: plan.Release},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := append([]tu.NodeOption{inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), withRecordedTaint(tc.old.Key, tc.old.Value, tc.old.Effect)}, tc.extra...)
			n := tu.Node("a", opts...)
			a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
			require.Equal(t, tc.want, a.Type, a.Message)
			old := tc.old
			assert.Equal(t, &old, a.Change.RemoveTaint)
			assert.Equal(t, tc.add, a.Change.AddTaint)
			if tc.want == plan.Record {
				assert.Equal(t, "taint-changed", a.Reason)
				// The node was managed before the status label key was recorded: the swap adds it.
				assert.Equal(t, map[string]*string{state.Taint: ptr("os-upgrade=true:NoSchedule"), state.StatusLabel: ptr(labelKey)}, a.Change.Annotations)
				assert.Empty(t, a.Change.Labels)
			} else {
				assert.Contains(t, a.Change.Annotations, state.Taint)
				assert.Nil(t, a.Change.Annotations[state.Taint], "a released node keeps no recorded taint")
			}
		})
	}

	// The recorded taint is gone (an operator removed it): released as external, nothing removed.
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), withRecordedTaint("prewarm", "true", corev1.TaintEffectNoSchedule))
	n.Spec.Taints = nil
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
	assert.Equal(t, plan.Release, a.Type)
	assert.Equal(t, state.ReasonExternal, a.Reason)
	assert.Nil(t, a.Change.RemoveTaint)

	// A node that also carries the configured taint (put there by someone else) keeps it: the
	// replacement removes the recorded one only.
	n = tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), withRecordedTaint("prewarm", "true", corev1.TaintEffectNoSchedule),
		tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})), "a")
	require.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "prewarm", a.Change.RemoveTaint.Key)
	// So does its release, which a swap does not hold back (one the API server keeps refusing
	// would hold the node past its timeouts).
	n.Labels[labelKey] = "warming"
	n.Annotations[state.Phase] = state.PhaseWarming
	n.Annotations[state.UpgradedAt] = state.FormatTime(t0.Add(-time.Minute))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, tu.Pod(ds, "a", "new", tu.Ready()))), "a")
	require.Equal(t, plan.Release, a.Type, "warm, with the taint not swapped yet")
	assert.Equal(t, "prewarm", a.Change.RemoveTaint.Key)
	timedOut := n.DeepCopy()
	timedOut.Annotations[state.UpgradedAt] = state.FormatTime(t0.Add(-3 * time.Hour))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{timedOut}, nil)), "a")
	require.Equal(t, plan.Release, a.Type, "timed out, with the taint not swapped yet")
	assert.Equal(t, state.ReasonTimeout, a.Reason)
}

// withRecordedStatusLabel moves a managed node's status label (with its value) to key and records
// key as the one ours.
func withRecordedStatusLabel(key string) tu.NodeOption {
	return func(n *corev1.Node) {
		if v, ok := n.Labels[labelKey]; ok {
			delete(n.Labels, labelKey)
			n.Labels[key] = v
		}
		n.Annotations[state.StatusLabel] = key
	}
}

// A helm upgrade that changes statusLabel.key: each managed node's label under the recorded key is
// replaced by the configured key, with the value the node's phase calls for, in one patch (the new
// warmer follows only the new key), and a release removes the label under the recorded key,
// whatever the configuration says.
func TestChangedStatusLabel(t *testing.T) {
	const oldKey = "prewarm/status"
	configured := corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}
	recordTaint := withRecordedTaint(configured.Key, configured.Value, configured.Effect)
	cases := []struct {
		name   string
		cfg    func(*config.Config)
		phase  string
		extra  []tu.NodeOption
		pods   []*corev1.Pod
		want   plan.ActionType
		reason string
		labels map[string]*string
		ann    map[string]*string
	}{
		{name: "tainted: the upgrading value under the new key", phase: state.PhaseTainted,
			want: plan.Record, reason: "status-label-changed",
			labels: map[string]*string{oldKey: nil, labelKey: ptr("upgrading")},
			ann:    map[string]*string{state.StatusLabel: ptr(labelKey)}},
		{name: "warming: the warming value under the new key", phase: state.PhaseWarming,
			want: plan.Record, reason: "status-label-changed",
			labels: map[string]*string{oldKey: nil, labelKey: ptr("warming")},
			ann:    map[string]*string{state.StatusLabel: ptr(labelKey)}},
		{name: "values changed too: the configured ones", phase: state.PhaseWarming,
			cfg:  func(c *config.Config) { c.StatusLabel.Value, c.StatusLabel.WarmingValue = "waiting", "pulling" },
			want: plan.Record, reason: "status-label-changed",
			labels: map[string]*string{oldKey: nil, labelKey: ptr("pulling")},
			ann:    map[string]*string{state.StatusLabel: ptr(labelKey), state.StatusValues: ptr("waiting,pulling")}},
		{name: "old label removed by hand: only the new one is set", phase: state.PhaseTainted,
			extra: []tu.NodeOption{func(n *corev1.Node) { delete(n.Labels, oldKey) }},
			want:  plan.Record, reason: "status-label-changed",
			labels: map[string]*string{labelKey: ptr("upgrading")},
			ann:    map[string]*string{state.StatusLabel: ptr(labelKey)}},
		{name: "warm already: released at once, the label under the recorded key removed", phase: state.PhaseWarming,
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())},
			want: plan.Release, reason: state.ReasonWarm,
			labels: map[string]*string{oldKey: nil}},
		{name: "no taint recorded: the swap records it", phase: state.PhaseTainted,
			extra: []tu.NodeOption{func(n *corev1.Node) { delete(n.Annotations, state.Taint) }},
			want:  plan.Record, reason: "status-label-changed",
			labels: map[string]*string{oldKey: nil, labelKey: ptr("upgrading")},
			ann:    map[string]*string{state.StatusLabel: ptr(labelKey), state.Taint: ptr("os-upgrade=true:NoSchedule")}},
		{name: "left the pool: the label under the recorded key is removed", phase: state.PhaseWarming,
			extra: []tu.NodeOption{func(n *corev1.Node) { delete(n.Labels, poolKey) }},
			want:  plan.Release, reason: state.ReasonLeftPool,
			labels: map[string]*string{oldKey: nil}},
		{name: "left the pool: the label under the configured key is removed too", phase: state.PhaseWarming,
			extra: []tu.NodeOption{func(n *corev1.Node) { delete(n.Labels, poolKey); n.Labels[labelKey] = "warming" }},
			want:  plan.Release, reason: state.ReasonLeftPool,
			labels: map[string]*string{oldKey: nil, labelKey: nil}},
		{name: "taint removed by someone else: released, the label under the recorded key removed", phase: state.PhaseTainted,
			extra: []tu.NodeOption{func(n *corev1.Node) { n.Spec.Taints = nil }},
			want:  plan.Release, reason: state.ReasonExternal,
			labels: map[string]*string{oldKey: nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var mut []func(*config.Config)
			if tc.cfg != nil {
				mut = append(mut, tc.cfg)
			}
			cfg := testConfig(t, mut...)
			opts := append([]tu.NodeOption{inPool(), managed(tc.phase, t0.Add(-time.Hour)), recordTaint, withRecordedStatusLabel(oldKey)}, tc.extra...)
			n := tu.Node("a", opts...)
			a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, tc.pods...)), "a")
			require.Equal(t, tc.want, a.Type, a.Message)
			assert.Equal(t, tc.reason, a.Reason)
			assert.Equal(t, tc.labels, a.Change.Labels)
			if tc.want == plan.Record {
				assert.Equal(t, tc.ann, a.Change.Annotations)
				assert.Nil(t, a.Change.AddTaint, "the taint did not change")
				assert.Nil(t, a.Change.RemoveTaint, "the taint did not change")
			} else {
				assert.Contains(t, a.Change.Annotations, state.StatusLabel)
				assert.Nil(t, a.Change.Annotations[state.StatusLabel], "a released node keeps no recorded key")
			}
		})
	}

	// A status label value edited by hand is left alone (operators win); the node goes on.
	for phase, value := range map[string]string{state.PhaseTainted: "hold", state.PhaseWarming: "hold"} {
		cfg := testConfig(t)
		n := tu.Node("a", inPool(), managed(phase, t0.Add(-time.Hour)), recordTaint, withRecordedStatusLabel(labelKey))
		n.Labels[labelKey] = value
		var pods []*corev1.Pod
		if phase == state.PhaseWarming {
			pods = []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())}
		}
		p := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}, pods...))
		if phase == state.PhaseWarming {
			a := action(t, p, "a")
			assert.Equal(t, plan.Release, a.Type, "warm: released, the edited label with it")
			assert.Equal(t, map[string]*string{labelKey: nil}, a.Change.Labels)
		} else {
			assert.Empty(t, p.Actions, phase)
		}
	}

	// Changed values (against those recorded on the node): the label gets the value its phase now
	// calls for, unless it was set by hand; the record is updated either way, once.
	changedValues := func(c *config.Config) { c.StatusLabel.Value, c.StatusLabel.WarmingValue = "waiting", "pulling" }
	for _, tc := range []struct {
		phase, label string
		reason       string
		want         map[string]*string
	}{
		{state.PhaseTainted, "upgrading", "status-label-changed", map[string]*string{labelKey: ptr("waiting")}},
		{state.PhaseWarming, "warming", "status-label-changed", map[string]*string{labelKey: ptr("pulling")}},
		{state.PhaseWarming, "hold", "status-values-changed", nil},
	} {
		cfg := testConfig(t, changedValues)
		n := tu.Node("a", inPool(), managed(tc.phase, t0.Add(-time.Hour)), recordTaint, withRecordedStatusLabel(labelKey))
		n.Labels[labelKey] = tc.label
		snap := func() plan.Snapshot {
			return snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})
		}
		a := action(t, compute(t, cfg, snap()), "a")
		require.Equal(t, plan.Record, a.Type, a.Message)
		assert.Equal(t, tc.reason, a.Reason)
		assert.Equal(t, tc.want, a.Change.Labels, "%s, label %s", tc.phase, tc.label)
		assert.Equal(t, map[string]*string{state.StatusValues: ptr("waiting,pulling")}, a.Change.Annotations)
		n.Annotations[state.StatusValues] = "waiting,pulling"
		if tc.want != nil {
			n.Labels[labelKey] = *tc.want[labelKey]
		}
		assert.Empty(t, compute(t, cfg, snap()).Actions, "recorded: nothing more to do")
	}
	// A node managed without a values record: its label is not touched.
	legacy := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), recordTaint, withRecordedStatusLabel(labelKey))
	delete(legacy.Annotations, state.StatusValues)
	assert.Empty(t, compute(t, testConfig(t, changedValues), snapshot(t0, []*corev1.Node{legacy}, map[string][]plan.Maintenance{"a": nm("a")})).Actions)

	// A recorded key naming a label the configuration reads for something else (a pool selector
	// key, edited by hand) is not taken for the status label: nothing of the pool's is removed.
	recordPoolKey := tu.WithAnnotations(state.StatusLabel, poolKey)
	for _, opt := range []tu.NodeOption{recordPoolKey, withRecordedStatusLabel(labelKey)} {
		n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), recordTaint, opt)
		cfg := testConfig(t)
		assert.Empty(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})).Actions)
		n.Labels[poolKey+"-x"] = "1"
		p, err := plan.New(cfg)
		require.NoError(t, err)
		a := action(t, p.Cleanup(snapshot(t0, []*corev1.Node{n}, nil), true), "a")
		assert.Equal(t, map[string]*string{labelKey: nil}, a.Change.Labels, "only the status label is removed")
	}

	// Taint and key changed at once: one patch swaps both.
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
		withRecordedTaint("prewarm", "true", corev1.TaintEffectNoExecute), withRecordedStatusLabel(oldKey))
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
	require.Equal(t, plan.Record, a.Type, a.Message)
	assert.Equal(t, "taint-and-status-label-changed", a.Reason)
	assert.Equal(t, &corev1.Taint{Key: "prewarm", Value: "true", Effect: corev1.TaintEffectNoExecute}, a.Change.RemoveTaint)
	assert.Equal(t, &configured, a.Change.AddTaint)
	assert.Equal(t, map[string]*string{oldKey: nil, labelKey: ptr("warming")}, a.Change.Labels)
	assert.Equal(t, map[string]*string{state.Taint: ptr("os-upgrade=true:NoSchedule"), state.StatusLabel: ptr(labelKey)}, a.Change.Annotations)
	all := action(t, compute(t, testConfig(t, func(c *config.Config) { c.Events.Transitions = true }), snapshot(t0, []*corev1.Node{n}, nil)), "a")
	require.Len(t, all.Events, 2, "one Event for each swap")
	assert.Equal(t, []string{"PrewarmTaintReplaced", "PrewarmStatusLabelReplaced"}, []string{all.Events[0].Reason, all.Events[1].Reason})

	// Cleanup (the uninstall hook) removes the label under the recorded key.
	p, err := plan.New(cfg)
	require.NoError(t, err)
	n = tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), recordTaint, withRecordedStatusLabel(oldKey))
	a = action(t, p.Cleanup(snapshot(t0, []*corev1.Node{n}, nil), true), "a")
	require.Equal(t, plan.Release, a.Type)
	assert.Equal(t, map[string]*string{oldKey: nil}, a.Change.Labels)
	// While the installation is being uninstalled, nothing is swapped.
	marked := snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")})
	marked.DaemonSet = ds.DeepCopy()
	marked.DaemonSet.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	assert.Empty(t, compute(t, cfg, marked).Actions)

	// A node with no record (managed before the key was recorded), or with a record that is not
	// a label key (edited by hand), carries the configured key: nothing to swap, and its release
	// removes the configured key.
	for name, opt := range map[string]tu.NodeOption{
		"no record":      func(*corev1.Node) {},
		"invalid record": tu.WithAnnotations(state.StatusLabel, "not a key!"),
	} {
		n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), recordTaint, opt)
		assert.Empty(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)).Actions, name)
		a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, tu.Pod(ds, "a", "new", tu.Ready()))), "a")
		require.Equal(t, plan.Release, a.Type, name)
		assert.Equal(t, map[string]*string{labelKey: nil}, a.Change.Labels, name)
	}

	// Adopt records the configured key, as enter does.
	n = tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule))
	a = action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
	require.Equal(t, plan.Adopt, a.Type)
	assert.Equal(t, ptr(labelKey), a.Change.Annotations[state.StatusLabel])
}

func TestTimeoutEmitsWarning(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-5*time.Hour)))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil,
		tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off"))))
	a := action(t, got, "a")
	require.Equal(t, plan.Release, a.Type)
	require.Len(t, a.Events, 1)
	assert.Equal(t, corev1.EventTypeWarning, a.Events[0].Type)
	assert.Contains(t, a.Events[0].Message, "ImagePull", "the timeout says what went wrong")
}

func TestPullProblemEventAndAnnotation(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil,
		tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ErrImagePull", "manifest unknown"))))
	a := action(t, got, "a")
	require.Len(t, a.Events, 1)
	assert.Equal(t, corev1.EventTypeWarning, a.Events[0].Type)
	assert.Equal(t, "PrewarmImagePull", a.Events[0].Reason)
	require.NotNil(t, a.Change.Annotations[state.LastError])
	assert.True(t, strings.HasPrefix(*a.Change.Annotations[state.LastError], "ImagePull: "))
	assert.Contains(t, *a.Change.Annotations[state.LastError], "example.com/big:1")
	assert.Nil(t, a.Change.AddTaint)
	assert.Nil(t, a.Change.RemoveTaint)
}

// Every problem the planner records reads back as its own reason, so the node_problems gauge
// never counts one of them as "other".
func TestRecordedProblemReadsWhatThePlannerWrites(t *testing.T) {
	keep := testConfig(t)
	keep.OnWarmTimeout = config.OnWarmTimeoutKeep
	warming := func(since time.Duration) *corev1.Node {
		return tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-since)))
	}
	cases := []struct {
		name string
		cfg  *config.Config
		node *corev1.Node
		pod  *corev1.Pod
	}{
		{"pull", testConfig(t), warming(time.Hour), tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "back-off"))},
		{"crash loop", testConfig(t), warming(time.Hour), tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "CrashLoopBackOff", "back-off"))},
		{"config", testConfig(t), warming(time.Hour), tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "CreateContainerConfigError", "x"))},
		{"warm timeout kept", keep, warming(100 * time.Hour), nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pods []*corev1.Pod
			if tc.pod != nil {
				pods = append(pods, tc.pod)
			}
			a := action(t, compute(t, tc.cfg, snapshot(t0, []*corev1.Node{tc.node}, nil, pods...)), "a")
			require.Equal(t, plan.Record, a.Type)
			require.NotNil(t, a.Change.Annotations[state.LastError])
			n := tu.Node("a", tu.WithAnnotations(state.LastError, *a.Change.Annotations[state.LastError]))
			assert.Equal(t, a.Reason, plan.RecordedProblem(n))
			assert.Contains(t, plan.ProblemReasons(), a.Reason)
		})
	}
	assert.Empty(t, plan.RecordedProblem(tu.Node("b")), "no last-error, no problem")
	assert.Equal(t, plan.ProblemOther, plan.RecordedProblem(tu.Node("c", tu.WithAnnotations(state.LastError, "edited by hand"))))
	assert.Equal(t, plan.ProblemOther, plan.RecordedProblem(tu.Node("d", tu.WithAnnotations(state.LastError, "Unknown: x"))))
}

func TestBudget(t *testing.T) {
	var nodes []*corev1.Node
	maint := map[string][]plan.Maintenance{}
	for _, name := range []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"} {
		nodes = append(nodes, tu.Node(name, inPool()))
		maint[name] = nm(name)
	}
	cases := []struct {
		name      string
		budget    intstr.IntOrString
		nodes     []*corev1.Node
		wantEnter int
	}{
		{"no limit", intstr.FromInt32(0), nodes, 10},
		{"3 of 10", intstr.FromInt32(3), nodes, 3},
		{"30 percent of 10", intstr.FromString("30%"), nodes, 3},
		{"1 percent rounds up to 1", intstr.FromString("1%"), nodes, 1},
		{"full budget: none", intstr.FromInt32(2), append([]*corev1.Node{
			tu.Node("m1", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))),
			tu.Node("m2", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour))),
		}, nodes...), 0},
		{"a release this cycle frees a slot", intstr.FromInt32(2), append([]*corev1.Node{
			tu.Node("m1", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))),
			tu.Node("m2", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), func(n *corev1.Node) { n.Spec.Taints = nil }),
		}, nodes...), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, func(c *config.Config) { c.MaxConcurrent = tc.budget })
			m := map[string][]plan.Maintenance{"m1": nm("m1"), "m2": nm("m2")}
			for k, v := range maint {
				m[k] = v
			}
			// Listed in reverse: the entries are still chosen by name.
			nodes := slices.Clone(tc.nodes)
			slices.Reverse(nodes)
			got := compute(t, cfg, snapshot(t0, nodes, m))
			var entered []string
			for _, a := range got.Actions {
				if a.Type == plan.Enter {
					entered = append(entered, a.Node)
				}
			}
			assert.Len(t, entered, tc.wantEnter)
			if tc.wantEnter > 0 && tc.wantEnter < 10 {
				assert.Equal(t, "n0", entered[0], "entry order is by name, so runs agree")
			}
		})
	}
}

func TestRevisionUnknownWhileControllerCatchesUp(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	s := snapshot(t0, []*corev1.Node{n}, nil, tu.Pod(ds, "a", "new", tu.Ready()))
	stale := ds.DeepCopy()
	stale.Generation = 2 // spec changed, controller has not observed it: "new" may already be old
	s.DaemonSet = stale
	got := compute(t, cfg, s)
	assert.Empty(t, got.Actions)

	s.DaemonSet = nil
	got = compute(t, cfg, s)
	assert.Empty(t, got.Actions)
	require.NotEmpty(t, got.Notes)
	assert.Contains(t, got.Notes[len(got.Notes)-1].Message, "warmer DaemonSet prewarm/warmer not found")
}

// While the warmer DaemonSet is missing no node is tainted for maintenance (none could become
// warm: each would wait for its timeout and open cold, later than without the product), and a
// warning note says so whenever a node would have been, or managed nodes exist. Nodes that joined
// with our taint are still adopted (their maxWaitForWarm releases them; left alone they would keep
// the provisioner's taint for good), and managed nodes move on as before.
func TestMissingWarmerEntersNothing(t *testing.T) {
	taint := tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)
	maintOf := func(names ...string) map[string][]plan.Maintenance {
		m := map[string][]plan.Maintenance{}
		for _, n := range names {
			m[n] = nm(n)
		}
		return m
	}
	cases := []struct {
		name   string
		cfg    func(*config.Config)
		nodes  []*corev1.Node
		maint  map[string][]plan.Maintenance
		want   []want
		note   []string // substrings of the warning note; nil: no warning note
		noNote []string // substrings the note must not have
		enters []string // the nodes the same snapshot enters with the DaemonSet there
	}{
		{
			name:  "a node in maintenance is not tainted",
			nodes: []*corev1.Node{tu.Node("a", inPool()), tu.Node("b", inPool())},
			maint: maintOf("a"),
			note: []string{"warmer DaemonSet prewarm/warmer not found", "no node is tainted for maintenance",
				"1 node(s) in maintenance are upgraded without pre-warming: a)"},
			noNote: []string{"managed"},
			enters: []string{"a"},
		},
		{
			name:   "many nodes in maintenance: the note names a few",
			nodes:  []*corev1.Node{tu.Node("a", inPool()), tu.Node("b", inPool()), tu.Node("c", inPool()), tu.Node("d", inPool()), tu.Node("e", inPool()), tu.Node("f", inPool()), tu.Node("g", inPool())},
			maint:  maintOf("a", "b", "c", "d", "e", "f", "g"),
			note:   []string{"7 node(s) in maintenance are upgraded without pre-warming: a, b, c, d, e and 2 more)"},
			enters: []string{"a", "b", "c", "d", "e", "f", "g"},
		},
		{
			name:  "a node that joined with our taint is still adopted",
			nodes: []*corev1.Node{tu.Node("j", inPool(), taint)},
			want:  []want{{"j", plan.Adopt, "joined-tainted"}},
		},
		{
			name:   "adopted while another node in maintenance is not tainted",
			nodes:  []*corev1.Node{tu.Node("a", inPool()), tu.Node("j", inPool(), taint)},
			maint:  maintOf("a"),
			want:   []want{{"j", plan.Adopt, "joined-tainted"}},
			note:   []string{"upgraded without pre-warming: a)"},
			enters: []string{"a"},
		},
		{
			name:  "nothing to enter and nothing managed: no note",
			nodes: []*corev1.Node{tu.Node("a", inPool()), tu.Node("r", inPool(), tu.WithAnnotations(state.MaintenanceID, "uid-nm-r", state.ReleaseReason, "warm"))},
			maint: maintOf("r"),
		},
		{
			name:   "managed nodes: the note says none can become warm",
			nodes:  []*corev1.Node{tu.Node("w", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))},
			note:   []string{"no node is tainted for maintenance until it exists", ", and none of the 1 managed node(s) can become warm"},
			noNote: []string{"without pre-warming"},
		},
		{
			name: "timeouts and cancels are unchanged",
			nodes: []*corev1.Node{
				tu.Node("t", inPool(), managed(state.PhaseWarming, t0.Add(-3*time.Hour))),
				tu.Node("c", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
					tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(-10*time.Minute)))),
				tu.Node("u", append([]tu.NodeOption{inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))}, upgradedTo("6.8.0-1")...)...),
				tu.Node("x", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), func(n *corev1.Node) { n.Spec.Taints = nil }),
				tu.Node("a", inPool()),
			},
			maint: maintOf("u", "x", "a"),
			want: []want{{"c", plan.Release, state.ReasonCancelled}, {"t", plan.Release, state.ReasonTimeout},
				{"u", plan.Upgraded, "upgrade-seen"}, {"x", plan.Release, state.ReasonExternal}},
			note:   []string{"upgraded without pre-warming: a)", "none of the 4 managed node(s) can become warm"},
			enters: []string{"a"},
		},
		{
			name:   "the budget is not what holds the nodes back",
			cfg:    func(c *config.Config) { c.MaxConcurrent = intstr.FromInt32(1) },
			nodes:  []*corev1.Node{tu.Node("a", inPool()), tu.Node("b", inPool())},
			maint:  maintOf("a", "b"),
			note:   []string{"2 node(s) in maintenance are upgraded without pre-warming: a, b)"},
			enters: []string{"a"},
		},
	}
	// A DaemonSet being deleted (foreground deletion, a finalizer holding it) creates no more
	// pods: it counts as missing.
	deleting := ds.DeepCopy()
	deleting.DeletionTimestamp = &metav1.Time{Time: t0.Add(-time.Minute)}
	for _, tc := range cases {
		for _, gone := range []string{"not found", "is being deleted"} {
			t.Run(tc.name+"/"+gone, func(t *testing.T) {
				var mut []func(*config.Config)
				if tc.cfg != nil {
					mut = append(mut, tc.cfg)
				}
				cfg := testConfig(t, mut...)
				s := snapshot(t0, tc.nodes, tc.maint)
				s.DaemonSet, s.Revisions = nil, nil
				if gone == "is being deleted" {
					s.DaemonSet, s.Revisions = deleting, []*appsv1.ControllerRevision{revOld, revNew}
				}
				got := compute(t, cfg, s)
				assert.Equal(t, tc.want, summarize(got))
				var warnings []plan.Note
				for _, n := range got.Notes {
					if n.Warning {
						warnings = append(warnings, n)
					}
					assert.NotContains(t, n.Message, "maxConcurrent", "no node waits for the budget: none is entered")
				}
				if tc.note == nil {
					assert.Empty(t, warnings)
					return
				}
				require.Len(t, warnings, 1, "one note for the pool: %+v", got.Notes)
				assert.Empty(t, warnings[0].Node, "about the pool, not a node")
				for _, sub := range tc.note {
					if gone == "is being deleted" {
						// Its Ready pods still prove their nodes warm: it only creates no new ones.
						sub = strings.Replace(sub, "not found", gone, 1)
						sub = regexp.MustCompile(`none of the (\d+) managed node\(s\) can become warm`).
							ReplaceAllString(sub, "it creates no new warmer pod for the $1 managed node(s)")
					}
					assert.Contains(t, warnings[0].Message, sub)
				}
				for _, sub := range tc.noNote {
					assert.NotContains(t, warnings[0].Message, sub)
				}

				// With the DaemonSet there, the same nodes in maintenance are entered and no
				// warning is noted.
				s.DaemonSet, s.Revisions = ds, []*appsv1.ControllerRevision{revOld, revNew}
				with := compute(t, cfg, s)
				for _, n := range with.Notes {
					assert.False(t, n.Warning, n.Message)
				}
				var entered []string
				for _, a := range with.Actions {
					if a.Type == plan.Enter {
						entered = append(entered, a.Node)
					}
				}
				assert.Equal(t, tc.enters, entered, "entered with the DaemonSet there")
			})
		}
	}
}

// status says the warmer DaemonSet is missing, whatever the pool holds.
func TestStatusNamesAMissingWarmer(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	s := snapshot(t0, []*corev1.Node{tu.Node("a", inPool())}, nil)
	assert.Empty(t, p.Describe(s, false).WarmerMissing)
	s.DaemonSet, s.Revisions = nil, nil
	st := p.Describe(s, false)
	assert.Equal(t, "prewarm/warmer", st.WarmerMissing)
	assert.False(t, st.WarmerDeleting)

	s.DaemonSet = ds.DeepCopy()
	s.DaemonSet.DeletionTimestamp = &metav1.Time{Time: t0}
	st = p.Describe(s, false)
	assert.Equal(t, "prewarm/warmer", st.WarmerMissing)
	assert.True(t, st.WarmerDeleting)

	// Deleted by the uninstall after its mark (a foreground deletion): the mark says it all.
	s.DaemonSet.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	st = p.Describe(s, false)
	assert.NotEmpty(t, st.Uninstalling)
	assert.Empty(t, st.WarmerMissing)
	s.Maintenance = map[string][]plan.Maintenance{"a": nm("a")} // a node the note would name
	out := p.Compute(s)
	assert.Empty(t, out.Actions)
	for _, n := range out.Notes {
		assert.NotContains(t, n.Message, "warmer DaemonSet prewarm/warmer is being deleted")
	}
}

// Only the actions that report a problem (a Warning Event) are warnings, whatever
// events.transitions says: they are logged at WARN.
func TestActionWarning(t *testing.T) {
	warming := managed(state.PhaseWarming, t0.Add(-time.Hour))
	cases := []struct {
		name  string
		node  *corev1.Node
		maint map[string][]plan.Maintenance
		pods  []*corev1.Pod
		typ   plan.ActionType
		want  bool
	}{
		{name: "enter", node: tu.Node("a", inPool()), maint: map[string][]plan.Maintenance{"a": nm("a")}, typ: plan.Enter},
		{name: "adopt", node: tu.Node("a", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)), typ: plan.Adopt},
		{name: "released warm", node: tu.Node("a", inPool(), warming), pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Ready())}, typ: plan.Release},
		{name: "released by someone else", node: tu.Node("a", inPool(), warming, func(n *corev1.Node) { n.Spec.Taints = nil }), typ: plan.Release},
		{
			name: "pull problem", node: tu.Node("a", inPool(), warming), typ: plan.Record, want: true,
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off pulling image"))},
		},
		{
			name: "invalid image name", node: tu.Node("a", inPool(), warming), typ: plan.Record, want: true,
			pods: []*corev1.Pod{tu.Pod(ds, "a", "new", tu.Waiting("warm-0", "Bad Name", "InvalidImageName", "invalid"))},
		},
		{name: "timeout", node: tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-3*time.Hour))), typ: plan.Release, want: true},
		{name: "left maintenance", node: tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))), typ: plan.Record},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, transitions := range []bool{false, true} {
				cfg := testConfig(t, func(c *config.Config) { c.Events.Transitions = transitions })
				a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{tc.node}, tc.maint, tc.pods...)), "a")
				require.Equal(t, tc.typ, a.Type)
				assert.Equal(t, tc.want, a.Warning(), "events.transitions %v", transitions)
			}
		})
	}
}

func TestCleanupReleasesOnlyOwnedNodes(t *testing.T) {
	cfg := testConfig(t)
	p, err := plan.New(cfg)
	require.NoError(t, err)
	nodes := []*corev1.Node{
		tu.Node("a", inPool(), managed(state.PhaseTainted, t0)),
		tu.Node("b", managed(state.PhaseWarming, t0)), // left the pool, still ours
		tu.Node("c", inPool(), managed(state.PhaseTainted, t0), tu.WithAnnotations(state.Owner, "other/x")),
		tu.Node("d", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)), // joined tainted, not adopted yet
		tu.Node("e", inPool()),
	}
	// By hand, the installation stays and its next cycle adopts d.
	got := p.Cleanup(snapshot(t0, nodes, nil), false)
	assert.Equal(t, []want{{"a", plan.Release, state.ReasonCleanup}, {"b", plan.Release, state.ReasonCleanup}}, summarize(got))
	// Uninstalling, nothing would ever release d: it goes too.
	got = p.Cleanup(snapshot(t0, nodes, nil), true)
	assert.Equal(t, []want{{"a", plan.Release, state.ReasonCleanup}, {"b", plan.Release, state.ReasonCleanup}, {"d", plan.Release, state.ReasonCleanup}}, summarize(got))
	d := action(t, got, "d")
	assert.Equal(t, &corev1.Taint{Key: taintKey, Value: "true", Effect: corev1.TaintEffectNoSchedule}, d.Change.RemoveTaint)
	assert.Contains(t, d.Message, "joined with its taint and was not adopted yet")
	// By hand, with the DaemonSet gone (the release uninstalled without its hook), nothing
	// adopts d either.
	gone := snapshot(t0, nodes, nil)
	gone.DaemonSet = nil
	got = p.Cleanup(gone, false)
	assert.Contains(t, summarize(got), want{"d", plan.Release, state.ReasonCleanup})
	// Once: a taint put back after the uninstall released it stays.
	again := tu.Node("d", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.ReleaseReason, state.ReasonCleanup, state.ReleasedAt, state.FormatTime(t0)))
	got = p.Cleanup(snapshot(t0, []*corev1.Node{again}, nil), true)
	assert.Empty(t, got.Actions)
}

// A cleanup by hand whose configuration names another installation than the one that manages
// the nodes (an instance written by hand) says why it released none of them; an uninstall, whose
// configuration is the installation's own, says nothing about other installations' nodes.
func TestCleanupNamesOtherInstallationsNodes(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	nodes := []*corev1.Node{
		tu.Node("c", inPool(), managed(state.PhaseTainted, t0), tu.WithAnnotations(state.Owner, "other/x")),
		tu.Node("d", inPool(), managed(state.PhaseWarming, t0), tu.WithAnnotations(state.Owner, "image-prewarmer/prewarm")),
		tu.Node("e", inPool(), managed(state.PhaseWarming, t0), tu.WithAnnotations(state.Owner, "other/x")),
		tu.Node("f", inPool()),
		// Another installation's pool in the same cluster, with the same status label.
		tu.Node("g", tu.WithLabels("pool", "batch"), managed(state.PhaseWarming, t0), tu.WithAnnotations(state.Owner, "other/y")),
	}
	got := p.Cleanup(snapshot(t0, nodes, nil), false)
	assert.Empty(t, got.Actions)
	require.Len(t, got.Notes, 1)
	assert.True(t, got.Notes[0].Warning)
	assert.Equal(t, "skipped: 3 managed node(s) of another installation than prewarm/test (owner annotation image-prewarmer/prewarm, other/x): c, d, e; set instance in the configuration to the installation whose nodes to release", got.Notes[0].Message)

	assert.Empty(t, p.Cleanup(snapshot(t0, nodes, nil), true).Notes)
}

// A node of the pool with a phase and no valid owner is nobody's: cleanup releases it neither by
// hand nor at the uninstall (only its owner can say whose it is), and says so in both, as each
// cycle does, so that an uninstall that leaves it tainted is not silent.
func TestCleanupNamesNobodysNodes(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	missing := tu.Node("m", inPool(), managed(state.PhaseTainted, t0))
	delete(missing.Annotations, state.Owner)
	nodes := []*corev1.Node{
		missing,
		tu.Node("x", inPool(), managed(state.PhaseWarming, t0), tu.WithAnnotations(state.Owner, "not an owner")),
		// Outside the pool: another installation's business.
		tu.Node("y", tu.WithLabels("pool", "batch"), managed(state.PhaseWarming, t0), tu.WithAnnotations(state.Owner, "")),
	}
	for _, uninstall := range []bool{false, true} {
		got := p.Cleanup(snapshot(t0, nodes, nil), uninstall)
		assert.Empty(t, got.Actions)
		require.Len(t, got.Notes, 2, "uninstall %v", uninstall)
		for i, node := range []string{"m", "x"} {
			assert.Equal(t, node, got.Notes[i].Node)
			assert.True(t, got.Notes[i].Warning)
			assert.Contains(t, got.Notes[i].Message, "so no installation manages the node or removes its taint")
		}
		assert.Contains(t, got.Notes[0].Message, "owner annotation image-prewarmer.io/owner is missing")
		assert.Contains(t, got.Notes[1].Message, `malformed ("not an owner"`)
	}
}

// The message of a cleanup release says what is happening: an uninstall (the chart's pre-delete
// hook, `cleanup --uninstall`), or a release by hand while the installation stays, is marked as
// being uninstalled, or is gone (no warmer DaemonSet: nothing taints the node again).
func TestCleanupMessage(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Events.Transitions = true })
	p, err := plan.New(cfg)
	require.NoError(t, err)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0))
	marked := ds.DeepCopy()
	marked.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	cases := []struct {
		name      string
		uninstall bool
		ds        *appsv1.DaemonSet
		want      string
		not       string
	}{
		{name: "cleanup", uninstall: false, ds: ds, want: "released by cleanup; installation prewarm/test stays installed", not: "uninstall"},
		{name: "cleanup without the DaemonSet", uninstall: false, ds: nil,
			want: "released by cleanup; installation prewarm/test has no DaemonSet prewarm/warmer (uninstalled, or deleted) and taints no node until it exists again",
			not:  "stays installed"},
		{name: "cleanup with the uninstall mark", uninstall: false, ds: marked,
			want: "released by cleanup; installation prewarm/test is marked as being uninstalled (DaemonSet prewarm/warmer has " + state.Uninstalling + ") and taints no node until the mark is removed",
			not:  "stays installed"},
		{name: "cleanup --uninstall", uninstall: true, ds: ds, want: "installation prewarm/test is being uninstalled", not: "stays installed"},
		{name: "cleanup --uninstall without the DaemonSet", uninstall: true, ds: nil, want: "installation prewarm/test is being uninstalled", not: "stays installed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t0, []*corev1.Node{n}, nil)
			s.DaemonSet = tc.ds
			a := action(t, p.Cleanup(s, tc.uninstall), "a")
			assert.Contains(t, a.Message, tc.want)
			assert.NotContains(t, a.Message, tc.not)
			assert.NotContains(t, a.Message, "being removed")
			require.Len(t, a.Events, 1)
			assert.Contains(t, a.Events[0].Message, tc.want, "the Event says the same")
		})
	}
}

// While the DaemonSet carries the uninstalling mark nothing new is tainted or adopted; managed
// nodes still move on (and are released).
func TestUninstallingTaintsNothing(t *testing.T) {
	cfg := testConfig(t)
	nodes := []*corev1.Node{
		tu.Node("enter", inPool()),
		tu.Node("join", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)),
		tu.Node("warm", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour))),
	}
	s := snapshot(t0, nodes, map[string][]plan.Maintenance{"enter": nm("enter"), "warm": nm("warm")},
		tu.Pod(ds, "warm", "new", tu.Ready()))
	before := compute(t, cfg, s)
	assert.Equal(t, []want{{"warm", plan.Release, state.ReasonWarm}, {"enter", plan.Enter, "nodeMaintenance"}, {"join", plan.Adopt, "joined-tainted"}},
		sortedWant(summarize(before)))

	marked := ds.DeepCopy()
	marked.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	s.DaemonSet = marked
	got := compute(t, cfg, s)
	assert.Equal(t, []want{{"warm", plan.Release, state.ReasonWarm}}, summarize(got))
	require.NotEmpty(t, got.Notes)
	assert.Contains(t, got.Notes[len(got.Notes)-1].Message, "being uninstalled")
	assert.True(t, got.Notes[len(got.Notes)-1].Warning, "a mark that outlived its uninstall stops the installation: WARN")

	p, err := plan.New(cfg)
	require.NoError(t, err)
	assert.Equal(t, state.FormatTime(t0), p.Describe(s, false).Uninstalling, "status shows the mark")
	s.DaemonSet = ds
	assert.Empty(t, p.Describe(s, false).Uninstalling)
}

func sortedWant(w []want) []want {
	order := map[plan.ActionType]int{plan.Release: 0, plan.Enter: 1, plan.Adopt: 2}
	slices.SortStableFunc(w, func(a, b want) int { return order[a.typ] - order[b.typ] })
	return w
}

func TestTemplateErrorIsReportedOnce(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		// Renders on the sample node used at start-up, fails on real nodes.
		c.Upgrade.When = `{{ if eq .Node.Name "sample" }}true{{ else }}{{ .Labels.nope }}{{ end }}`
	})
	n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	maint := map[string][]plan.Maintenance{"a": nm("a")}
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
	a := action(t, got, "a")
	assert.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "UpgradeRuleError", a.Reason)
	require.Len(t, a.Events, 1)
	assert.Equal(t, corev1.EventTypeWarning, a.Events[0].Type)

	n.Annotations[state.LastError] = *a.Change.Annotations[state.LastError]
	got = compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
	assert.Empty(t, got.Actions, "the same error is not reported twice")
}

// A fixed upgrade.when clears the rule error a tainted node recorded: with the next plan while
// the node waits for its upgrade, or in the same write that sees the upgrade. A warmer pod's
// problem stays on record until the release.
func TestFixedRuleClearsItsError(t *testing.T) {
	fixed := testConfig(t)
	maint := map[string][]plan.Maintenance{"a": nm("a")}
	ruleErr := "UpgradeRuleError: upgrade.when: map has no entry for key \"nope\""

	waiting := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithAnnotations(state.LastError, ruleErr))
	a := action(t, compute(t, fixed, snapshot(t0, []*corev1.Node{waiting}, maint)), "a")
	assert.Equal(t, plan.Record, a.Type)
	assert.Equal(t, "upgrade-rule-recovered", a.Reason)
	assert.Equal(t, map[string]*string{state.LastError: nil}, a.Change.Annotations)
	assert.Empty(t, a.Events)
	waiting.Annotations[state.LastError] = "ImagePull: earlier"
	assert.Empty(t, compute(t, fixed, snapshot(t0, []*corev1.Node{waiting}, maint)).Actions, "a pod problem stays")

	upgraded := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithKernel("6.8.0-1"),
		tu.WithAnnotations(state.LastError, ruleErr))
	a = action(t, compute(t, fixed, snapshot(t0, []*corev1.Node{upgraded}, maint)), "a")
	assert.Equal(t, plan.Upgraded, a.Type)
	require.Contains(t, a.Change.Annotations, state.LastError)
	assert.Nil(t, a.Change.Annotations[state.LastError], "cleared in the upgrade's write")
}

func TestDeterministic(t *testing.T) {
	cfg := testConfig(t)
	nodes := []*corev1.Node{tu.Node("b", inPool()), tu.Node("a", inPool()), tu.Node("c", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))}
	maint := map[string][]plan.Maintenance{"a": nm("a"), "b": nm("b")}
	first := compute(t, cfg, snapshot(t0, nodes, maint, tu.Pod(ds, "c", "new", tu.Ready())))
	reversed := []*corev1.Node{nodes[2], nodes[1], nodes[0]}
	second := compute(t, cfg, snapshot(t0, reversed, maint, tu.Pod(ds, "c", "new", tu.Ready())))
	assert.Equal(t, first, second)
}

// assertInvariants checks design.md's invariants on any plan: nodes written are in the pool or
// ours; only our taint, status label and annotations change; nothing is added and removed twice.
func assertInvariants(t *testing.T, cfg *config.Config, p *plan.Planner, s plan.Snapshot, out plan.Plan) {
	t.Helper()
	byName := map[string]*corev1.Node{}
	for _, n := range s.Nodes {
		byName[n.Name] = n
	}
	seen := map[string]bool{}
	for _, a := range out.Actions {
		n := byName[a.Node]
		require.NotNil(t, n, "action for a node not in the snapshot: %s", a.Node)
		assert.False(t, seen[a.Node], "two actions for node %s", a.Node)
		seen[a.Node] = true
		if !p.InPool(n) {
			assert.True(t, p.Owns(n), "node %s is neither in the pool nor ours", a.Node)
			assert.Equal(t, plan.Release, a.Type, "a node outside the pool is only ever released")
		}
		if a.Change.AddTaint != nil {
			assert.Equal(t, cfg.Taint.Key, a.Change.AddTaint.Key)
		}
		if rm := a.Change.RemoveTaint; rm != nil {
			// The configured taint, or the one this installation recorded on its node, never
			// one of Kubernetes' own.
			recorded, ok := state.RecordedTaint(n)
			if !ok || !p.Owns(n) || recorded.Key != rm.Key || recorded.Effect != rm.Effect {
				assert.Equal(t, []string{cfg.Taint.Key, string(cfg.Taint.Effect)}, []string{rm.Key, string(rm.Effect)})
			}
			assert.False(t, state.NodeControllerTaint(rm.Key), "removes a node controller's taint %s", rm.Key)
		}
		for k, v := range a.Change.Labels {
			assert.False(t, state.KubernetesLabel(k), "writes Kubernetes' label %s", k)
			// The configured status label, or (removed only) the key this installation recorded
			// on its node.
			if recorded, ok := state.RecordedStatusLabel(n); ok && p.Owns(n) && k == recorded && v == nil && !cfg.ReadLabelKeys()[k] {
				continue
			}
			assert.Equal(t, cfg.StatusLabel.Key, k, "only the status label is ever written")
		}
		for k := range a.Change.Annotations {
			assert.True(t, strings.HasPrefix(k, state.Prefix), "annotation %s is not ours", k)
		}
		if a.Type == plan.Release && a.Reason == state.ReasonTimeout {
			// A node released by a timeout may open cold: at least one Warning Event says so
			// (design.md invariants, rule 6). A release with no Event at all does not pass.
			warnings := 0
			for _, ev := range a.Events {
				if ev.Type == corev1.EventTypeWarning {
					warnings++
				}
			}
			assert.Positive(t, warnings, "a timeout release of node %s says so with a Warning Event, got %+v", a.Node, a.Events)
		}
	}
}

func ptr(s string) *string { return &s }

// status: each node's phase as an operator reads it; idle pool nodes only with all.
func TestDescribePhases(t *testing.T) {
	cfg := testConfig(t)
	p, err := plan.New(cfg)
	require.NoError(t, err)
	foreign := tu.Node("foreign", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	foreign.Annotations[state.Owner] = "other/release"
	left := tu.Node("left", managed(state.PhaseWarming, t0.Add(-time.Hour)))
	nodes := []*corev1.Node{
		tu.Node("tainted", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour))),
		tu.Node("warming", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour))),
		foreign,
		tu.Node("joining", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)),
		tu.Node("waiting", inPool()),
		tu.Node("released", inPool(), tu.WithAnnotations(state.ReleaseReason, state.ReasonWarm, state.ReleasedAt, state.FormatTime(t0))),
		tu.Node("idle", inPool()),
		left,
	}
	s := snapshot(t0, nodes, map[string][]plan.Maintenance{"waiting": nm("waiting")})
	phases := func(st plan.Status) map[string]string {
		out := map[string]string{}
		for _, n := range st.Nodes {
			out[n.Name] = n.Phase
		}
		return out
	}
	st := p.Describe(s, false)
	assert.Equal(t, map[string]string{
		"tainted": state.PhaseTainted, "warming": state.PhaseWarming, "foreign": "foreign", "joining": "joining",
		"waiting": "waiting", "released": "released", "left": state.PhaseWarming,
	}, phases(st))
	assert.Equal(t, 1, st.Totals["joining"])
	assert.Equal(t, 7, st.Totals["pool"], "left is not in the pool")
	assert.Empty(t, st.Problems)
	// Problems recorded on managed nodes are counted by reason; a foreign node's and a released
	// node's are not.
	withProblem := func(n *corev1.Node, v string) *corev1.Node {
		n = n.DeepCopy()
		n.Annotations[state.LastError] = v
		return n
	}
	st = p.Describe(snapshot(t0, []*corev1.Node{
		withProblem(nodes[0], "ImagePull: x"), withProblem(nodes[1], "ImagePull: y"), withProblem(left, "by hand"),
		withProblem(foreign, "ImagePull: z"), withProblem(nodes[5], "ImagePull: earlier"),
	}, nil), false)
	assert.Equal(t, map[string]int{"ImagePull": 2, plan.ProblemOther: 1}, st.Problems)
	assert.Equal(t, "", phases(p.Describe(s, true))["idle"], "listed with all, without a phase")

	// A foreign node whose owner names no installation is nobody's: the status says so.
	orphan := tu.Node("orphan", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	orphan.Annotations[state.Owner] = "someone"
	st = p.Describe(snapshot(t0, []*corev1.Node{foreign, orphan}, nil), false)
	problems, owners := map[string]string{}, map[string]string{}
	for _, n := range st.Nodes {
		problems[n.Name+" "+n.Phase] = n.LastProblem
		owners[n.Name] = n.Owner
	}
	assert.Equal(t, map[string]string{"foreign": "other/release", "orphan": ""}, owners, "the owner named when it names an installation")
	assert.Equal(t, map[string]string{
		"foreign foreign": "",
		"orphan foreign": "no installation manages this node or removes its taint: " +
			`owner annotation malformed ("someone", not <namespace>/<release>) (phase "warming")`,
	}, problems)
}

// A time annotation edited by hand (missing or malformed) would keep its timeout from ever
// firing, and the node tainted for good: it is set to now, with a Warning Event.
func TestMalformedTimesAreRepaired(t *testing.T) {
	cfg := testConfig(t)
	cases := []struct {
		name, phase, key, value string
		missing                 bool
	}{
		{name: "tainted-at malformed", phase: state.PhaseTainted, key: state.TaintedAt, value: "yesterday"},
		{name: "tainted-at missing", phase: state.PhaseTainted, key: state.TaintedAt, missing: true},
		{name: "upgraded-at malformed", phase: state.PhaseWarming, key: state.UpgradedAt, value: "soon"},
		{name: "upgraded-at missing", phase: state.PhaseWarming, key: state.UpgradedAt, missing: true},
		// A time far ahead would put the timeout off until then.
		{name: "tainted-at in the future", phase: state.PhaseTainted, key: state.TaintedAt, value: state.FormatTime(t0.Add(30 * 24 * time.Hour))},
		{name: "upgraded-at in the future", phase: state.PhaseWarming, key: state.UpgradedAt, value: state.FormatTime(t0.Add(time.Hour))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := tu.Node("a", inPool(), managed(tc.phase, t0.Add(-48*time.Hour)))
			if tc.missing {
				delete(n.Annotations, tc.key)
			} else {
				n.Annotations[tc.key] = tc.value
			}
			// Still in maintenance, not upgraded (tainted) or not warm (warming).
			got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
			a := action(t, got, "a")
			require.Equal(t, plan.Record, a.Type, a.Message)
			assert.Equal(t, map[string]*string{tc.key: ptr(state.FormatTime(t0))}, a.Change.Annotations)
			require.Len(t, a.Events, 1)
			assert.Equal(t, corev1.EventTypeWarning, a.Events[0].Type)
			assert.Contains(t, a.Events[0].Message, tc.key)

			// Repaired, it times out in due course.
			n.Annotations[tc.key] = state.FormatTime(t0)
			later := compute(t, cfg, snapshot(t0.Add(7*time.Hour), []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
			assert.Equal(t, state.ReasonTimeout, action(t, later, "a").Reason)
		})
	}
}

// A recorded time a little ahead of the orchestrator's clock (another replica's clock) is
// trusted as it is; only one further ahead than clocks differ is repaired.
func TestTimesSlightlyAheadAreTrusted(t *testing.T) {
	cfg := testConfig(t)
	for _, key := range []string{state.TaintedAt, state.UpgradedAt} {
		phase := state.PhaseTainted
		if key == state.UpgradedAt {
			phase = state.PhaseWarming
		}
		n := tu.Node("a", inPool(), managed(phase, t0.Add(-time.Hour)))
		n.Annotations[key] = state.FormatTime(t0.Add(time.Minute))
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
		assert.Empty(t, got.Actions, "%s a minute ahead", key)

		n.Annotations[key] = state.FormatTime(t0.Add(time.Hour))
		got = compute(t, cfg, snapshot(t0, []*corev1.Node{n}, map[string][]plan.Maintenance{"a": nm("a")}))
		a := action(t, got, "a")
		assert.Equal(t, "repaired", a.Reason, "%s an hour ahead", key)
		require.Len(t, a.Events, 1)
		assert.Contains(t, a.Events[0].Message, "in the future")
	}
}

// A node that left its maintenance at a recorded time far in the future is not kept until then
// plus cancelAfter: the time is recorded again as now.
func TestLeftMaintenanceInTheFutureIsRecordedAgain(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)),
		tu.WithAnnotations(state.LeftMaintenanceAt, state.FormatTime(t0.Add(24*time.Hour))))
	a := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil)), "a")
	require.Equal(t, plan.Record, a.Type, a.Message)
	assert.Equal(t, map[string]*string{state.LeftMaintenanceAt: ptr(state.FormatTime(t0))}, a.Change.Annotations)

	n.Annotations[state.LeftMaintenanceAt] = state.FormatTime(t0)
	later := action(t, compute(t, cfg, snapshot(t0.Add(cfg.CancelAfter.Duration), []*corev1.Node{n}, nil)), "a")
	assert.Equal(t, state.ReasonCancelled, later.Reason)
}

// The warmer pod that was on the node when it was tainted counts only once its containers
// restarted; with the recorded restart count unreadable, that cannot be told, and it does not.
func TestPreexistingPodWithUnreadableRestartsDoesNotCount(t *testing.T) {
	cfg := testConfig(t)
	for _, recorded := range []string{"three", "-1", ""} {
		n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
			tu.WithAnnotations(state.WarmerPodUID, "pre", state.WarmerPodRestarts, recorded))
		pre := tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(2))
		got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, pre))
		for _, a := range got.Actions {
			assert.NotEqual(t, plan.Release, a.Type, "restarts %q: %s", recorded, a.Message)
		}
	}
	// Readable and lower than now: it restarted since, so it counts.
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
		tu.WithAnnotations(state.WarmerPodUID, "pre", state.WarmerPodRestarts, "1"))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, nil, tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("pre"), tu.Restarts(2))))
	assert.Equal(t, state.ReasonWarm, action(t, got, "a").Reason)
}

// Two sources name the node at once (medik8s cordons the node of its NodeMaintenance): the
// node records both maintenances, and is not tainted again while either lasts after its release.
func TestOverlappingSourcesDoNotRetaint(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true })
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	both := func(node string) []plan.Maintenance { return append(nm(node), cordon) }
	node := func(opts ...tu.NodeOption) *corev1.Node {
		return tu.Node("a", append([]tu.NodeOption{inPool()}, opts...)...)
	}
	warm := tu.Pod(ds, "a", "new", tu.Ready())

	// Entered for both; released warm while both last.
	enter := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{node()}, map[string][]plan.Maintenance{"a": both("a")})), "a")
	require.Equal(t, plan.Enter, enter.Type)
	assert.Equal(t, ptr("cordoned,uid-nm-a"), enter.Change.Annotations[state.MaintenanceID])

	// Entered for the NodeMaintenance alone, then the cordon came: the release records both.
	tainted := node(managed(state.PhaseWarming, t0.Add(-time.Hour)))
	release := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{tainted}, map[string][]plan.Maintenance{"a": both("a")}, warm)), "a")
	require.Equal(t, plan.Release, release.Type)
	assert.Equal(t, ptr("cordoned,uid-nm-a"), release.Change.Annotations[state.MaintenanceID])
	assert.NotContains(t, release.Change.Annotations, state.MaintenanceEnded)

	released := node(tu.WithAnnotations(state.MaintenanceID, "cordoned,uid-nm-a", state.ReleaseReason, state.ReasonWarm))
	// The NodeMaintenance is deleted before the node is uncordoned: not a new maintenance.
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{released}, map[string][]plan.Maintenance{"a": {cordon}}))
	assert.Empty(t, got.Actions, "not tainted again for the cordon that outlasted its NodeMaintenance")
	// Uncordoned: the presence maintenance is over.
	ended := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{released}, nil)), "a")
	assert.Equal(t, "maintenance-ended", ended.Reason)
	// Cordoned again later: a new maintenance.
	released.Annotations[state.MaintenanceEnded] = state.FormatTime(t0)
	again := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{released}, map[string][]plan.Maintenance{"a": {cordon}})), "a")
	assert.Equal(t, plan.Enter, again.Type)
	assert.Equal(t, ptr("cordoned"), again.Change.Annotations[state.MaintenanceID])
}

// Each presence maintenance is the node's unbroken stay in its set: with a cordon and a label
// both recorded, the label removed and put back while the cordon lasts is a new maintenance. A
// cordon or label that comes and goes while a NodeMaintenance lasts stays part of it, and a
// source the configuration does not read is not taken for over.
func TestPresenceLeftWhileAnotherLasts(t *testing.T) {
	bothSources := func(c *config.Config) {
		c.Maintenance.Cordoned.Enabled = true
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	}
	cfg := testConfig(t, bothSources)
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	label := plan.Maintenance{Source: plan.SourceNodeLabel, ID: plan.SourceNodeLabel}
	released := func(ids string, more ...string) *corev1.Node {
		return tu.Node("a", inPool(), tu.WithAnnotations(append([]string{state.MaintenanceID, ids, state.ReleaseReason, state.ReasonWarm}, more...)...))
	}
	in := func(ms ...plan.Maintenance) map[string][]plan.Maintenance {
		return map[string][]plan.Maintenance{"a": ms}
	}
	plans := func(n *corev1.Node, m map[string][]plan.Maintenance) plan.Plan {
		return compute(t, cfg, snapshot(t0, []*corev1.Node{n}, m))
	}

	assert.Empty(t, plans(released("cordoned,nodeLabel"), in(label, cordon)).Actions, "both still last")

	// The label is removed; the cordon stays: the label's maintenance is over.
	left := action(t, plans(released("cordoned,nodeLabel"), in(cordon)), "a")
	assert.Equal(t, plan.Record, left.Type)
	assert.Equal(t, "maintenance-ended", left.Reason)
	assert.Contains(t, left.Message, plan.SourceNodeLabel)
	assert.Equal(t, map[string]*string{state.MaintenanceID: ptr(plan.SourceCordoned)}, left.Change.Annotations,
		"the label dropped from the record, no end stamped while the cordon lasts")
	assert.Empty(t, plans(released("cordoned"), in(cordon)).Actions, "recorded once")

	// The label is put back while the cordon lasts: a new maintenance.
	again := action(t, plans(released("cordoned"), in(label, cordon)), "a")
	assert.Equal(t, plan.Enter, again.Type)
	assert.Equal(t, ptr("cordoned,nodeLabel"), again.Change.Annotations[state.MaintenanceID])

	// Under a NodeMaintenance that lasts, a cordon that came and went is part of it: kept, and
	// the node is not entered again when it is cordoned again.
	withNM := append(nm("a"), cordon)
	assert.Empty(t, plans(released("cordoned,uid-nm-a"), in(nm("a")...)).Actions, "uncordoned while the NodeMaintenance lasts")
	assert.Empty(t, plans(released("cordoned,uid-nm-a"), in(withNM...)).Actions, "cordoned again under it")

	// Once every maintenance has ended, the end is stamped as before; nothing is rewritten after it.
	ended := plans(released("cordoned,nodeLabel", state.MaintenanceEnded, state.FormatTime(t0)), in(cordon))
	assert.Equal(t, []want{{"a", plan.Enter, plan.SourceCordoned}}, summarize(ended), "cordoned again after every maintenance ended: new")

	// A source this configuration does not read (another installation's, or one turned off) is
	// not taken for over: its record stays.
	cordonOnly := testConfig(t, func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true })
	assert.Empty(t, compute(t, cordonOnly, snapshot(t0, []*corev1.Node{released("cordoned,nodeLabel")}, in(cordon))).Actions)
	// With none of its own sources naming the node any more, such a configuration drops what it
	// saw end from the record and leaves the end to the installation that reads the rest: an end
	// stamped now would make the cordon that lasts look new to that one.
	labelOnly := testConfig(t, func(c *config.Config) {
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	dropped := action(t, compute(t, labelOnly, snapshot(t0, []*corev1.Node{released("cordoned,nodeLabel,uid-nm-a")}, nil)), "a")
	assert.Equal(t, plan.Record, dropped.Type)
	assert.Equal(t, map[string]*string{state.MaintenanceID: ptr("cordoned,uid-nm-a")}, dropped.Change.Annotations)
	assert.Empty(t, compute(t, labelOnly, snapshot(t0, []*corev1.Node{released("cordoned,uid-nm-a")}, nil)).Actions)

	// While the NodeMaintenance source is unknown, a record of presence maintenances only is kept
	// up to date: the unread source cannot bring them back.
	unknown := func(n *corev1.Node, m map[string][]plan.Maintenance) plan.Plan {
		s := snapshot(t0, []*corev1.Node{n}, m)
		s.MaintenanceUnknown = "nodemaintenances.v1beta1.nodemaintenance.medik8s.io"
		return compute(t, cfg, s)
	}
	leftUnknown := action(t, unknown(released("cordoned,nodeLabel"), in(cordon)), "a")
	assert.Equal(t, map[string]*string{state.MaintenanceID: ptr(plan.SourceCordoned)}, leftUnknown.Change.Annotations)
	assert.Empty(t, unknown(released("cordoned,nodeLabel", state.MaintenanceEnded, state.FormatTime(t0)), in(cordon)).Actions,
		"all ended already: nothing to rewrite")
	// The label gone and the node cordoned since: none of the recorded maintenances lasts, so
	// their end is stamped (the cordon is a new maintenance, entered once the source is read).
	over := action(t, unknown(released("nodeLabel"), in(cordon)), "a")
	assert.Equal(t, plan.Record, over.Type)
	assert.Equal(t, map[string]*string{state.MaintenanceEnded: ptr(state.FormatTime(t0))}, over.Change.Annotations)
	assert.Equal(t, plan.Enter, action(t, plans(released("nodeLabel", state.MaintenanceEnded, state.FormatTime(t0)), in(cordon)), "a").Type)
}

// A node released because it left the pool has no maintenances in the snapshot (the sources
// read pool nodes only): its record is kept as it is, so that, back in the pool while the same
// cordon lasts, it is not entered again for it.
func TestLeftPoolReleaseKeepsTheMaintenanceRecord(t *testing.T) {
	cfg := testConfig(t)
	cordon := plan.Maintenance{Source: plan.SourceCordoned, ID: plan.SourceCordoned}
	left := tu.Node("a", managed(state.PhaseTainted, t0.Add(-time.Hour)), tu.WithLabels(poolKey, "other"),
		tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned), tu.Cordoned())
	release := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{left}, nil)), "a")
	require.Equal(t, plan.Release, release.Type)
	require.Equal(t, state.ReasonLeftPool, release.Reason)
	assert.NotContains(t, release.Change.Annotations, state.MaintenanceEnded, "the cordon has not ended")
	assert.NotContains(t, release.Change.Annotations, state.MaintenanceID, "the record stays as it is")

	back := tu.Node("a", inPool(), tu.Cordoned(),
		tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned, state.ReleaseReason, state.ReasonLeftPool))
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{back}, map[string][]plan.Maintenance{"a": {cordon}}))
	assert.Empty(t, got.Actions, "back in the pool in the same cordon: not entered again")

	// In the pool, a release with the cordon gone marks it ended, as before.
	inPoolNode := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), tu.WithAnnotations(state.MaintenanceID, plan.SourceCordoned))
	warm := action(t, compute(t, cfg, snapshot(t0, []*corev1.Node{inPoolNode}, nil, tu.Pod(ds, "a", "new", tu.Ready()))), "a")
	require.Equal(t, plan.Release, warm.Type)
	assert.Contains(t, warm.Change.Annotations, state.MaintenanceEnded)
}

// A node of ours in a phase the planner does not know is left alone, and since no timeout
// releases it, the note about it asks for an operator (WARN); another installation's nodes are
// skipped quietly.
func TestUnknownPhaseIsAWarningNote(t *testing.T) {
	cfg := testConfig(t)
	odd := tu.Node("odd", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	odd.Annotations[state.Phase] = "bogus"
	foreign := tu.Node("foreign", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)))
	foreign.Annotations[state.Owner] = "other/release"
	otherKeys(foreign)
	got := compute(t, cfg, snapshot(t0.Add(100*time.Hour), []*corev1.Node{odd, foreign}, nil))
	assert.Empty(t, got.Actions, "neither is written, whatever their timestamps")
	warnings := map[string]bool{}
	for _, n := range got.Notes {
		warnings[n.Node] = n.Warning
	}
	assert.Equal(t, map[string]bool{"odd": true, "foreign": false}, warnings)
}

// The status label a managed node lost is put back with the value its phase calls for (the
// warmer DaemonSet follows it), with a Warning Event; a value set by hand is left alone.
func TestStatusLabelRestored(t *testing.T) {
	cfg := testConfig(t)
	warming := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	delete(warming.Labels, labelKey)
	byHand := tu.Node("b", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)))
	byHand.Labels[labelKey] = "held"
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{warming, byHand}, nil))
	require.Len(t, got.Actions, 1, "%+v", summarize(got))
	a := got.Actions[0]
	assert.Equal(t, want{"a", plan.Record, "repaired"}, want{a.Node, a.Type, a.Reason})
	assert.Equal(t, map[string]*string{labelKey: ptr("warming")}, a.Change.Labels)
	require.Len(t, a.Events, 1)
	assert.Equal(t, "PrewarmStateRepaired", a.Events[0].Reason)
}

// A status label value set by hand stays, but where it keeps the warmer away from a warming node,
// or brings it to a tainted node before the upgrade, a WARN note says so and how to fix it.
func TestOddStatusValueIsNoted(t *testing.T) {
	cfg := testConfig(t)
	node := func(name, phase, value string) *corev1.Node {
		n := tu.Node(name, inPool(), managed(phase, t0.Add(-time.Hour)))
		n.Labels[labelKey] = value
		return n
	}
	nodes := []*corev1.Node{
		node("held", state.PhaseWarming, "held"),            // no warmer comes
		node("early", state.PhaseTainted, "warming"),        // a warmer before the upgrade
		node("tainted-other", state.PhaseTainted, "paused"), // harmless: the upgrade sets it
		node("warming-ok", state.PhaseWarming, "warming"),   // as it should be
		node("tainted-ok", state.PhaseTainted, "upgrading"), // as it should be
	}
	maint := map[string][]plan.Maintenance{}
	for _, n := range nodes {
		maint[n.Name] = nm(n.Name)
	}
	got := compute(t, cfg, snapshot(t0, nodes, maint))
	assert.Empty(t, got.Actions, "a value set by hand is not overwritten: %+v", summarize(got))
	notes := map[string]plan.Note{}
	for _, n := range got.Notes {
		notes[n.Node] = n
	}
	require.Len(t, notes, 2, "%+v", got.Notes)
	assert.True(t, notes["held"].Warning)
	assert.Contains(t, notes["held"].Message, `status label os-upgrade/status is "held", but the node is warming (os-upgrade/status=warming)`)
	assert.Contains(t, notes["held"].Message, "no warmer pod comes and the node stays tainted until maxWaitForWarm (2h0m0s)")
	assert.True(t, notes["early"].Warning)
	assert.Contains(t, notes["early"].Message, "runs its pod before the upgrade")
	assert.Contains(t, notes["early"].Message, "set it to upgrading or remove it")

	// With target kernels and their label, the DaemonSet also admits a node labelled with the
	// status value on a target kernel: a warming node so labelled does get its warmer.
	targets := testConfig(t, func(c *config.Config) {
		c.Upgrade.KernelVersions = []string{"6.1.0-2"}
		c.Upgrade.KernelVersionLabel = "example.com/kernel"
	})
	onTarget := node("on-target", state.PhaseWarming, "upgrading")
	onTarget.Labels["example.com/kernel"] = "6.1.0-2"
	offTarget := node("off-target", state.PhaseWarming, "upgrading")
	offTarget.Labels["example.com/kernel"] = "5.15.0-1"
	got = compute(t, targets, snapshot(t0, []*corev1.Node{onTarget, offTarget}, maint))
	require.Len(t, got.Notes, 1, "%+v", got.Notes)
	assert.Equal(t, "off-target", got.Notes[0].Node)

	// An action for the node this plan (here its release) replaces the note.
	got = compute(t, cfg, snapshot(t0, nodes[:1], maint, tu.Pod(ds, "held", "new", tu.Ready())))
	assert.Equal(t, []want{{"held", plan.Release, state.ReasonWarm}}, summarize(got))
	assert.Empty(t, got.Notes)
}

// The taint and status-label records on a node are the orchestrator's own, but a hand edit can
// make them name Kubernetes' taints and labels: those are never swapped out or removed.
func TestRecordsNamingKubernetesKeysAreIgnored(t *testing.T) {
	cfg := testConfig(t)
	n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), tu.Cordoned(),
		tu.WithTaint("node.kubernetes.io/unschedulable", "", corev1.TaintEffectNoSchedule),
		tu.WithLabels("kubernetes.io/hostname", "a"))
	n.Annotations[state.Taint] = "node.kubernetes.io/unschedulable:NoSchedule"
	n.Annotations[state.StatusLabel] = "kubernetes.io/hostname"
	maint := map[string][]plan.Maintenance{"a": nm("a")}
	got := compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint))
	assert.Empty(t, got.Actions, "the node carries the configured taint and label: nothing to swap")

	// Released (its warmer pod Ready): the configured taint and label go, Kubernetes' stay.
	got = compute(t, cfg, snapshot(t0, []*corev1.Node{n}, maint, tu.Pod(ds, "a", "new", tu.Ready())))
	require.Len(t, got.Actions, 1)
	a := got.Actions[0]
	assert.Equal(t, plan.Release, a.Type)
	require.NotNil(t, a.Change.RemoveTaint)
	assert.Equal(t, taintKey, a.Change.RemoveTaint.Key)
	for k, v := range a.Change.Labels {
		assert.False(t, v == nil && k != labelKey, "removes label %s", k)
	}
}

// While a maintenance source could not be read, nothing that rests on a node's maintenance is
// decided: no entry, no left-maintenance record or cancel, no change to a release's record of its
// maintenances or presence ends (the unread source's maintenances are missing); adoptions,
// releases of warm nodes and timeouts go on.
func TestMaintenanceUnknownDecidesNothingOnMaintenance(t *testing.T) {
	cfg := testConfig(t, func(c *config.Config) {
		c.CancelAfter = config.NewDuration(0)
		c.Maintenance.Cordoned.Enabled = true
	})
	cordoned := []plan.Maintenance{{Source: plan.SourceCordoned, ID: plan.SourceCordoned, Object: plan.SourceCordoned}}
	nodes := []*corev1.Node{
		// Tainted for its NodeMaintenance, which the snapshot cannot show.
		tu.Node("a", inPool(), managed(state.PhaseTainted, t0)),
		// In maintenance (cordoned): a candidate.
		tu.Node("c", inPool(), tu.Cordoned()),
		// Joined with the taint.
		tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule)),
		// Released for a presence maintenance that the snapshot no longer shows.
		tu.Node("r", inPool(), tu.WithAnnotations(state.ReleaseReason, state.ReasonWarm, state.ReleasedAt, state.FormatTime(t0),
			state.MaintenanceID, plan.SourceCordoned)),
		// Warm; entered for a NodeMaintenance and cordoned since.
		tu.Node("w", inPool(), tu.Cordoned(), managed(state.PhaseWarming, t0)),
		// Waiting for its upgrade past maxWaitForUpgrade.
		tu.Node("x", inPool(), managed(state.PhaseTainted, t0.Add(-7*time.Hour))),
	}
	maint := map[string][]plan.Maintenance{"c": cordoned, "w": cordoned}
	s := snapshot(t0, nodes, maint, tu.Pod(ds, "w", "new", tu.Ready()))

	known := compute(t, cfg, s)
	assert.Equal(t, []want{{"a", plan.Release, state.ReasonCancelled}, {"j", plan.Adopt, "joined-tainted"},
		{"r", plan.Record, "maintenance-ended"}, {"w", plan.Release, state.ReasonWarm}, {"x", plan.Release, state.ReasonCancelled},
		{"c", plan.Enter, "cordoned"}}, summarize(known), "with every source read (cancelAfter 0s)")
	assert.Equal(t, ptr(plan.SourceCordoned), action(t, known, "w").Change.Annotations[state.MaintenanceID],
		"the maintenances still active are recorded")

	s.MaintenanceUnknown = "nodemaintenances.v1beta1.nodemaintenance.medik8s.io"
	got := compute(t, cfg, s)
	assert.Equal(t, []want{{"j", plan.Adopt, "joined-tainted"}, {"r", plan.Record, "maintenance-ended"},
		{"w", plan.Release, state.ReasonWarm}, {"x", plan.Release, state.ReasonTimeout}}, summarize(got),
		"r's record names no NodeMaintenance: its cordon's end is recorded")
	assert.Equal(t, ptr("cordoned,uid-nm-w"), action(t, got, "w").Change.Annotations[state.MaintenanceID],
		"w's NodeMaintenance kept as recorded, its cordon added")

	// Once the source is read, w (still cordoned, its NodeMaintenance still there) was released
	// for both: it is not entered again.
	released := tu.Node("w", inPool(), tu.Cordoned(), tu.WithAnnotations(state.ReleaseReason, state.ReasonWarm,
		state.ReleasedAt, state.FormatTime(t0), state.MaintenanceID, "cordoned,uid-nm-w"))
	after := compute(t, cfg, snapshot(t0, []*corev1.Node{released}, map[string][]plan.Maintenance{"w": append(nm("w"), cordoned...)}))
	assert.Empty(t, after.Actions)

	// A released node whose record names a NodeMaintenance: its cordon's end waits for the source
	// (the cordon may have come and gone under a NodeMaintenance that still lasts).
	nmReleased := tu.Node("q", inPool(), tu.WithAnnotations(state.ReleaseReason, state.ReasonWarm, state.ReleasedAt, state.FormatTime(t0),
		state.MaintenanceID, "cordoned,uid-nm-q"))
	unknown := snapshot(t0, []*corev1.Node{nmReleased}, nil)
	unknown.MaintenanceUnknown = s.MaintenanceUnknown
	assert.Empty(t, compute(t, cfg, unknown).Actions)
	require.Len(t, got.Notes, 1)
	assert.Contains(t, got.Notes[0].Message, "maintenance source nodemaintenances.v1beta1.nodemaintenance.medik8s.io not read yet")
}

// A warmer pod created before the node object is the pod of an earlier node of the same name
// (deleted and registered again, as a reimage or a replacement with the same hostname does) that
// pod garbage collection left once the name came back: its Ready status is the old node's until
// the new node's kubelet runs it and it turns Ready again. Until then it neither releases the node
// nor shows as ready in status; a pod created in the node's second, or later, counts as usual.
func TestWarmerPodOfAnEarlierNode(t *testing.T) {
	created := func(at time.Time) func(*corev1.Node) {
		return func(n *corev1.Node) { n.CreationTimestamp = metav1.Time{Time: at} }
	}
	pod := func(at, readyAt time.Time) tu.PodOption {
		return func(p *corev1.Pod) {
			p.CreationTimestamp = metav1.Time{Time: at}
			for i := range p.Status.Conditions {
				p.Status.Conditions[i].LastTransitionTime = metav1.Time{Time: readyAt}
			}
		}
	}
	born := t0.Add(-20 * time.Second)
	joined := tu.Node("j", inPool(), tu.WithTaint(taintKey, "true", corev1.TaintEffectNoSchedule), created(born))
	warming := tu.Node("w", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), created(born))
	warm := []want{{"j", plan.Release, state.ReasonWarm}, {"w", plan.Release, state.ReasonWarm}}
	cases := []struct {
		name         string
		podAt, ready time.Time
		want         []want
		state        string
	}{
		{name: "created before the node, Ready since before it", podAt: born.Add(-time.Hour), ready: born.Add(-time.Second),
			want: []want{{"j", plan.Adopt, "joined-tainted"}}, state: "ready (earlier node)"},
		{name: "created before the node, Ready again on it", podAt: born.Add(-time.Hour), ready: born.Add(5 * time.Second),
			want: warm, state: "ready"},
		{name: "created before the node, Ready again in its second", podAt: born.Add(-time.Hour), ready: born,
			want: warm, state: "ready"},
		{name: "created in the node's second", podAt: born, ready: born, want: warm, state: "ready"},
		{name: "created after the node", podAt: born.Add(time.Second), ready: born.Add(2 * time.Second), want: warm, state: "ready"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t0, []*corev1.Node{joined, warming}, nil,
				tu.Pod(ds, "j", "new", tu.Ready(), pod(tc.podAt, tc.ready)),
				tu.Pod(ds, "w", "new", tu.Ready(), pod(tc.podAt, tc.ready)))
			assert.Equal(t, tc.want, summarize(compute(t, testConfig(t), s)))
			p, err := plan.New(testConfig(t))
			require.NoError(t, err)
			for _, ns := range p.Describe(s, true).Nodes {
				assert.Equal(t, tc.state, ns.Warmer, ns.Name)
			}
		})
	}
}

// status says when a node of this installation no longer carries its taint (opened by hand, the
// documented lever): it is open already, though its phase stays until the next cycle releases it
// (external). A node with the taint, or one that left the pool (released left-pool), is not.
func TestStatusSaysTheTaintWasRemoved(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	untainted := func(n *corev1.Node) { n.Spec.Taints = nil }
	nodes := []*corev1.Node{
		tu.Node("t", inPool(), managed(state.PhaseTainted, t0.Add(-time.Hour)), untainted),
		tu.Node("w", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), untainted),
		tu.Node("k", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour))),
		tu.Node("l", managed(state.PhaseTainted, t0.Add(-time.Hour)), untainted),
	}
	s := snapshot(t0, nodes, nil)
	got := map[string]bool{}
	for _, ns := range p.Describe(s, false).Nodes {
		got[ns.Name] = ns.TaintRemoved
	}
	assert.Equal(t, map[string]bool{"t": true, "w": true, "k": false, "l": false}, got)
	// The plan agrees: the nodes said to be open are released external.
	assert.Equal(t, []want{{"l", plan.Release, state.ReasonLeftPool}, {"t", plan.Release, state.ReasonExternal}, {"w", plan.Release, state.ReasonExternal}},
		summarize(compute(t, testConfig(t), s)))
}

// status's WARMER, KERNEL and IN PHASE columns, read from a real Describe: the warmer column
// tells a pod that proves the node warm from one that does not (pending, the pod already there
// at the taint, an old revision, a pull problem); the kernel is the node's, next to its
// baseline; time in phase counts from the phase's own timestamp.
func TestStatusColumns(t *testing.T) {
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	taintedAt := t0.Add(-3 * time.Hour)
	warming := func(name string) *corev1.Node {
		return tu.Node(name, append([]tu.NodeOption{inPool(), managed(state.PhaseWarming, taintedAt)}, upgradedTo("6.8.0-1")...)...)
	}
	pre := warming("pre")
	pre.Annotations[state.WarmerPodUID] = "uid-pre"
	pre.Annotations[state.WarmerPodRestarts] = "0"
	released := tu.Node("rel", inPool(), tu.WithKernel("6.8.0-1"), tu.WithAnnotations(
		state.ReleaseReason, state.ReasonWarm, state.ReleasedAt, state.FormatTime(t0.Add(-5*time.Minute)), state.MaintenanceID, "uid-nm-rel"))
	nodes := []*corev1.Node{
		warming("none"), warming("ready"), warming("pending"), pre, warming("old"), warming("pull"),
		tu.Node("tainted", inPool(), managed(state.PhaseTainted, taintedAt)), released,
	}
	s := snapshot(t0, nodes, map[string][]plan.Maintenance{"rel": nm("rel"), "tainted": nm("tainted")},
		tu.Pod(ds, "ready", "new", tu.Ready()),
		tu.Pod(ds, "pending", "new"),
		tu.Pod(ds, "pre", "new", tu.Ready(), tu.WithUID("uid-pre")),
		tu.Pod(ds, "old", "old", tu.Ready()),
		tu.Pod(ds, "pull", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off pulling image")),
	)
	type row struct{ phase, warmer, kernel, baseline string }
	got, since := map[string]row{}, map[string]time.Duration{}
	for _, ns := range p.Describe(s, false).Nodes {
		got[ns.Name] = row{ns.Phase, ns.Warmer, ns.Kernel, ns.BaselineKernel}
		since[ns.Name] = t0.Sub(ns.Since)
	}
	up := func(warmer string) row { return row{state.PhaseWarming, warmer, "6.8.0-1", "5.15.0-1"} }
	assert.Equal(t, map[string]row{
		"none": up("none"), "ready": up("ready"), "pending": up("pending"), "pre": up("ready (pre-existing)"),
		"old": up("ready (old revision)"), "pull": up("ImagePull"),
		"tainted": {state.PhaseTainted, "none", "5.15.0-1", "5.15.0-1"},
		"rel":     {"released", "none", "6.8.0-1", ""},
	}, got)
	// managed() records the upgrade 30 minutes after the taint.
	assert.Equal(t, 150*time.Minute, since["ready"], "warming: since upgraded-at")
	assert.Equal(t, 3*time.Hour, since["tainted"], "tainted: since tainted-at")
	assert.Equal(t, 5*time.Minute, since["rel"], "released: since released-at")
}

// A failing pull on a warmer pod of an earlier node of the same name is the old node's: it is
// neither recorded on this node nor shown as its problem, until a condition of the pod changes
// after the node was created (this node's kubelet runs the pod and reports its own).
func TestProblemOfAnEarlierNodesPod(t *testing.T) {
	born := t0.Add(-time.Minute)
	n := tu.Node("w", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)),
		func(n *corev1.Node) { n.CreationTimestamp = metav1.Time{Time: born} })
	pod := func(changed time.Time) *corev1.Pod {
		return tu.Pod(ds, "w", "new", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off pulling image"),
			func(p *corev1.Pod) {
				p.CreationTimestamp = metav1.Time{Time: born.Add(-time.Hour)}
				p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
					Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.Time{Time: changed}})
			})
	}
	p, err := plan.New(testConfig(t))
	require.NoError(t, err)
	for _, tc := range []struct {
		name    string
		changed time.Time
		want    []want
		warmer  string
	}{
		{"the old node's status", born.Add(-time.Second), nil, "pending"},
		{"this node's kubelet's", born.Add(time.Second), []want{{"w", plan.Record, "ImagePull"}}, "ImagePull"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := snapshot(t0, []*corev1.Node{n}, nil, pod(tc.changed))
			assert.Equal(t, tc.want, summarize(compute(t, testConfig(t), s)))
			st := p.Describe(s, false)
			require.Len(t, st.Nodes, 1)
			assert.Equal(t, tc.warmer, st.Nodes[0].Warmer)
		})
	}
}
