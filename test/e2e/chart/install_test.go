package chart_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The seed lifecycle under exactly the chart's RBAC, with the CronJob's command run on the host:
// entry, upgrade, warm release, a cancelled maintenance, status, and the uninstall hook's cleanup.
func TestChartLifecycleUnderItsRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := cluster.Client
	r := newLiveRelease(t, ctx, "prewarm-system", "prewarm", "chart-notebooks", map[string]any{
		"images":      []any{"registry.example.com/notebook/base:2026.11", "registry.example.com/notebook/gpu:2026.11"},
		"upgrade":     map[string]any{"kernelVersions": []any{newKernel}, "kernelVersionLabel": "kernel-version"},
		"cancelAfter": "2s",
		"events":      map[string]any{"transitions": true},
		"orchestrator": map[string]any{
			"cronJob": map[string]any{"suspend": true}, // this test runs the cycles itself
		},
	})
	a, b, c := r.nodeName("chart-a"), r.nodeName("chart-b"), r.nodeName("chart-c")
	foreign := corev1.Taint{Key: "example.com/foreign", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	r.poolNode(a, framework.WithTaints(foreign))
	r.poolNode(b)
	r.poolNode(c)
	r.maintenance(a)
	r.maintenance(b)

	// The orchestrator's configuration is the chart's ConfigMap, read as the container reads it.
	cfg, cfgPath := r.config()
	assert.Equal(t, r.ns+"/"+r.rel, cfg.Instance)

	client, kubeconfig := r.serviceAccount("")
	// The token reads no Secrets and writes no pods.
	_, err := client.CoreV1().Secrets(r.ns).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "listing secrets must be forbidden, got %v", err)
	_, err = client.CoreV1().Secrets("default").Get(ctx, "anything", metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "reading secrets must be forbidden, got %v", err)
	err = client.CoreV1().Pods(r.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "deleting pods must be forbidden, got %v", err)

	cycle := func() { t.Helper(); r.cycle(cfgPath, kubeconfig) }
	tainted := func(name string) bool { return state.HasTaint(r.node(name), cfg.Taint.Key, cfg.Taint.Effect) }
	warmerReady := func(name string) bool {
		pods, err := admin.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
		require.NoError(t, err)
		for i := range pods.Items {
			if state.PodReady(&pods.Items[i]) {
				return true
			}
		}
		return false
	}

	cycle()
	assert.True(t, tainted(a))
	assert.True(t, tainted(b))
	assert.False(t, tainted(c))
	assert.Equal(t, state.PhaseTainted, state.PhaseOf(r.node(a)))

	// The upgrade: the chart's kernel term admits the warmer pod (restricted Pod Security enforced).
	r.reboot(a)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) { return warmerReady(a), nil }),
		"the chart's warmer pod is admitted and Ready on the upgraded node")
	cycle()
	na := r.node(a)
	assert.False(t, state.HasTaint(na, cfg.Taint.Key, cfg.Taint.Effect))
	assert.Equal(t, state.ReasonWarm, na.Annotations[state.ReleaseReason])
	assert.Contains(t, na.Spec.Taints, foreign, "a foreign taint is kept")
	assert.NotContains(t, na.Labels, cfg.StatusLabel.Key)

	// Events were written under the chart's RBAC.
	reasons := eventReasons(t, ctx, a)
	assert.Contains(t, reasons, "PrewarmTainted")
	assert.Contains(t, reasons, "PrewarmReleased")

	// status reads the pool under the same RBAC.
	status := r.run(cfgPath, kubeconfig, "status", "-o", "json")
	assert.Contains(t, status, `"name": "`+a+`"`)
	assert.Contains(t, status, `"releaseReason": "warm"`)

	// A cancelled maintenance.
	require.NoError(t, cluster.DeleteNodeMaintenance(ctx, b))
	cycle()
	assert.True(t, tainted(b))
	time.Sleep(cfg.CancelAfter.Duration) // the values set cancelAfter: 2s
	cycle()
	assert.False(t, tainted(b))
	assert.Equal(t, state.ReasonCancelled, r.node(b).Annotations[state.ReleaseReason])

	// cleanup under the same token releases every managed node.
	r.maintenance(c)
	cycle()
	require.True(t, tainted(c))
	// The token cannot patch the warmer DaemonSet (that could change the pod template it runs on
	// every pool node) until the uninstall begins.
	ds, err := admin.AppsV1().DaemonSets(r.ns).Get(ctx, cfg.Warmer.DaemonSetName, metav1.GetOptions{})
	require.NoError(t, err)
	_, err = client.AppsV1().DaemonSets(r.ns).Patch(ctx, ds.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{})
	assert.True(t, apierrors.IsForbidden(err), "patching the warmer must be forbidden outside an uninstall, got %v", err)
	// The pre-delete hook's command, with the RBAC Helm creates just before it: it marks the warmer
	// DaemonSet, after which a cycle taints nothing, however many maintenances appear.
	// A node that joined with the taint after the last cycle: not adopted, and after the uninstall
	// nothing would release it.
	joined := r.nodeName("joined")
	r.poolNode(joined, framework.WithTaints(corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect}))
	require.Empty(t, state.PhaseOf(r.node(joined)), "not adopted before the uninstall")
	r.createUninstallHookRBAC()
	_, hookKubeconfig := r.serviceAccount(r.serviceAccountOf("cleanup"))
	r.run(cfgPath, hookKubeconfig, "cleanup", "--uninstall", "--settle", "1s")
	// The patch is granted to the hook's own ServiceAccount (which just used it), never to the
	// orchestrator's: a failed uninstall leaves that RBAC behind.
	_, err = client.AppsV1().DaemonSets(r.ns).Patch(ctx, ds.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"x":"y"}}}`), metav1.PatchOptions{})
	assert.True(t, apierrors.IsForbidden(err), "patching the warmer must stay forbidden to the orchestrator during an uninstall, got %v", err)
	nj := r.node(joined)
	assert.False(t, state.HasTaint(nj, cfg.Taint.Key, cfg.Taint.Effect), "a node that joined with the taint is released by the uninstall")
	assert.Equal(t, state.ReasonCleanup, nj.Annotations[state.ReleaseReason])
	nc := r.node(c)
	assert.False(t, state.HasTaint(nc, cfg.Taint.Key, cfg.Taint.Effect))
	assert.Equal(t, state.ReasonCleanup, nc.Annotations[state.ReleaseReason])
	assert.NotContains(t, nc.Labels, cfg.StatusLabel.Key)
	ds, err = admin.AppsV1().DaemonSets(r.ns).Get(ctx, cfg.Warmer.DaemonSetName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, ds.Annotations, state.Uninstalling)
	_, err = cluster.CreateNodeMaintenance(ctx, b+"-again", b)
	require.NoError(t, err)
	cycle()
	assert.False(t, tainted(b), "nothing is tainted while the release is being uninstalled")

	// helm uninstall runs the pre-delete hook and removes the release.
	r.uninstall()
}

// A node that joins with the installation's taint key and effect but no value (as
// --register-with-taints=os-upgrade:NoSchedule or a startup taint writes it) is adopted, and the
// chart's warmer, tolerating the taint by key and effect, runs there: the node is released warm,
// not left to maxWaitForWarm.
func TestJoinedWithTheTaintKeyWithoutValue(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := newLiveRelease(t, ctx, "prewarm-join", "prewarm-j", "join-notebooks", map[string]any{
		"images":       []any{"registry.example.com/notebook/base:2026.11"},
		"orchestrator": map[string]any{"cronJob": map[string]any{"suspend": true}},
	})
	cfg, cfgPath := r.config()
	kubeconfig := r.kubeconfig()
	name := r.nodeName("joined-novalue")
	registered := corev1.Taint{Key: cfg.Taint.Key, Effect: cfg.Taint.Effect} // no value
	require.NotEqual(t, cfg.Taint.Value, registered.Value)
	r.poolNode(name, framework.WithTaints(registered))

	r.cycle(cfgPath, kubeconfig)
	require.Equal(t, state.PhaseWarming, state.PhaseOf(r.node(name)), "adopted")
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		r.cycle(cfgPath, kubeconfig)
		return state.PhaseOf(r.node(name)) == "", nil
	}), "the warmer runs on the node and it is released")
	n := r.node(name)
	assert.Equal(t, state.ReasonWarm, n.Annotations[state.ReleaseReason])
	assert.False(t, state.HasTaint(n, cfg.Taint.Key, cfg.Taint.Effect), "the registration taint is gone: %v", n.Spec.Taints)
	r.uninstall()
}
