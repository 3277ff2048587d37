package chart_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A namespaced maintenance resource read in one namespace (maintenance.nodeMaintenance.namespace)
// under exactly the RBAC the chart grants for it, a Role in that namespace: the ServiceAccount
// cannot read the resource in other namespaces; a run --once cycle enters the node whose object
// is in that namespace and not the one whose object is elsewhere; the event-driven mode syncs its
// informer on the resource there (list and watch) and releases the entered node once warm. No
// request is refused.
func TestNamespacedMaintenanceSourceUnderItsRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	gvr := schema.GroupVersionResource{Group: "namespaced.chart.e2e.image-prewarmer.io", Version: "v1", Resource: "upgradejobs"}
	const kind = "UpgradeJob"
	require.NoError(t, cluster.InstallNamespacedMaintenanceCRD(ctx, gvr, kind))
	t.Cleanup(func() { _ = cluster.DeleteMaintenanceCRD(context.Background(), gvr) })

	// The pipeline's namespace and another one, each named by the API server.
	namespace := func(prefix string) string {
		t.Helper()
		ns, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}, metav1.CreateOptions{})
		require.NoError(t, err)
		t.Cleanup(func() {
			_ = cluster.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
		})
		return ns.Name
	}
	upgrades, other := namespace("upgrades-"), namespace("other-")
	r := newLiveRelease(t, ctx, "prewarm-ns", "prewarm-n", "ns-notebooks", map[string]any{
		"images":  []any{"registry.example.com/notebook/base:2026.11"},
		"upgrade": map[string]any{"kernelVersions": []any{newKernel}, "kernelVersionLabel": "kernel-version"},
		"maintenance": map[string]any{"nodeMaintenance": map[string]any{
			"group": gvr.Group, "version": gvr.Version, "resource": gvr.Resource, "namespace": upgrades,
		}},
		"orchestrator": map[string]any{"mode": "deployment", "deployment": map[string]any{"replicas": 1}},
	})
	a, b := r.nodeName("ns-a"), r.nodeName("ns-b")
	r.poolNode(a)
	r.poolNode(b)
	create := func(ns, node string) {
		t.Helper()
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": kind,
			"metadata": map[string]any{"name": node},
			"spec":     map[string]any{"nodeName": node},
		}}
		_, err := cluster.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	create(upgrades, a)
	create(other, b)

	cfg, cfgPath := r.config()
	require.Equal(t, upgrades, cfg.Maintenance.NodeMaintenance.Namespace)
	_, kubeconfig := r.serviceAccount("")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	_, err = dyn.Resource(gvr).Namespace(upgrades).List(ctx, metav1.ListOptions{})
	require.NoError(t, err, "the ServiceAccount reads the resource in %s", upgrades)
	for _, ns := range []string{other, metav1.NamespaceAll} {
		_, err = dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		assert.True(t, apierrors.IsForbidden(err), "reading the resource in %q must be forbidden, got %v", ns, err)
	}

	out := r.cycle(cfgPath, kubeconfig)
	assert.NotContains(t, strings.ToLower(out), "forbidden", out)
	assert.True(t, state.HasTaint(r.node(a), cfg.Taint.Key, cfg.Taint.Effect), "the node whose object is in %s is entered:\n%s", upgrades, out)
	assert.False(t, state.HasTaint(r.node(b), cfg.Taint.Key, cfg.Taint.Effect), "the node whose object is in %s is not:\n%s", other, out)

	o := r.startDeployment()
	r.reboot(a)
	require.NoError(t, framework.Eventually(ctx, 2*time.Minute, func(context.Context) (bool, error) {
		return r.node(a).Annotations[state.ReleaseReason] == state.ReasonWarm, nil
	}), "released once its warmer pod is Ready:\n%s", o.logs)
	assert.False(t, state.HasTaint(r.node(b), cfg.Taint.Key, cfg.Taint.Effect))
	o.stop()

	r.uninstall()
}
