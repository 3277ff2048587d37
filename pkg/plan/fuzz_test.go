package plan_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// recordKeys are the annotations the planner reads back from a node: what a person, another tool
// or an earlier version may have written there.
var recordKeys = []string{
	state.Phase, state.Owner, state.BaselineKernel, state.BaselineBootID, state.BaselineKernelSource,
	state.TaintedAt, state.UpgradedAt, state.UpgradedBootID, state.UpgradedUnread, state.LeftMaintenanceAt,
	state.WarmerPodUID, state.WarmerPodRestarts, state.LastError, state.MaintenanceID, state.MaintenanceEnded,
	state.ReleasedAt, state.ReleaseReason, state.Taint, state.StatusLabel, state.StatusValues,
}

// Whatever a node's records say, the planner never panics, and what it plans keeps the
// invariants every plan keeps (only our taint, label and annotations written, a node outside the
// pool only released, a timeout release with a Warning): an odd value is skipped or repaired,
// never a crash nor a write to what is not ours. status and cleanup read the same nodes.
//
// The fuzzed string is split on "\x00" into values for recordKeys, in order, then a status
// label value and a taint written as key=value:effect; a missing value leaves the managed
// node's own.
func FuzzPlanOddRecords(f *testing.F) {
	f.Add("warming\x00prewarm/test\x00\x00\x00\x00not-a-time")
	f.Add("tainted\x00prewarm/test\x00\x00\x00label\x002026-11-25T11:00:00Z\x00\x00\x00x\x00\x00uid\x00-3")
	f.Add("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00warm\x00os-upgrade=x:NoExecute\x00os-upgrade/status")
	f.Add(strings.Repeat("\x00", 20) + "warming\x00os-upgrade=true:NoSchedule")
	f.Add("released\x00other/x\x00a\x00b\x00kernel\x002026-11-25T12:00:00+01:00\x002999-01-01T00:00:00Z")
	cfg := testConfig(f)
	p, err := plan.New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		fields := strings.Split(in, "\x00")
		n := tu.Node("a", inPool(), managed(state.PhaseWarming, t0.Add(-time.Hour)), tu.WithKernel("6.8.0-1"))
		for i, k := range recordKeys {
			if i < len(fields) {
				n.Annotations[k] = fields[i]
			}
		}
		if len(fields) > len(recordKeys) {
			n.Labels[labelKey] = fields[len(recordKeys)]
		}
		if len(fields) > len(recordKeys)+1 {
			parsed := tu.Node("t", tu.WithAnnotations(state.Taint, fields[len(recordKeys)+1]))
			if taint, ok := state.RecordedTaint(parsed); ok {
				n.Spec.Taints = append(n.Spec.Taints, taint)
			}
		}
		// The node registered a minute ago; its pods: one of its own, and one of an earlier node
		// of the same name, Ready since before.
		n.CreationTimestamp = metav1.Time{Time: t0.Add(-time.Minute)}
		pods := []*corev1.Pod{
			tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID(fields[0])),
			tu.Pod(ds, "a", "new", tu.Ready(), tu.WithUID("earlier"), func(p *corev1.Pod) {
				p.CreationTimestamp = metav1.Time{Time: t0.Add(-2 * time.Hour)}
				p.Status.Conditions[0].LastTransitionTime = metav1.Time{Time: t0.Add(-time.Hour)}
			}),
		}
		left := n.DeepCopy() // the same records on a node that left the pool
		delete(left.Labels, poolKey)
		for _, node := range []*corev1.Node{n, left} {
			for _, maint := range []map[string][]plan.Maintenance{nil, {"a": nm("a")}} {
				for _, pods := range [][]*corev1.Pod{pods, pods[1:]} {
					s := snapshot(t0, []*corev1.Node{node, tu.Node("b", inPool())}, maint, pods...)
					out := p.Compute(s)
					assertInvariants(t, cfg, p, s, out)
					_ = p.Describe(s, true)
					for _, uninstall := range []bool{false, true} {
						assertInvariants(t, cfg, p, s, p.Cleanup(s, uninstall))
					}
				}
			}
		}
	})
}
