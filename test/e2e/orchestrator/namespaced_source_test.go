package orchestrator_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// A namespaced maintenance resource read in one namespace (maintenance.nodeMaintenance.namespace):
// an object there puts its node in maintenance, one naming a pool node from another namespace
// does not, over the real API server's namespaced list.
func TestNamespacedMaintenanceSource(t *testing.T) {
	gvr := schema.GroupVersionResource{Group: "namespaced.e2e.image-prewarmer.io", Version: "v1", Resource: "upgradejobs"}
	const kind = "UpgradeJob"
	require.NoError(t, cluster.InstallNamespacedMaintenanceCRD(t.Context(), gvr, kind))
	e := newEnv(t)
	other := e.Name + "-other"
	_, err := e.client.CoreV1().Namespaces().Create(e.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = e.client.CoreV1().Namespaces().Delete(e.Ctx, other, metav1.DeleteOptions{}) })
	e.Config.Maintenance.NodeMaintenance = config.NodeMaintenanceSource{
		Enabled: true, Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
		Namespace: e.Name, NodeNameField: "spec.nodeName",
	}
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	create := func(ns, node string) {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": gvr.GroupVersion().String(), "kind": kind,
			"metadata": map[string]any{"name": node},
			"spec":     map[string]any{"nodeName": node, "reason": "e2e"},
		}}
		_, err := e.dyn.Resource(gvr).Namespace(ns).Create(e.Ctx, obj, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	create(e.Name, e.NodeName("a"))
	create(other, e.NodeName("b"))

	e.cycle()
	e.requirePhase("a", state.PhaseTainted, "upgrading")
	e.RequireUntouched("b")
}
