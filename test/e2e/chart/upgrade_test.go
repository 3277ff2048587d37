package chart_test

// `helm upgrade` of a live installation while pool nodes are mid-rollout (tainted or
// warming). Each test installs the chart, brings nodes into the lifecycle with the orchestrator
// binary run under the chart's ConfigMap and ServiceAccount token, upgrades the release with the
// Helm SDK, and checks that the orchestrator run with the *new* rendering finishes the rollout the
// way a user would expect.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// upgradeValues are the values every installation here starts from (newLiveRelease adds the
// pool): target kernels without a kernel label (so the warmer starts only once a cycle marks the
// node warming, which keeps "warming, pod not yet proven" a state the tests can hold), a
// suspended CronJob (the tests run the cycles) and transition Events.
func upgradeValues() map[string]any {
	return map[string]any{
		"images":       []any{"registry.example.com/notebook/base:2026.11"},
		"upgrade":      map[string]any{"kernelVersions": []any{newKernel}},
		"events":       map[string]any{"transitions": true},
		"orchestrator": map[string]any{"cronJob": map[string]any{"suspend": true}},
	}
}

// currentRevision is the warmer DaemonSet and the hash of its current revision, as the planner
// computes it ("" while the DaemonSet controller has not observed its latest spec).
func (r *liveRelease) currentRevision(dsName string) (*appsv1.DaemonSet, string) {
	r.t.Helper()
	ds, err := cluster.Client.AppsV1().DaemonSets(r.ns).Get(r.ctx, dsName, metav1.GetOptions{})
	require.NoError(r.t, err)
	list, err := cluster.Client.AppsV1().ControllerRevisions(r.ns).List(r.ctx, metav1.ListOptions{})
	require.NoError(r.t, err)
	revs := make([]*appsv1.ControllerRevision, len(list.Items))
	for i := range list.Items {
		revs[i] = &list.Items[i]
	}
	return ds, plan.CurrentRevision(ds, revs)
}

// currentWarmerReady reports whether node has a Ready warmer pod of the DaemonSet's current
// revision, and returns it.
func (r *liveRelease) currentWarmerReady(dsName, node string) (*corev1.Pod, bool) {
	r.t.Helper()
	ds, rev := r.currentRevision(dsName)
	if rev == "" {
		return nil, false
	}
	for _, p := range r.warmerPods(ds, node) {
		if p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == rev && state.PodReady(&p) {
			return &p, true
		}
	}
	return nil, false
}

// holdPod keeps pod from being deleted, by anyone, until the returned function is called: a
// ValidatingAdmissionPolicy refuses its deletion. The DaemonSet controller rolling the node then
// cannot remove it. The returned function lifts the policy and deletes the pod.
func (r *liveRelease) holdPod(pod *corev1.Pod) (release func()) {
	r.t.Helper()
	lift := framework.DenyPolicy(r.ctx, r.t, cluster.Client, "e2e-hold-"+string(pod.UID), admissionregistrationv1.Delete, "pods",
		fmt.Sprintf(`oldObject.metadata.uid != %q`, pod.UID), "held by the test")
	// The API server applies a policy once its informers have it: wait until a server-side dry
	// run of the deletion is refused.
	pods := cluster.Client.CoreV1().Pods(pod.Namespace)
	dryRun := metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}
	require.NoError(r.t, framework.Eventually(r.ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		err := pods.Delete(ctx, pod.Name, dryRun)
		return err != nil && strings.Contains(err.Error(), "held by the test"), nil
	}), "the policy holding pod %s in force", pod.Name)
	return func() {
		r.t.Helper()
		lift()
		require.NoError(r.t, framework.Eventually(r.ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
			err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{})
			return err == nil || apierrors.IsNotFound(err), nil
		}), "pod %s deleted once the policy is lifted", pod.Name)
	}
}

// readyTimes records when each pod on a node turned Ready.
type readyTimes struct {
	mu    sync.Mutex
	times map[string]time.Time
}

// since returns when the pod named name turned Ready (its PodReady condition's
// lastTransitionTime, the first time it was seen True).
func (rt *readyTimes) since(name string) (time.Time, bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	t, ok := rt.times[name]
	return t, ok
}

// recordReady watches the pods on node, from now until the test ends, and records when each
// turned Ready: a pod that is deleted soon after (a released node's warmer pod) is still known.
func (r *liveRelease) recordReady(node string) *readyTimes {
	r.t.Helper()
	w, err := cluster.Client.CoreV1().Pods(r.ns).Watch(r.ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	require.NoError(r.t, err)
	r.t.Cleanup(w.Stop)
	rt := &readyTimes{times: map[string]time.Time{}}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type != corev1.PodReady || c.Status != corev1.ConditionTrue {
					continue
				}
				rt.mu.Lock()
				if _, seen := rt.times[p.Name]; !seen {
					rt.times[p.Name] = c.LastTransitionTime.Time
				}
				rt.mu.Unlock()
			}
		}
	}()
	return rt
}

func taintKeysOf(n *corev1.Node) []string {
	var keys []string
	for _, t := range n.Spec.Taints {
		keys = append(keys, t.Key+":"+string(t.Effect))
	}
	return keys
}

// midRollout brings two pool nodes of r into the rollout with the orchestrator run as the
// CronJob runs it, under the chart's ConfigMap and ServiceAccount: <prefix>-warming is upgraded
// and warming, <prefix>-tainted tainted and waiting for its upgrade. It returns their names, the
// configuration read, and the kubeconfig of the ServiceAccount.
func (r *liveRelease) midRollout(prefix string) (warming, tainted string, cfg *config.Config, kubeconfig string) {
	r.t.Helper()
	warming, tainted = r.nodeName(prefix+"-warming"), r.nodeName(prefix+"-tainted")
	for _, n := range []string{warming, tainted} {
		r.poolNode(n)
		r.maintenance(n)
	}
	cfg, cfgPath := r.config()
	kubeconfig = r.kubeconfig()
	r.cycle(cfgPath, kubeconfig)
	r.reboot(warming)
	r.cycle(cfgPath, kubeconfig)
	require.Equal(r.t, state.PhaseWarming, state.PhaseOf(r.node(warming)), "upgrade seen before the helm upgrade")
	require.Equal(r.t, state.PhaseTainted, state.PhaseOf(r.node(tainted)))
	return warming, tainted, cfg, kubeconfig
}

// keyChangeMidRollout: a `helm upgrade` that changes what the installation puts on
// nodes (the taint, the status label key) while one node is warming and one is tainted.
// After it, the orchestrator run with the new ConfigMap must swap the old taint/label for the new
// one on both (without releasing them), the new warmer must run there, and both must be released
// warm; no node may keep the old taint or label.
func keyChangeMidRollout(t *testing.T, ns, rel, poolVal, prefix string, change func(vals map[string]any)) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vals := upgradeValues()
	r := newLiveRelease(t, ctx, ns, rel, poolVal, vals)
	idle := r.nodeName(prefix + "-idle")
	r.poolNode(idle)
	warming, tainted, oldCfg, kc := r.midRollout(prefix)

	// helm upgrade mid-rollout.
	change(vals)
	r.upgrade(vals)
	newCfg, newPath := r.config()
	require.True(t, oldCfg.Taint != newCfg.Taint || oldCfg.StatusLabel.Key != newCfg.StatusLabel.Key, "the upgrade changed the taint or the status label key")
	ds, err := cluster.Client.AppsV1().DaemonSets(r.ns).Get(ctx, newCfg.Warmer.DaemonSetName, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, newCfg.Taint.Key, ds.Spec.Template.Spec.Tolerations[0].Key, "the new warmer tolerates the new taint")

	// First cycle with the new configuration: swap, not release.
	out := r.cycle(newPath, kc)
	for _, name := range []string{warming, tainted} {
		n := r.node(name)
		assert.True(t, state.HasTaint(n, newCfg.Taint.Key, newCfg.Taint.Effect), "%s carries the new taint: %v\n%s", name, taintKeysOf(n), out)
		if oldCfg.Taint.Key != newCfg.Taint.Key || oldCfg.Taint.Effect != newCfg.Taint.Effect {
			assert.False(t, state.HasTaint(n, oldCfg.Taint.Key, oldCfg.Taint.Effect), "%s lost the old taint: %v", name, taintKeysOf(n))
		}
		if oldCfg.StatusLabel.Key != newCfg.StatusLabel.Key {
			assert.NotContains(t, n.Labels, oldCfg.StatusLabel.Key, "%s lost the old status label", name)
		}
		assert.NotEqual(t, "", state.PhaseOf(n), "%s is still managed (not released by the swap)", name)
	}
	assert.Equal(t, newCfg.StatusLabel.WarmingValue, r.node(warming).Labels[newCfg.StatusLabel.Key])
	assert.Equal(t, newCfg.StatusLabel.Value, r.node(tainted).Labels[newCfg.StatusLabel.Key])

	// The new warmer runs on the warming node and it is released warm.
	releasedWarm := func(name string) func(context.Context) (bool, error) {
		return func(context.Context) (bool, error) {
			if _, ok := r.currentWarmerReady(newCfg.Warmer.DaemonSetName, name); ok {
				r.cycle(newPath, kc)
			}
			n := r.node(name)
			return state.PhaseOf(n) == "" && n.Annotations[state.ReleaseReason] == state.ReasonWarm, nil
		}
	}
	require.NoError(t, framework.Eventually(ctx, 45*time.Second, releasedWarm(warming)),
		"the warming node is released warm after the swap: phase %q, taints %v, labels %v",
		state.PhaseOf(r.node(warming)), taintKeysOf(r.node(warming)), r.node(warming).Labels)

	// The tainted node upgrades after the helm upgrade and is released warm too.
	r.reboot(tainted)
	r.cycle(newPath, kc)
	require.NoError(t, framework.Eventually(ctx, 45*time.Second, releasedWarm(tainted)),
		"the tainted node is released warm after its upgrade: phase %q, taints %v",
		state.PhaseOf(r.node(tainted)), taintKeysOf(r.node(tainted)))

	for _, name := range []string{warming, tainted, idle} {
		n := r.node(name)
		for _, tk := range []config.Taint{oldCfg.Taint, newCfg.Taint} {
			assert.False(t, state.HasTaint(n, tk.Key, tk.Effect), "%s keeps no taint of ours: %v", name, taintKeysOf(n))
		}
		assert.NotContains(t, n.Labels, oldCfg.StatusLabel.Key, name)
		assert.NotContains(t, n.Labels, newCfg.StatusLabel.Key, name)
	}
	if oldCfg.Taint != newCfg.Taint {
		assert.Contains(t, eventReasons(t, ctx, warming), "PrewarmTaintReplaced")
	}
	if oldCfg.StatusLabel.Key != newCfg.StatusLabel.Key {
		assert.Contains(t, eventReasons(t, ctx, warming), "PrewarmStatusLabelReplaced")
	}
	r.uninstall()
}

// taint.key changed by helm upgrade mid-rollout.
func TestHelmUpgradeTaintKeyChangeMidRollout(t *testing.T) {
	keyChangeMidRollout(t, "upgrade-taint", "upg-t", "upgrade-taint-pool", "upg-t", func(vals map[string]any) {
		vals["taint"] = map[string]any{"key": "upgrade.example.com/prewarm"}
	})
}

// statusLabel.key changed by helm upgrade mid-rollout.
func TestHelmUpgradeStatusLabelKeyChangeMidRollout(t *testing.T) {
	keyChangeMidRollout(t, "upgrade-label", "upg-l", "upgrade-label-pool", "upg-l", func(vals map[string]any) {
		vals["statusLabel"] = map[string]any{"key": "upgrade.example.com/prewarm-status"}
	})
}

// Both at once, the taint's value and effect too.
func TestHelmUpgradeTaintAndStatusLabelKeyChangeMidRollout(t *testing.T) {
	keyChangeMidRollout(t, "upgrade-both", "upg-b", "upgrade-both-pool", "upg-b", func(vals map[string]any) {
		vals["taint"] = map[string]any{"key": "upgrade.example.com/prewarm-both", "value": "yes", "effect": "NoExecute"}
		vals["statusLabel"] = map[string]any{"key": "upgrade.example.com/prewarm-both-status"}
	})
}

// orchestrator.mode cronjob -> deployment by helm upgrade while a node is warming and one
// is tainted. The Deployment's orchestrator (its args, the chart's ServiceAccount token) takes the
// Lease under the upgraded RBAC and releases both.
func TestHelmUpgradeCronJobToDeploymentMidRollout(t *testing.T) {
	const ns, rel, poolVal = "upgrade-mode", "upg-m", "upgrade-mode-pool"
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vals := upgradeValues()
	r := newLiveRelease(t, ctx, ns, rel, poolVal, vals)
	warming, tainted, _, _ := r.midRollout("upg-m")

	// helm upgrade to deployment mode.
	vals["orchestrator"] = map[string]any{"mode": "deployment"}
	r.upgrade(vals)

	cjs, err := cluster.Client.BatchV1().CronJobs(r.ns).List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, cjs.Items, "the CronJob is gone after the switch")

	// The Role grants the Lease now.
	role, err := cluster.Client.RbacV1().Roles(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
	require.NoError(t, err)
	var leaseVerbs []string
	for _, rule := range role.Rules {
		for _, res := range rule.Resources {
			if res == "leases" {
				leaseVerbs = append(leaseVerbs, rule.Verbs...)
			}
		}
	}
	assert.Subset(t, leaseVerbs, []string{"get", "update", "create"}, "the upgraded Role grants the Lease")

	// The Deployment's orchestrator takes the Lease under the upgraded RBAC.
	o := r.startDeployment()
	released := func(name string) func(context.Context) (bool, error) {
		return func(context.Context) (bool, error) {
			n := r.node(name)
			return state.PhaseOf(n) == "" && n.Annotations[state.ReleaseReason] == state.ReasonWarm, nil
		}
	}
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, released(warming)),
		"the node warming at the switch is released warm by the Deployment:\n%s", o.logs)
	assert.Equal(t, state.PhaseTainted, state.PhaseOf(r.node(tainted)), "the tainted node waits for its upgrade")
	r.reboot(tainted)
	require.NoError(t, framework.Eventually(ctx, 45*time.Second, released(tainted)),
		"the node tainted at the switch is released warm after its upgrade:\n%s", o.logs)
	for _, name := range []string{warming, tainted} {
		assert.False(t, state.HasTaint(r.node(name), o.cfg.Taint.Key, o.cfg.Taint.Effect), name)
	}
	o.stop()
	r.uninstall()
}

// images changed by helm upgrade while a node is warming (its warmer pod of the old image
// list Ready). The DaemonSet rolls; the node must not be released on a pod of the old list, and
// is released once the pod of the new list is Ready. The window where the DaemonSet's current
// revision is already the new one while the old list's pod is still live and Ready is held open
// (holdPod: the DaemonSet controller cannot delete that pod, as OnDelete keeps it in orchestrator
// TestOldRevisionDoesNotCount; a helm upgrade would put back an updateStrategy changed by hand)
// for a few cycles. The new image then pulls slowly (kwok stage: Ready 12 s after kwok sees the
// pod), and the cycles go on through the pull.
func TestHelmUpgradeImagesChangeMidRollout(t *testing.T) {
	const ns, rel, poolVal = "upgrade-images", "upg-i", "upgrade-images-pool"
	const newImage = "registry.example.com/notebook/base:2026.12-slow-pull-12s"
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	vals := upgradeValues()
	r := newLiveRelease(t, ctx, ns, rel, poolVal, vals)
	warming, tainted, cfg, kc := r.midRollout("upg-i")
	// The old image list's pod becomes Ready; the CronJob's next cycle has not run yet.
	var oldPod *corev1.Pod
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, func(context.Context) (bool, error) {
		p, ok := r.currentWarmerReady(cfg.Warmer.DaemonSetName, warming)
		oldPod = p
		return ok, nil
	}), "the warmer pod of the first image list is Ready")
	ready := r.recordReady(warming)
	release := r.holdPod(oldPod)

	// helm upgrade with another image list.
	vals["images"] = []any{newImage}
	r.upgrade(vals)
	cfg2, path2 := r.config()
	require.Equal(t, cfg.Warmer.DaemonSetName, cfg2.Warmer.DaemonSetName)

	// The window: the DaemonSet's current revision is the new one, the old list's pod still live
	// and Ready.
	oldHash := oldPod.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]
	staleWindow := func() bool {
		ds, rev := r.currentRevision(cfg2.Warmer.DaemonSetName)
		if rev == "" || rev == oldHash {
			return false
		}
		for _, p := range r.warmerPods(ds, warming) {
			if p.UID == oldPod.UID && state.PodReady(&p) {
				return true
			}
		}
		return false
	}
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, func(context.Context) (bool, error) {
		return staleWindow(), nil
	}), "the DaemonSet controller moves to the new revision, the old list's pod held")
	// Cycles in the window (open before and after each): no release.
	for cycle := 1; cycle <= 3; cycle++ {
		out := r.cycle(path2, kc)
		n := r.node(warming)
		require.Equal(t, state.PhaseWarming, state.PhaseOf(n),
			"the node must not be released on the old image list's pod %s (cycle %d): release-reason %q\n%s",
			oldPod.Name, cycle, n.Annotations[state.ReleaseReason], out)
		require.True(t, state.HasTaint(n, cfg2.Taint.Key, cfg2.Taint.Effect))
		require.True(t, staleWindow(), "the window is still open after cycle %d", cycle)
	}

	// Let the DaemonSet controller roll the node: the old pod goes, a pod of the new revision and
	// the new list comes.
	release()
	ds, rev := r.currentRevision(cfg2.Warmer.DaemonSetName)
	require.NotEmpty(t, rev, "the DaemonSet controller observed the new spec")
	var pods []corev1.Pod
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, func(context.Context) (bool, error) {
		pods = r.warmerPods(ds, warming)
		for _, p := range pods {
			if p.UID == oldPod.UID {
				return false, nil
			}
		}
		return len(pods) > 0, nil
	}), "a pod of the new revision replaces the old list's pod")
	newNames := map[string]bool{}
	for _, p := range pods {
		assert.Equal(t, rev, p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey], "pod %s is of the new revision", p.Name)
		assert.Equal(t, newImage, p.Spec.Containers[0].Image)
		newNames[p.Name] = true
	}

	// Released once the new pod is Ready, not before. Once released, the node loses the status
	// label and the DaemonSet removes its pod: the pod that proved it warm is named by the
	// PrewarmReleased Event, and when it turned Ready is known from the watch (recordReady).
	require.NoError(t, framework.Eventually(ctx, 45*time.Second, func(context.Context) (bool, error) {
		r.cycle(path2, kc)
		return state.PhaseOf(r.node(warming)) == "", nil
	}), "the node is released once the new image list's pod is Ready")
	n := r.node(warming)
	assert.Equal(t, state.ReasonWarm, n.Annotations[state.ReleaseReason])
	events, err := cluster.NodeEvents(ctx, warming)
	require.NoError(t, err)
	var releasedOn string
	for _, ev := range events {
		if ev.Reason == "PrewarmReleased" {
			releasedOn = ev.Message
		}
	}
	assert.NotContains(t, releasedOn, oldPod.Name, "not released on the old image list's pod")
	var warmPod string
	for name := range newNames {
		if strings.Contains(releasedOn, name) {
			warmPod = name
		}
	}
	require.NotEmpty(t, warmPod, "released on a pod of the new image list %v: %q", newNames, releasedOn)
	releasedAt, ok := state.Time(n, state.ReleasedAt)
	require.True(t, ok)
	var readyAt time.Time
	require.NoError(t, framework.Eventually(ctx, 5*time.Second, func(context.Context) (bool, error) {
		readyAt, ok = ready.since(warmPod)
		return ok, nil
	}), "the pod %s that released the node was Ready", warmPod)
	assert.False(t, releasedAt.Before(readyAt.Truncate(time.Second)), "released (%s) no earlier than the new pod was Ready (%s)", releasedAt, readyAt)
	t.Logf("released at %s on pod %s, Ready at %s", releasedAt.Format(time.RFC3339), warmPod, readyAt.Format(time.RFC3339))

	// A node upgraded after the image change is released on the new list as well.
	r.reboot(tainted)
	r.cycle(path2, kc)
	require.NoError(t, framework.Eventually(ctx, 45*time.Second, func(context.Context) (bool, error) {
		if _, ok := r.currentWarmerReady(cfg2.Warmer.DaemonSetName, tainted); ok {
			r.cycle(path2, kc)
		}
		n := r.node(tainted)
		return state.PhaseOf(n) == "" && n.Annotations[state.ReleaseReason] == state.ReasonWarm, nil
	}), "the node upgraded after the image change is released warm")

	if _, err := cluster.Client.AppsV1().DaemonSets(r.ns).Get(ctx, cfg2.Warmer.DaemonSetName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		t.Fatal("the warmer DaemonSet disappeared")
	}
	r.uninstall()
}
