package orchestrator_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

const newKernel = "6.8.0-100"

func kernelTarget(c *config.Config) {
	c.Upgrade.KernelVersions = []string{newKernel}
	c.Upgrade.KernelVersionLabel = "kernel-version"
}

// consistentlyNoWarmer asserts that no warmer pod appears on the node for a while: the
// DaemonSet's affinity must not admit a node before its upgrade. The window starts once the
// DaemonSet controller has synced the warmer (its status has observed its generation), so that a
// DaemonSet created just before is not merely still unseen by that controller.
func (e *env) consistentlyNoWarmer(short string, d time.Duration) {
	e.T.Helper()
	e.eventually("the DaemonSet controller to sync the warmer", func() bool {
		ds, err := e.client.AppsV1().DaemonSets(e.Config.Warmer.Namespace).Get(e.Ctx, e.Config.Warmer.DaemonSetName, metav1.GetOptions{})
		return err == nil && ds.Status.ObservedGeneration >= ds.Generation
	})
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		require.Empty(e.T, e.warmerPods(short), "no warmer pod may run on %s before its upgrade", short)
		time.Sleep(250 * time.Millisecond)
	}
}

// waitReplacementWarmer waits until a Ready warmer pod other than the one with uid runs on the node.
func (e *env) waitReplacementWarmer(short string, uid types.UID) {
	e.T.Helper()
	e.eventually("a new warmer pod on "+short, func() bool {
		for _, p := range e.warmerPods(short) {
			if p.UID != uid && state.PodReady(&p) {
				return true
			}
		}
		return false
	})
}

// 1. The seed scenario, with a kernel target.
func TestSeedScenario(t *testing.T) {
	e := newEnv(t, kernelTarget)
	foreignTaint := corev1.Taint{Key: "example.com/foreign", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	e.PoolNode("a", framework.WithTaints(foreignTaint), framework.WithLabels(map[string]string{"team": "ml"}))
	e.PoolNode("b")
	e.PoolNode("c")
	e.otherNode("x")
	e.Warmer()
	for _, n := range []string{"a", "b", "x"} {
		e.Maintenance(n)
	}

	res := e.cycle()
	assert.Equal(t, 2, res.Applied[plan.Enter])
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.requirePhase("b", state.PhaseTainted, "upgrading")
	e.RequireUntouched("c")
	e.RequireUntouched("x")
	a := e.Node("a")
	assert.Equal(t, "5.15.0-100", a.Annotations[state.BaselineKernel])
	assert.NotEmpty(t, a.Annotations[state.BaselineBootID])
	assert.Equal(t, e.Name+"/prewarm", a.Annotations[state.Owner])
	require.Len(t, e.Events("a", "PrewarmTainted"), 1)

	e.consistentlyNoWarmer("a", 2*time.Second)

	// The pipeline cordons, reboots onto the new kernel; the kernel term starts the warmer.
	_, err := cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.Reboot("a", newKernel)
	e.waitWarmerReady("a")

	res = e.cycle()
	assert.Equal(t, 1, res.Applied[plan.Release])
	released := e.RequireReleased("a", state.ReasonWarm)
	e.requirePhase("b", state.PhaseTainted, "upgrading")
	e.RequireUntouched("c")
	e.RequireUntouched("x")

	// Foreign taints, labels and cordons are intact.
	assert.Contains(t, released.Spec.Taints, foreignTaint)
	assert.Equal(t, "ml", released.Labels["team"])
	assert.True(t, released.Spec.Unschedulable, "the pipeline's cordon is not ours to remove")
	require.Len(t, e.Events("a", "PrewarmReleased"), 1)

	// Released while its NodeMaintenance still exists: not tainted again.
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
}

// 2. No kernel target: a pod Ready before the reboot does not release the node; one Ready after it does.
func TestPodReadyBeforeRebootDoesNotCount(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	// A warmer that runs on every pool node keeps its pod through the taint and the reboot.
	e.Warmer(func(o *framework.WarmerOptions) { o.AnyPoolNode = true })
	pre := e.waitWarmerReady("a")

	e.Maintenance("a")
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	assert.Equal(t, string(pre.UID), e.Node("a").Annotations[state.WarmerPodUID])

	e.Reboot("a", newKernel)
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming") // the old pod is still Ready: not warm

	// The reboot re-creates the pod (kwok does not restart containers): a new pod, Ready after it.
	require.NoError(t, e.client.CoreV1().Pods(pre.Namespace).Delete(e.Ctx, pre.Name, metav1.DeleteOptions{}))
	e.waitReplacementWarmer("a", pre.UID)
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
}

// 3. Maintenance cancelled before the upgrade: released after cancelAfter.
func TestCancelledMaintenance(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")

	e.EndMaintenance("a")
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	assert.Contains(t, e.Node("a").Annotations, state.LeftMaintenanceAt)

	e.clock.Advance(9 * time.Minute)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")

	e.clock.Advance(time.Minute)
	e.cycle()
	e.RequireReleased("a", state.ReasonCancelled)
	require.Len(t, e.Events("a", "PrewarmReleased"), 1)
}

// 4. The DaemonSet is updated (new image list): a pod of the old revision does not count.
func TestOldRevisionDoesNotCount(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	ds := e.Warmer()
	e.Maintenance("a")
	e.cycle()
	e.Reboot("a", newKernel)
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	old := e.waitWarmerReady("a")

	// New image list; OnDelete keeps the old pod around so the orchestrator sees it.
	patch := `{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null},"template":{"spec":{"containers":[{"name":"warm-0","image":"registry.example.com/notebook/base:2026.12"}]}}}}`
	_, err := e.client.AppsV1().DaemonSets(ds.Namespace).Patch(e.Ctx, ds.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
	e.eventually("the DaemonSet controller to observe the update", func() bool {
		cur, err := e.client.AppsV1().DaemonSets(ds.Namespace).Get(e.Ctx, ds.Name, metav1.GetOptions{})
		return err == nil && cur.Status.ObservedGeneration >= cur.Generation && cur.Generation > ds.Generation
	})

	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")

	require.NoError(t, e.client.CoreV1().Pods(old.Namespace).Delete(e.Ctx, old.Name, metav1.DeleteOptions{}))
	e.waitReplacementWarmer("a", old.UID)
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
}

// 5. Image pull failure: a Warning Event and last-error, then the warm timeout releases (default)
// or keeps (onWarmTimeout: keep).
func TestPullFailure(t *testing.T) {
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("keep=%v", keep), func(t *testing.T) {
			e := newEnv(t, func(c *config.Config) {
				if keep {
					c.OnWarmTimeout = config.OnWarmTimeoutKeep
				}
			})
			e.Images = []string{framework.FailPullImage("registry.example.com/notebook/missing:1")}
			e.PoolNode("a")
			e.Warmer()
			e.Maintenance("a")
			e.cycle()
			e.Reboot("a", newKernel)
			e.cycle()
			e.requirePhase("a", state.PhaseWarming, "warming")
			e.eventually("the warmer container to fail its pull", func() bool {
				reason, _ := plan.PodProblem(podPtrs(e.warmerPods("a")))
				return reason == "ImagePull"
			})

			e.cycle()
			e.requireProblemRecorded("a", "ImagePull", "missing")

			e.cycle() // the same problem is not reported twice
			require.Len(t, e.Events("a", "PrewarmImagePull"), 1)
			e.requirePhase("a", state.PhaseWarming, "warming")
			assert.Equal(t, map[string]float64{"ImagePull": 1}, e.problemGauge(), "node_problems after the problem was recorded")

			e.clock.Advance(2 * time.Hour)
			e.cycle()
			if keep {
				e.requirePhase("a", state.PhaseWarming, "warming")
				assert.True(t, strings.HasPrefix(e.Node("a").Annotations[state.LastError], "WarmTimeout: "))
				require.Len(t, e.Events("a", "PrewarmWarmTimeout"), 1)
				assert.Equal(t, map[string]float64{plan.ProblemWarmTimeout: 1}, e.problemGauge(), "the node kept tainted counts")
				return
			}
			e.RequireReleased("a", state.ReasonTimeout)
			assert.Empty(t, e.problemGauge(), "a released node counts no more")
			timeouts := e.Events("a", "PrewarmTimeout")
			require.Len(t, timeouts, 1)
			assert.Equal(t, corev1.EventTypeWarning, timeouts[0].Type)
			assert.Contains(t, timeouts[0].Message, "ImagePull")
		})
	}
}

// 5b. A warmer pod the scheduler cannot place (here: it asks for more CPU than the node has) is
// never bound to its node; it is still reported there, as a pull failure is.
func TestUnschedulableWarmer(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	ds := e.Warmer()
	patch := `{"spec":{"template":{"spec":{"containers":[{"name":"warm-0","resources":{"requests":{"cpu":"5k"}}}]}}}}`
	_, err := e.client.AppsV1().DaemonSets(ds.Namespace).Patch(e.Ctx, ds.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)
	e.Maintenance("a")
	e.cycle()
	e.Reboot("a", newKernel)
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	node := e.NodeName("a")
	e.eventually("the scheduler to find no room for the warmer pod", func() bool {
		pods, err := e.client.CoreV1().Pods(ds.Namespace).List(e.Ctx, metav1.ListOptions{})
		require.NoError(t, err)
		for i := range pods.Items {
			if p := &pods.Items[i]; plan.PodNode(p) == node {
				reason, _ := plan.PodProblem([]*corev1.Pod{p})
				return reason == plan.ProblemUnschedulable && p.Spec.NodeName == ""
			}
		}
		return false
	})

	e.cycle()
	e.requireProblemRecorded("a", plan.ProblemUnschedulable, "Insufficient cpu")
	assert.Equal(t, map[string]float64{plan.ProblemUnschedulable: 1}, e.problemGauge())
	e.requirePhase("a", state.PhaseWarming, "warming")
}

// requireProblemRecorded requires the node's last-error to record the problem reason (and say
// detail), with one Warning Event Prewarm<reason> about it.
func (e *env) requireProblemRecorded(short, reason, detail string) {
	e.T.Helper()
	lastError := e.Node(short).Annotations[state.LastError]
	assert.True(e.T, strings.HasPrefix(lastError, reason+": "), lastError)
	assert.Contains(e.T, lastError, detail)
	warnings := e.Events(short, "Prewarm"+reason)
	require.Len(e.T, warnings, 1)
	assert.Equal(e.T, corev1.EventTypeWarning, warnings[0].Type)
}

func podPtrs(pods []corev1.Pod) []*corev1.Pod {
	out := make([]*corev1.Pod, len(pods))
	for i := range pods {
		out[i] = &pods[i]
	}
	return out
}

// 6. A node that joins with the taint is adopted and released once warm.
func TestJoinedTaintedIsAdopted(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.PoolNode("a", framework.WithTaints(corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}))
	e.Warmer()
	e.consistentlyNoWarmer("a", time.Second)

	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	require.Len(t, e.Events("a", "PrewarmAdopted"), 1)
	e.waitWarmerReady("a")
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
}

// While the warmer DaemonSet is missing no node is tainted for maintenance: it could never become
// warm, and would open cold after maxWaitForWarm instead of going through its upgrade untouched.
// The binary says so at WARN, and its dry run prints the note. A node that joins with our taint
// is still adopted (left alone, it would keep the provisioner's taint for good), and its
// maxWaitForWarm releases it. Once the DaemonSet exists, nodes in maintenance are tainted again.
func TestMissingWarmerEntersNoNode(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	e.PoolNode("j", framework.WithTaints(corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}))
	e.PoolNode("b")
	e.Maintenance("a")
	warning := fmt.Sprintf("warmer DaemonSet %s/%s not found: no node is tainted for maintenance until it exists (1 node(s) in maintenance are upgraded without pre-warming: %s)",
		e.Config.Warmer.Namespace, e.Config.Warmer.DaemonSetName, e.NodeName("a"))

	// The dry run plans the adoption and no entry, prints the note, and logs it at WARN.
	res := e.runBinary(e.configYAML(), "run", "--once", "--dry-run", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stdout, "1 action(s), nothing written")
	assert.Regexp(t, e.NodeName("j")+`\s+adopt\s+joined-tainted`, res.stdout)
	assert.NotRegexp(t, `\senter\s`, res.stdout)
	assert.Regexp(t, `-\s+note\s+`+regexp.QuoteMeta(warning), res.stdout)
	assert.Contains(t, res.stderr, `level=WARN msg="`+warning+`"`)
	assert.NotContains(t, res.stderr, `node=""`)
	e.RequireUntouched("a")
	assert.NotContains(t, e.Node("j").Annotations, state.Phase)

	// A cycle adopts j and leaves a alone.
	out := e.cycle()
	assert.Equal(t, map[plan.ActionType]int{plan.Adopt: 1}, out.Applied)
	e.requirePhase("j", state.PhaseWarming, "warming")
	e.RequireUntouched("a")
	e.RequireUntouched("b")
	// (The other notes are about the other tests' nodes, which carry the same status label.)
	var warnings []string
	for _, n := range out.Plan.Notes {
		if n.Warning {
			warnings = append(warnings, n.Message)
		}
	}
	assert.Equal(t, []string{warning}, warnings, "j was not managed yet when the cycle read the pool")

	// The binary's cycle too, and it says so at WARN while a managed node exists.
	res = e.runBinary(e.configYAML(), "run", "--once", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stderr, `level=WARN msg="`+warning+`, and none of the 1 managed node(s) can become warm"`)
	e.RequireUntouched("a")

	// The adopted node keeps its timer: released (cold) after maxWaitForWarm, with its Warning.
	e.clock.Advance(2 * time.Hour)
	out = e.cycle()
	assert.Equal(t, map[plan.ActionType]int{plan.Release: 1}, out.Applied)
	e.RequireReleased("j", state.ReasonTimeout)
	require.Len(t, e.Events("j", "PrewarmTimeout"), 1)
	e.RequireUntouched("a")

	// With the warmer in place, the node still in maintenance is tainted, and nothing warns.
	e.Warmer()
	out = e.cycle()
	assert.Equal(t, map[plan.ActionType]int{plan.Enter: 1}, out.Applied)
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	for _, n := range out.Plan.Notes {
		assert.False(t, n.Warning, n.Message)
	}
	e.RequireUntouched("b")
}

// A warmer DaemonSet being deleted but held by a finalizer (a GitOps controller's, or a
// foreground deletion waiting for a pod on an unreachable node) creates no more pods: it counts
// as missing, and no node is tainted for it. Once it is gone and back, nodes are tainted again.
func TestWarmerBeingDeletedEntersNoNode(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	ds := e.Warmer()
	dss := e.client.AppsV1().DaemonSets(ds.Namespace)
	const finalizer = "example.com/hold"
	unhold := func() {
		_, err := dss.Patch(context.Background(), ds.Name, types.JSONPatchType,
			[]byte(`[{"op":"test","path":"/metadata/finalizers/0","value":"`+finalizer+`"},{"op":"remove","path":"/metadata/finalizers/0"}]`), metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) {
			t.Errorf("removing the finalizer: %v", err)
		}
	}
	_, err := dss.Patch(e.Ctx, ds.Name, types.MergePatchType, []byte(`{"metadata":{"finalizers":["`+finalizer+`"]}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	t.Cleanup(unhold)
	require.NoError(t, dss.Delete(e.Ctx, ds.Name, metav1.DeleteOptions{}))
	held, err := dss.Get(e.Ctx, ds.Name, metav1.GetOptions{})
	require.NoError(t, err, "held by its finalizer")
	require.NotNil(t, held.DeletionTimestamp)

	e.Maintenance("a")
	out := e.cycle()
	assert.Empty(t, out.Applied)
	e.RequireUntouched("a")
	var warnings []string
	for _, n := range out.Plan.Notes {
		if n.Warning {
			warnings = append(warnings, n.Message)
		}
	}
	assert.Contains(t, warnings, fmt.Sprintf("warmer DaemonSet %s/%s is being deleted: no node is tainted for maintenance until it exists again (1 node(s) in maintenance are upgraded without pre-warming: %s)",
		ds.Namespace, ds.Name, e.NodeName("a")))

	unhold()
	e.eventually("the DaemonSet gone", func() bool {
		_, err := dss.Get(e.Ctx, ds.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	e.Warmer()
	out = e.cycle()
	assert.Equal(t, map[plan.ActionType]int{plan.Enter: 1}, out.Applied)
	e.requirePhase("a", state.PhaseTainted, "upgrading")
}

// A helm upgrade that changes the taint while a node is tainted: the next cycle swaps the taint
// recorded on the node for the new one (the node stays closed), the new warmer, which tolerates
// only the new taint, warms it, and the release leaves neither taint behind.
func TestChangedTaint(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	ds := e.Warmer()
	e.Maintenance("a")
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	old := corev1.Taint{Key: e.Config.Taint.Key, Value: e.Config.Taint.Value, Effect: e.Config.Taint.Effect}
	assert.Equal(t, state.FormatTaint(old), e.Node("a").Annotations[state.Taint])

	// The upgrade: a new taint in the configuration and in the warmer's tolerations.
	e.Config.Taint.Key, e.Config.Taint.Effect = "example.com/prewarm", corev1.TaintEffectNoExecute
	e.rollWarmer(ds)

	res := e.cycle()
	assert.Equal(t, 1, res.Applied[plan.Record])
	n := e.Node("a")
	assert.False(t, state.HasTaint(n, old.Key, old.Effect), "the old taint is gone")
	assert.True(t, state.HasTaint(n, "example.com/prewarm", corev1.TaintEffectNoExecute), "the new taint is on")
	assert.Equal(t, "example.com/prewarm=true:NoExecute", n.Annotations[state.Taint])
	e.requirePhase("a", state.PhaseTainted, "upgrading")

	e.Reboot("a", newKernel)
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	e.waitWarmerReady("a")
	e.cycle()
	released := e.RequireReleased("a", state.ReasonWarm)
	assert.Empty(t, released.Spec.Taints, "neither taint is left")
	assert.NotContains(t, released.Annotations, state.Taint)
}

// rollWarmer updates the warmer DaemonSet to what the chart renders for the current Config, as
// a helm upgrade does.
func (e *env) rollWarmer(ds *appsv1.DaemonSet) {
	e.T.Helper()
	require.NoError(e.T, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := e.client.AppsV1().DaemonSets(ds.Namespace).Get(e.Ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec = framework.WarmerDaemonSet(framework.WarmerOptionsFor(e.Config, e.Images)).Spec
		_, err = e.client.AppsV1().DaemonSets(ds.Namespace).Update(e.Ctx, cur, metav1.UpdateOptions{})
		return err
	}))
}

// poolInMaintenance creates n pool nodes named by format (with their index), each with a
// NodeMaintenance, and returns their short names.
func (e *env) poolInMaintenance(format string, n int) []string {
	e.T.Helper()
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf(format, i)
		e.PoolNode(names[i])
		e.Maintenance(names[i])
	}
	return names
}

// waitNewWarmerReady waits for a Ready warmer pod of the DaemonSet's current revision on the node.
func (e *env) waitNewWarmerReady(ds *appsv1.DaemonSet, short string) {
	e.T.Helper()
	e.eventually("a Ready warmer pod of the new revision on "+short, func() bool {
		rev := e.currentRevision(ds)
		for _, p := range e.warmerPods(short) {
			if rev != "" && p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == rev && p.DeletionTimestamp == nil && state.PodReady(&p) {
				return true
			}
		}
		return false
	})
}

// currentRevision returns the controller-revision-hash of the DaemonSet's current revision, ""
// while its controller has not observed its latest spec.
func (e *env) currentRevision(ds *appsv1.DaemonSet) string {
	e.T.Helper()
	cur, err := e.client.AppsV1().DaemonSets(ds.Namespace).Get(e.Ctx, ds.Name, metav1.GetOptions{})
	require.NoError(e.T, err)
	list, err := e.client.AppsV1().ControllerRevisions(ds.Namespace).List(e.Ctx, metav1.ListOptions{})
	require.NoError(e.T, err)
	revisions := make([]*appsv1.ControllerRevision, len(list.Items))
	for i := range list.Items {
		revisions[i] = &list.Items[i]
	}
	return plan.CurrentRevision(cur, revisions)
}

// A helm upgrade that changes statusLabel.key while one node is tainted and another warming: the
// next cycle moves each node's status label from the key recorded on it to the new key, with the
// value its phase calls for, in one patch (taint and other labels untouched); the new warmer,
// which follows only the new key, warms the warming node, whose release leaves no label under
// either key; and cleanup removes the label under the key recorded on a node, whatever key the
// configuration names by then.
func TestChangedStatusLabel(t *testing.T) {
	e := newEnv(t)
	team := framework.WithLabels(map[string]string{"team": "ml"})
	e.PoolNode("a", team)
	e.PoolNode("b", team)
	ds := e.Warmer()
	e.Maintenance("a")
	e.Maintenance("b")
	e.cycle()
	e.Reboot("b", newKernel)
	e.cycle()
	oldKey := e.Config.StatusLabel.Key
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.requirePhase("b", state.PhaseWarming, "warming")
	assert.Equal(t, oldKey, e.Node("a").Annotations[state.StatusLabel])
	assert.Equal(t, oldKey, e.Node("b").Annotations[state.StatusLabel])

	// The upgrade: a new key in the configuration and in the warmer's affinity.
	const newKey = "example.com/prewarm-status"
	e.Config.StatusLabel.Key = newKey
	e.rollWarmer(ds)

	res := e.cycle()
	assert.Equal(t, 2, res.Applied[plan.Record], "one patch per node")
	for short, want := range map[string]struct{ phase, value string }{
		"a": {state.PhaseTainted, "upgrading"},
		"b": {state.PhaseWarming, "warming"},
	} {
		n := e.Node(short)
		assert.NotContains(t, n.Labels, oldKey, "the old label is gone from %s", short)
		e.requirePhase(short, want.phase, want.value) // the new label, and the taint
		assert.Equal(t, newKey, n.Annotations[state.StatusLabel], "the record of %s", short)
		assert.Len(t, n.Spec.Taints, 1, "the taint of %s is untouched", short)
		assert.Equal(t, "ml", n.Labels["team"], "other labels of %s stay", short)
		assert.Equal(t, e.Name, n.Labels[framework.PoolLabel])
	}

	// The new warmer runs on the warming node, which the next cycle releases warm (and swaps
	// nothing again). A pod of the new revision is one its template's affinity (on the new key)
	// admitted: the DaemonSet controller pins each pod to its node by name, so the pod's own
	// affinity does not name the key.
	e.waitNewWarmerReady(ds, "b")
	res = e.cycle()
	assert.Equal(t, map[plan.ActionType]int{plan.Release: 1}, res.Applied)
	released := e.RequireReleased("b", state.ReasonWarm)
	assert.NotContains(t, released.Labels, oldKey)
	assert.NotContains(t, released.Annotations, state.StatusLabel)
	assert.Equal(t, "ml", released.Labels["team"])

	// Cleanup under yet another key removes the label under the key recorded on the node.
	e.Config.StatusLabel.Key = "example.com/prewarm-status-2"
	res, err := e.engine().Cleanup(e.Ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release])
	cleaned := e.RequireReleased("a", state.ReasonCleanup)
	for _, k := range []string{oldKey, newKey} {
		assert.NotContains(t, cleaned.Labels, k)
	}
	assert.NotContains(t, cleaned.Annotations, state.StatusLabel)
	assert.Empty(t, cleaned.Spec.Taints)
	assert.Equal(t, "ml", cleaned.Labels["team"])
}

// A helm upgrade that changes the status label's values: the next cycle sets each managed node's
// label to the value its phase now calls for (the new warmer follows only the new warming value),
// except a value someone set by hand, and records the new values; then the warming node is
// released warm.
func TestChangedStatusValues(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"a", "b", "c"} {
		e.PoolNode(s)
		e.Maintenance(s)
	}
	ds := e.Warmer()
	e.cycle()
	e.Reboot("b", newKernel)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.requirePhase("b", state.PhaseWarming, "warming")
	key := e.Config.StatusLabel.Key
	_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("c"), types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"`+key+`":"hold"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)

	e.Config.StatusLabel.Value, e.Config.StatusLabel.WarmingValue = "waiting", "pulling"
	e.rollWarmer(ds)
	res := e.cycle()
	assert.Equal(t, 3, res.Applied[plan.Record], "one patch per node")
	e.requirePhase("a", state.PhaseTainted, "waiting")
	e.requirePhase("b", state.PhaseWarming, "pulling")
	assert.Equal(t, "hold", e.Node("c").Labels[key], "a value set by hand stays")
	for _, s := range []string{"a", "b", "c"} {
		assert.Equal(t, "waiting,pulling", e.Node(s).Annotations[state.StatusValues], "the record of %s", s)
	}

	e.waitNewWarmerReady(ds, "b")
	assert.Equal(t, map[plan.ActionType]int{plan.Release: 1}, e.cycle().Applied, "recorded: nothing more to swap")
	released := e.RequireReleased("b", state.ReasonWarm)
	assert.NotContains(t, released.Labels, key)
	assert.NotContains(t, released.Annotations, state.StatusValues)
}

// 7. maxConcurrent with 10 nodes in maintenance, as an int and as a percentage of the pool
// (rounded up: 25% of 10 is 3): exactly that many tainted, across cycles; more as they are released.
func TestBudget(t *testing.T) {
	cases := []struct {
		name   string
		budget intstr.IntOrString
		want   int
	}{
		{"int", intstr.FromInt32(3), 3},
		{"percent", intstr.FromString("25%"), 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, kernelTarget, func(c *config.Config) { c.MaxConcurrent = tc.budget })
			e.Warmer()
			names := e.poolInMaintenance("n%02d", 10)
			phases := func() map[string][]string {
				out := map[string][]string{}
				for _, s := range names {
					n := e.Node(s)
					p := n.Annotations[state.Phase]
					if p == "" {
						p = n.Annotations[state.ReleaseReason]
					}
					out[p] = append(out[p], s)
				}
				return out
			}

			e.cycle()
			first := phases()[state.PhaseTainted]
			require.Len(t, first, tc.want)
			e.cycle()
			require.Len(t, phases()[state.PhaseTainted], tc.want, "the budget holds across cycles")

			for _, s := range first {
				e.Reboot(s, newKernel)
			}
			for _, s := range first {
				e.waitWarmerReady(s)
			}
			e.cycle()
			got := phases()
			assert.ElementsMatch(t, first, got[state.ReasonWarm])
			require.Len(t, got[state.PhaseTainted], tc.want, "released nodes make room for as many again")
			assert.Len(t, got[""], len(names)-2*tc.want, "the others wait, untouched")
			e.cycle()
			require.Len(t, phases()[state.PhaseTainted], tc.want, "released nodes do not count against the budget; the next batch does")
		})
	}
}

// 8. A second writer changes other taints and labels on the same nodes while cycles run:
// nothing of theirs is lost, nothing of ours is duplicated.
func TestConcurrentWriter(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	names := e.poolInMaintenance("w%d", 5)

	const rounds = 15
	var wg sync.WaitGroup
	wg.Add(1)
	errs := make(chan error, 1)
	go func() {
		defer wg.Done()
		for r := range rounds {
			for _, s := range names {
				if err := otherWriter(e, cluster.Client, e.NodeName(s), r); err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	for i := 0; i < 6; i++ {
		if i == 2 {
			for _, s := range names {
				e.Reboot(s, newKernel)
			}
		}
		_, err := e.engine().RunOnce(e.Ctx)
		require.NoError(t, err)
	}
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)

	e.cycleUntilReleased(names, func() { e.cycle() })
	for _, s := range names {
		n := e.RequireReleased(s, state.ReasonWarm)
		for r := range rounds {
			assert.Equal(t, "yes", n.Labels[fmt.Sprintf("writer.example.com/r%d", r)], "label of round %d on %s", r, s)
			assert.Contains(t, n.Spec.Taints, corev1.Taint{Key: fmt.Sprintf("writer.example.com/r%d", r), Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule})
		}
	}
}

// 8b. Another writer changes the node between the orchestrator's read and its patch, every
// time: the entry's merge patch, guarded by the resourceVersion, is refused (409 Conflict), and
// so is the release's JSON patch (422: its test of our taint's index fails, the writer having
// put a taint before ours). Each node is re-read and re-planned, and nothing of the writer's is
// lost.
func TestWriteBetweenReadAndPatch(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	names := e.poolInMaintenance("i%d", 3)

	var mu sync.Mutex
	interfered := map[string]bool{}
	counter := &requestCounter{beforePatch: func(req *http.Request) {
		if !strings.HasPrefix(req.URL.Path, "/api/v1/nodes/") {
			return
		}
		node, contentType := path.Base(req.URL.Path), req.Header.Get("Content-Type")
		mu.Lock()
		first := !interfered[node+" "+contentType]
		interfered[node+" "+contentType] = true
		mu.Unlock()
		if !first {
			return
		}
		// The first merge patch of each node is its entry, the first JSON patch its release.
		key, before := "writer.example.com/enter", false
		if contentType == string(types.JSONPatchType) {
			key, before = "writer.example.com/release", true
		}
		assert.NoError(t, retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cluster.Client.CoreV1().Nodes().Get(e.Ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Labels[key] = "yes"
			taint := corev1.Taint{Key: key, Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule}
			if before {
				n.Spec.Taints = append([]corev1.Taint{taint}, n.Spec.Taints...)
			} else {
				n.Spec.Taints = append(n.Spec.Taints, taint)
			}
			_, err = cluster.Client.CoreV1().Nodes().Update(e.Ctx, n, metav1.UpdateOptions{})
			return err
		}))
	}}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	cycle := func() {
		_, err := e.engine(func(o *engine.Options) { o.Client = counted }).RunOnce(e.Ctx)
		require.NoError(t, err)
	}

	// Refused at least once per node (another writer, such as kwok's status updates, may make
	// the retry conflict too).
	refused := func(code int, what string) {
		for _, s := range names {
			assert.Positive(t, counter.answered(http.MethodPatch, "/nodes/"+e.NodeName(s), code), "%s of %s refused with %d", what, s, code)
		}
	}
	cycle()
	refused(http.StatusConflict, "the entry")
	for _, s := range names {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
		n := e.Node(s)
		assert.Equal(t, "yes", n.Labels["writer.example.com/enter"], "the writer's label on %s", s)
		assert.Contains(t, n.Spec.Taints, corev1.Taint{Key: "writer.example.com/enter", Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule})
		e.Reboot(s, newKernel)
	}

	e.cycleUntilReleased(names, cycle)
	refused(http.StatusUnprocessableEntity, "the release")
	for _, s := range names {
		n := e.RequireReleased(s, state.ReasonWarm)
		for _, key := range []string{"writer.example.com/enter", "writer.example.com/release"} {
			assert.Equal(t, "yes", n.Labels[key], "the writer's label %s on %s", key, s)
			assert.Contains(t, n.Spec.Taints, corev1.Taint{Key: key, Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule}, "on %s", s)
		}
	}
}

// 8d. A release that rests on more than the keys a JSON patch can test: left-pool on the pool
// label, cancelled on the node's status (not rebooted onto the target kernel), external on our
// taint's absence. A change to any between the read and the patch sends the release back for a
// re-read: p, back in the pool, stays tainted for its maintenance (released, the maintenance
// would count as done and its upgrade open the node cold); c, rebooted onto the new kernel as its
// release was on its way, is seen upgraded and opens warm, not cancelled; x, whose taint an
// operator removed and put back, stays managed (released, it would keep the taint untracked).
func TestReleaseRestingOnTheNodeIsGuarded(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	for _, s := range []string{"p", "c", "x"} {
		e.PoolNode(s)
		e.Maintenance(s)
	}
	e.cycle()
	for _, s := range []string{"p", "c", "x"} {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
	}

	// c leaves its maintenance and waits out cancelAfter; p leaves the pool.
	e.EndMaintenance("c")
	e.cycle() // records when c left its maintenance
	e.clock.Advance(e.Config.CancelAfter.Duration + time.Minute)
	poolLabel := func(value string) []byte {
		return []byte(fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, framework.PoolLabel, value))
	}
	_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("p"), types.MergePatchType, poolLabel("elsewhere"), metav1.PatchOptions{})
	require.NoError(t, err)
	ours := corev1.Taint{Key: e.Config.Taint.Key, Value: e.Config.Taint.Value, Effect: e.Config.Taint.Effect}
	setOurTaint := func(node string, present bool) error {
		return retry.RetryOnConflict(retry.DefaultRetry, func() error {
			n, err := cluster.Client.CoreV1().Nodes().Get(e.Ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.MatchTaint(&ours) })
			if present {
				n.Spec.Taints = append(n.Spec.Taints, ours)
			}
			_, err = cluster.Client.CoreV1().Nodes().Update(e.Ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	require.NoError(t, setOurTaint(e.NodeName("x"), false))

	// Before each node's first patch of the next cycle, its release: p is put back in the pool,
	// c rebooted onto the new kernel.
	var mu sync.Mutex
	done := map[string]bool{}
	counter := &requestCounter{beforePatch: func(req *http.Request) {
		node := path.Base(req.URL.Path)
		mu.Lock()
		first := !done[node]
		done[node] = true
		mu.Unlock()
		if !first {
			return
		}
		switch node {
		case e.NodeName("p"):
			_, err := cluster.Client.CoreV1().Nodes().Patch(e.Ctx, node, types.MergePatchType, poolLabel(e.Name), metav1.PatchOptions{})
			assert.NoError(t, err)
		case e.NodeName("c"):
			_, err := cluster.Reboot(e.Ctx, node, newKernel, map[string]string{"kernel-version": newKernel})
			assert.NoError(t, err)
		case e.NodeName("x"):
			assert.NoError(t, setOurTaint(node, true))
		}
	}}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	res, err := e.engine(func(o *engine.Options) { o.Client = counted }).RunOnce(e.Ctx)
	require.NoError(t, err)
	for _, s := range []string{"p", "c", "x"} {
		assert.Positive(t, counter.answered(http.MethodPatch, "/nodes/"+e.NodeName(s), http.StatusConflict), "the release of %s refused", s)
	}
	assert.Zero(t, res.Applied[plan.Release], "nothing released: %v", res.Plan.Actions)
	e.requirePhase("p", state.PhaseTainted, "upgrading")
	e.requirePhase("c", state.PhaseWarming, "warming")
	e.requirePhase("x", state.PhaseTainted, "upgrading")
	e.requireTainted("x")

	e.Reboot("p", newKernel)
	e.Reboot("x", newKernel)
	e.cycleUntilReleased([]string{"p", "c", "x"}, func() { e.cycle() })
	for _, s := range []string{"p", "c", "x"} {
		e.RequireReleased(s, state.ReasonWarm)
	}
}

// 8e. The timeout of a node still waiting for its upgrade (maxWaitForUpgrade) rests on the
// node's status too: one rebooted onto the new kernel as that release was on its way is seen
// upgraded and opens warm, not cold with a timeout Warning.
func TestUpgradeTimeoutRacingTheUpgradeIsGuarded(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	e.PoolNode("t")
	e.Maintenance("t")
	e.cycle()
	e.requirePhase("t", state.PhaseTainted, "upgrading")
	e.clock.Advance(e.Config.MaxWaitForUpgrade.Duration + time.Minute)

	var rebooted atomic.Bool
	counter := &requestCounter{beforePatch: func(req *http.Request) {
		if path.Base(req.URL.Path) == e.NodeName("t") && rebooted.CompareAndSwap(false, true) {
			_, err := cluster.Reboot(e.Ctx, e.NodeName("t"), newKernel, map[string]string{"kernel-version": newKernel})
			assert.NoError(t, err)
		}
	}}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	res, err := e.engine(func(o *engine.Options) { o.Client = counted }).RunOnce(e.Ctx)
	require.NoError(t, err)
	require.True(t, rebooted.Load(), "the timeout was planned: %v", res.Plan.Actions)
	assert.Positive(t, counter.answered(http.MethodPatch, "/nodes/"+e.NodeName("t"), http.StatusConflict), "the timeout release refused")
	e.requirePhase("t", state.PhaseWarming, "warming")
	e.cycleUntilReleased([]string{"t"}, func() { e.cycle() })
	e.RequireReleased("t", state.ReasonWarm)
}

// 8c. The API server applies a patch but its answer is lost (the connection breaks on the way
// back): the engine re-reads the node, finds its change there, and counts the write as done:
// the cycle succeeds and the transition's Event is recorded, once. Without the re-read the
// cycle failed and the next one found nothing left to do, so no Event ever said what happened.
func TestPatchAppliedButResponseLost(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	names := e.poolInMaintenance("l%d", 2)

	// The first answer of each node's first merge patch (its entry) and first JSON patch (its
	// release) is lost.
	var mu sync.Mutex
	dropped := map[string]bool{} // "node content-type"
	counter := &requestCounter{dropResponse: func(req *http.Request, resp *http.Response) bool {
		if !strings.HasPrefix(req.URL.Path, "/api/v1/nodes/") || resp.StatusCode != http.StatusOK {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		key := path.Base(req.URL.Path) + " " + req.Header.Get("Content-Type")
		if dropped[key] {
			return false
		}
		dropped[key] = true
		return true
	}}
	lossy, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	cycle := func() engine.Result {
		res, err := e.engine(func(o *engine.Options) { o.Client = lossy }).RunOnce(e.Ctx)
		require.NoError(t, err, "a patch that was applied is a write done, answer or not")
		return res
	}

	res := cycle()
	assert.Equal(t, len(names), res.Applied[plan.Enter], "both entries count as written")
	for _, s := range names {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
		e.Reboot(s, newKernel)
	}
	e.cycleUntilReleased(names, func() { cycle() })
	for _, s := range names {
		e.RequireReleased(s, state.ReasonWarm)
		mu.Lock()
		for _, pt := range []types.PatchType{types.MergePatchType, types.JSONPatchType} {
			require.True(t, dropped[e.NodeName(s)+" "+string(pt)], "the answer to a %s of %s was lost", pt, s)
		}
		mu.Unlock()
		events, err := cluster.NodeEvents(e.Ctx, e.NodeName(s))
		require.NoError(t, err)
		reasons := map[string]int{}
		for _, ev := range events {
			reasons[ev.Reason] += max(1, int(ev.Count))
		}
		assert.Equal(t, 1, reasons["PrewarmTainted"], "%s: one Tainted Event, for the entry whose answer was lost", s)
		assert.Equal(t, 1, reasons["PrewarmReleased"], "%s: one Released Event, for the release whose answer was lost", s)
	}
}

// otherWriter is another controller: read-modify-update with retry on conflict.
func otherWriter(e *env, client kubernetes.Interface, node string, round int) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := client.CoreV1().Nodes().Get(e.Ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		key := fmt.Sprintf("writer.example.com/r%d", round)
		n.Labels[key] = "yes"
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule})
		_, err = client.CoreV1().Nodes().Update(e.Ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// 9. A cycle that dies after part of its patches: the next cycle converges.
func TestCycleDiesHalfway(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	// Taints of others: one with the key of ours and another effect, and one of a team.
	theirs := []corev1.Taint{
		{Key: e.Config.Taint.Key, Value: "manual", Effect: corev1.TaintEffectPreferNoSchedule},
		{Key: "team.example.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
	}
	names := make([]string, 6)
	for i := range names {
		names[i] = fmt.Sprintf("h%d", i)
		e.PoolNode(names[i], framework.WithTaints(theirs...))
		e.Maintenance(names[i])
	}
	counter := &requestCounter{failAfter: 3}
	broken, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	_, err = e.engine(func(o *engine.Options) { o.Client = broken }).RunOnce(e.Ctx)
	require.Error(t, err, "the cycle reports that it could not finish")

	tainted := 0
	for _, s := range names {
		if state.HasTaint(e.Node(s), "os-upgrade", corev1.TaintEffectNoSchedule) {
			tainted++
		}
	}
	// Three patches went out before the failure; one may have met a conflict (kwok updating a
	// node it just created) and been retried as the failing fourth: the successful ones tainted.
	require.Equal(t, counter.answered("PATCH", "", 200), tainted, "every patch that went through tainted its node: %v", counter.all())
	require.True(t, tainted >= 1 && tainted < len(names), "the cycle died halfway: %d of %d tainted; %v", tainted, len(names), counter.all())

	e.cycle()
	for _, s := range names {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
		e.RequireTaints(s, append(theirs, e.OurTaint())...)
	}
	e.cycle() // idempotent: nothing left to do
	for _, s := range names {
		require.Len(t, e.Events(s, "PrewarmTainted"), 1, "one Tainted event on %s", s)
		e.RequireTaints(s, append(theirs, e.OurTaint())...)
	}
}

// 14. API cost: a cycle over a 200-node pool is a constant number of list calls plus one patch
// per node that changes state (with the default events: no transition Events).
func TestAPICost(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Events = config.Default().Events })
	e.Warmer()
	const pool, inMaintenance = 200, 20
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range pool {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			short := fmt.Sprintf("p%03d", i)
			e.PoolNode(short)
			if i < inMaintenance {
				e.Maintenance(short)
			}
		}()
	}
	wg.Wait()

	counter := &requestCounter{}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	run := func() engine.Result {
		// Node lists are streamed: one request per list, whatever the page size (3 here).
		res, err := e.engine(func(o *engine.Options) { o.Client = counted }).RunOnce(e.Ctx)
		require.NoError(t, err)
		return res
	}

	res := run()
	require.Equal(t, inMaintenance, res.Applied[plan.Enter])
	t.Logf("first cycle requests: %v", summarizeRequests(counter.all()))
	assert.Equal(t, 2, counter.count("GET", "/api/v1/nodes"), "two node lists")
	assert.Equal(t, 2, counter.answered("GET", "/api/v1/nodes", 200), "both streamed: %v", counter.all())
	// One read, plus one every 2 s of entries being written (the uninstall mark; none in a short
	// cycle), counted from the start of the observation, which read the DaemonSet.
	dsReads := counter.count("GET", "/daemonsets/warmer")
	assert.GreaterOrEqual(t, dsReads, 1)
	assert.LessOrEqual(t, dsReads, 1+int((res.Took.Observe+res.Took.Write)/(2*time.Second)))
	assert.Equal(t, 1, counter.count("GET", "/controllerrevisions"))
	assert.Equal(t, 1, counter.count("GET", "/pods"))
	assert.Equal(t, inMaintenance, counter.count("PATCH", "/api/v1/nodes/"), "one patch per node that changes state")
	assert.Equal(t, 0, counter.count("POST", ""), "no Event for a routine transition by default")
	assert.Equal(t, 0, counter.count("GET", "/api/v1/nodes/"), "no per-node reads")

	counter.reset()
	run()
	assert.Equal(t, 0, counter.count("PATCH", ""), "nothing changed: no writes")
	assert.Equal(t, 2, counter.count("GET", "/api/v1/nodes"))

	// Read in pages (an API server that does not stream lists), the snapshot is the same.
	observe := func(paged bool) []string {
		counter.reset()
		obs, err := e.engine(func(o *engine.Options) { o.Client, o.PagedNodeLists = counted, paged }).Observe(e.Ctx)
		require.NoError(t, err)
		var out []string
		for _, n := range obs.Snapshot.Nodes {
			// This test's pool (the status label list has other tests' nodes too); names only,
			// as kwok may update a node between the two reads.
			if e.Config.PoolSelector().Matches(labels.Set(n.Labels)) {
				out = append(out, n.Name)
			}
		}
		return out
	}
	streamed := observe(false)
	paged := observe(true)
	assert.GreaterOrEqual(t, counter.count("GET", "/api/v1/nodes"), (pool+testPageSize-1)/testPageSize+(inMaintenance+testPageSize-1)/testPageSize,
		"pages of %d", testPageSize)
	assert.Len(t, streamed, pool)
	assert.Equal(t, streamed, paged)
}

func summarizeRequests(reqs []string) map[string]int {
	out := map[string]int{}
	for _, r := range reqs {
		parts := strings.SplitN(r, " ", 2)
		path := parts[1]
		if i := strings.Index(path, "/nodes/"); i >= 0 {
			path = path[:i] + "/nodes/*"
		}
		out[parts[0]+" "+path]++
	}
	return out
}

// The cordon source (kured, system-upgrade-controller): cordon, reboot, uncordon; a later cordon
// is a new maintenance.
func TestCordonSource(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Maintenance.NodeMaintenance.Enabled = false
		c.Maintenance.Cordoned.Enabled = true
	})
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()

	_, err := cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.RequireUntouched("b")
	assert.Equal(t, plan.SourceCordoned, e.Node("a").Annotations[state.MaintenanceID])

	// kured reboots (same kernel, new boot ID) and uncordons before the next cycle runs.
	e.Reboot("a", "5.15.0-100")
	_, err = cluster.Uncordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	e.waitWarmerReady("a")
	e.cycle()
	n := e.RequireReleased("a", state.ReasonWarm)
	assert.Contains(t, n.Annotations, state.MaintenanceEnded, "the cordon was over at release")
	assert.False(t, n.Spec.Unschedulable)

	_, err = cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
}

// The label source, and an operator who removes the taint by hand: released (external), not
// tainted again while the same label stays, tainted again once the label comes back.
func TestNodeLabelSourceAndExternalRelease(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Maintenance.NodeMaintenance.Enabled = false
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	e.PoolNode("a")
	e.Warmer()
	label := func(value *string) {
		t.Helper()
		v := "null"
		if value != nil {
			v = `"` + *value + `"`
		}
		_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("a"), types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"upgrade.example.com/pending":`+v+`}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	yes := "true"

	label(&yes)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")

	// An operator opens the node by hand.
	_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("a"), types.JSONPatchType,
		[]byte(`[{"op":"test","path":"/spec/taints/0/key","value":"os-upgrade"},{"op":"remove","path":"/spec/taints/0"}]`), metav1.PatchOptions{})
	require.NoError(t, err)
	e.cycle()
	e.RequireReleased("a", state.ReasonExternal)
	require.Len(t, e.Events("a", "PrewarmReleased"), 1)
	e.cycle()
	e.RequireReleased("a", state.ReasonExternal) // operators win: not tainted again

	label(nil)
	e.cycle()
	assert.Contains(t, e.Node("a").Annotations, state.MaintenanceEnded)
	label(&yes)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
}

// Two presence sources name the node at once (a pipeline labels the node and cordons it): after
// the release, the label removed and put back while the cordon lasts is a new maintenance.
func TestPresenceSourceLeftWhileAnotherLasts(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Maintenance.NodeMaintenance.Enabled = false
		c.Maintenance.Cordoned.Enabled = true
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	e.PoolNode("a")
	e.Warmer()
	label := func(patch string) {
		t.Helper()
		_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("a"), types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"upgrade.example.com/pending":`+patch+`}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}

	label(`"true"`)
	_, err := cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	assert.Equal(t, "cordoned,nodeLabel", e.Node("a").Annotations[state.MaintenanceID])
	e.Reboot("a", "5.15.0-100")
	e.cycle()
	e.requirePhase("a", state.PhaseWarming, "warming")
	e.waitWarmerReady("a")
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm) // both last: not tainted again

	label("null")
	e.cycle()
	n := e.RequireReleased("a", state.ReasonWarm)
	assert.Equal(t, plan.SourceCordoned, n.Annotations[state.MaintenanceID], "the label's maintenance is over")
	assert.NotContains(t, n.Annotations, state.MaintenanceEnded, "the cordon lasts")

	label(`"true"`)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	assert.Equal(t, "cordoned,nodeLabel", e.Node("a").Annotations[state.MaintenanceID])
}

// medik8s cordons the node of its NodeMaintenance, and cordons it again if someone uncordons it:
// with the cordoned source on too, a cordon that comes and goes while the NodeMaintenance the
// node was released for lasts is part of it, and the node is not tainted again.
func TestCordonAgainUnderTheSameNodeMaintenance(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Maintenance.Cordoned.Enabled = true })
	e.PoolNode("a")
	e.Warmer()
	e.Maintenance("a")
	_, err := cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.Reboot("a", "5.15.0-100")
	e.cycle()
	e.waitWarmerReady("a")
	e.cycle()
	recorded := e.RequireReleased("a", state.ReasonWarm).Annotations[state.MaintenanceID]
	assert.Contains(t, recorded, plan.SourceCordoned)

	_, err = cluster.Uncordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	assert.Equal(t, recorded, e.RequireReleased("a", state.ReasonWarm).Annotations[state.MaintenanceID], "kept while the NodeMaintenance lasts")
	_, err = cluster.Cordon(e.Ctx, e.NodeName("a"))
	require.NoError(t, err)
	e.cycle()
	e.RequireReleased("a", state.ReasonWarm)
}

// A release is guarded by our own keys, not by the node's resourceVersion: a write to anything
// else between the read and the release (another controller's label and taint) does not send it
// back for a re-read; a write to one of ours does, and the release is re-planned from the fresh
// node.
func TestReleaseGuardedByOurKeysOnly(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	for _, s := range []string{"a", "b"} {
		e.PoolNode(s)
		e.Maintenance(s)
	}
	e.cycle()
	for _, s := range []string{"a", "b"} {
		e.Reboot(s, newKernel)
		e.waitWarmerReady(s)
	}

	counter := &requestCounter{}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	en := e.engine(func(o *engine.Options) { o.Client = counted })
	stale, err := en.Observe(e.Ctx)
	require.NoError(t, err)
	p := en.Planner().Compute(stale.Snapshot)
	require.Len(t, p.Actions, 2)
	for _, a := range p.Actions {
		require.Equal(t, plan.Release, a.Type, a.Node)
	}

	// Another controller writes both nodes; then someone rewrites one of our annotations on b.
	for _, s := range []string{"a", "b"} {
		require.NoError(t, otherWriter(e, cluster.Client, e.NodeName(s), 0))
	}
	b := e.Node("b")
	b.Annotations[state.TaintedAt] = "2026-01-01T00:00:00Z"
	_, err = cluster.Client.CoreV1().Nodes().Update(e.Ctx, b, metav1.UpdateOptions{})
	require.NoError(t, err)

	counter.reset()
	res, err := en.Apply(e.Ctx, stale, p)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Applied[plan.Release])
	assert.Equal(t, 3, counter.count("PATCH", "/api/v1/nodes/"), "a: one patch; b: refused once, then written")
	assert.Equal(t, 1, counter.count("GET", "/api/v1/nodes/"), "only b, whose own keys changed, is re-read")
	for _, s := range []string{"a", "b"} {
		n := e.RequireReleased(s, state.ReasonWarm)
		assert.Equal(t, "yes", n.Labels["writer.example.com/r0"], "the other writer's label on %s is intact", s)
		assert.Contains(t, n.Spec.Taints, corev1.Taint{Key: "writer.example.com/r0", Value: "yes", Effect: corev1.TaintEffectPreferNoSchedule})
	}
}

// `cleanup --uninstall` marks the warmer DaemonSet while a cycle is still entering nodes (here
// paced at 2 requests a second): the cycle re-reads the DaemonSet and enters no more, so no
// entry lands long after the mark, when the hook's last sweep may already have run.
func TestUninstallMarkStopsARunningCycle(t *testing.T) {
	e := newEnv(t)
	ds := e.Warmer()
	const n = 12
	names := e.poolInMaintenance("u%02d", n)
	tainted := func() int {
		count := 0
		for _, s := range names {
			if state.HasTaint(e.Node(s), "os-upgrade", corev1.TaintEffectNoSchedule) {
				count++
			}
		}
		return count
	}
	rc := rest.CopyConfig(cluster.RESTConfig)
	rc.QPS, rc.Burst = 2, 1
	slow, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	type outcome struct {
		res engine.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := e.engine(func(o *engine.Options) { o.Client, o.Workers = slow, 1 }).RunOnce(e.Ctx)
		done <- outcome{res, err}
	}()
	e.eventually("the cycle has entered a first node", func() bool { return tainted() > 0 })
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, state.Uninstalling, state.FormatTime(time.Now()))
	_, err = e.Cluster.Client.AppsV1().DaemonSets(ds.Namespace).Patch(e.Ctx, ds.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	require.NoError(t, err)

	out := <-done
	require.NoError(t, out.err)
	require.Len(t, out.res.Plan.Actions, n, "planned before the mark: every node in maintenance")
	entered := out.res.Applied[plan.Enter]
	t.Logf("entered %d of %d nodes before the cycle read the mark", entered, n)
	assert.Less(t, entered, n, "the entries stopped once the mark was read")
	assert.Equal(t, entered, tainted(), "what the cycle reports is what the nodes show")
	assert.Zero(t, e.cycle().Applied[plan.Enter], "while marked, no cycle enters a node")
}

// An uninstall releases the installation's nodes, and leaves a node with a phase and no owner
// annotation (a hand edit) tainted: nobody's, which no installation may release. Its sweeps
// say so once, in a WARN line naming the node, not once per sweep.
func TestUninstallNamesNobodysNodeOnce(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	for _, s := range []string{"mine", "nobody"} {
		e.PoolNode(s)
		e.Maintenance(s)
	}
	e.cycle()
	e.requireTainted("mine")
	e.requireTainted("nobody")
	_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("nobody"), types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+state.Owner+`":null}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	// Nobody's node carries the status label the tests share: every later engine of the package
	// would note it. Deleted at the end.
	t.Cleanup(func() {
		err := e.client.CoreV1().Nodes().Delete(context.Background(), e.NodeName("nobody"), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting nobody's node: %v", err)
		}
	})

	var logs testutil.LogBuffer
	en := e.engine(func(o *engine.Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	res, err := en.Uninstall(e.Ctx, 3*time.Second) // a sweep every 2 s until 3 s after the mark
	require.NoError(t, err)
	assert.Equal(t, 1, res.Applied[plan.Release])
	e.RequireReleased("mine", state.ReasonCleanup)
	e.requireTainted("nobody")
	var warned []string
	for _, l := range logs.Lines() {
		if strings.Contains(l, "level=WARN") && strings.Contains(l, e.NodeName("nobody")) {
			warned = append(warned, l)
		}
	}
	require.Len(t, warned, 1, "one WARN line about the nobody's node over every sweep:\n%s", logs.String())
	assert.Contains(t, warned[0], "no installation manages the node or removes its taint")
}

// osImageWhen is an upgrade.when rule that needs both a new kernel and the pipeline's image
// label; `index` reads the label as "" while it is absent (a `.Labels.x` lookup would fail under
// missingkey=error).
const osImageWhen = `{{ and (ne .Kernel .Baseline.Kernel) (eq (index .Labels "example.com/os-image") "v2") }}`

// An upgrade.when template decides in place of the default rule, in `run --once` cycles of the
// binary: a reboot onto a new kernel, which the default rule would take for the upgrade, leaves
// the node tainted (and its warmer unscheduled) until the image label the template also asks for
// is set; the label alone does not do either. Then the node warms and is released.
func TestUpgradeWhen(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Upgrade.When = osImageWhen })
	for _, s := range []string{"a", "b"} {
		e.PoolNode(s)
		e.Maintenance(s)
	}
	e.Warmer()
	setImageLabel := func(short string) {
		t.Helper()
		_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName(short), types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"example.com/os-image":"v2"}}}`), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	// The template decided "false": no failure was recorded on the node.
	requireNoError := func(short string) {
		t.Helper()
		assert.NotContains(t, e.Node(short).Annotations, state.LastError, "the template rendered on %s without error", short)
	}

	e.runOnce()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.requirePhase("b", state.PhaseTainted, "upgrading")

	// a: a new kernel and boot ID, no label yet. b: the label, no reboot.
	e.Reboot("a", newKernel)
	setImageLabel("b")
	e.runOnce()
	e.runOnce()
	for _, s := range []string{"a", "b"} {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
		requireNoError(s)
		assert.Empty(t, e.Events(s, "PrewarmUpgradeSeen"), "no upgrade seen on %s", s)
	}
	e.consistentlyNoWarmer("a", time.Second)

	// The label completes a's upgrade.
	setImageLabel("a")
	e.runOnce()
	e.requirePhase("a", state.PhaseWarming, "warming")
	assert.Contains(t, e.Node("a").Annotations, state.UpgradedAt)
	require.Len(t, e.Events("a", "PrewarmUpgradeSeen"), 1)
	e.requirePhase("b", state.PhaseTainted, "upgrading")
	e.waitWarmerReady("a")
	e.runOnce()
	e.RequireReleased("a", state.ReasonWarm)
	e.requirePhase("b", state.PhaseTainted, "upgrading")
	requireNoError("b")
}
