package orchestrator_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A custom maintenance.nodeMaintenance.nodeNameField is read from the objects as the API server
// serves them: the node named there is entered, not the one in spec.nodeName.
func TestCustomNodeNameField(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.Maintenance.NodeMaintenance.NodeNameField = "spec.reason" })
	e.Warmer()
	e.PoolNode("a")
	e.PoolNode("b")
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": framework.NodeMaintenanceGroup + "/" + framework.NodeMaintenanceVersion,
		"kind":       framework.NodeMaintenanceKind,
		"metadata":   map[string]any{"name": e.NodeName("custom")},
		"spec":       map[string]any{"nodeName": e.NodeName("b"), "reason": e.NodeName("a")},
	}}
	_, err := e.dyn.Resource(framework.NodeMaintenanceGVR()).Create(e.Ctx, nm, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.DeleteNodeMaintenance(context.Background(), e.NodeName("custom")) })

	e.cycle()
	e.requireTainted("a")
	e.RequireUntouched("b")
}
