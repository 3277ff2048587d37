package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A custom maintenance.nodeMaintenance.nodeNameField in the event-driven mode, whose informer
// keeps only part of each maintenance object: the node named at that field is entered when the
// object is created while the replica runs (the resync is 10 minutes), not the one in
// spec.nodeName, and the object's deletion is seen at once: the node is recorded as having left
// its maintenance (its release waits for cancelAfter, counted at the next resync).
func TestCustomNodeNameFieldInEventMode(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Maintenance.NodeMaintenance.NodeNameField = "spec.reason"
	})
	e.PoolNode("a")
	e.PoolNode("b")
	e.Warmer()
	r := e.start("only", fastElection, withResync(10*time.Minute))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == r.id, nil
	}))
	e.waitQuiet(r)

	name := e.NodeName("custom")
	nm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": framework.NodeMaintenanceGroup + "/" + framework.NodeMaintenanceVersion,
		"kind":       framework.NodeMaintenanceKind,
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"nodeName": e.NodeName("b"), "reason": e.NodeName("a")},
	}}
	_, err := e.dyn.Resource(framework.NodeMaintenanceGVR()).Create(e.Ctx, nm, metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.DeleteNodeMaintenance(context.Background(), name) })
	e.waitPhase("a", state.PhaseTainted)
	e.RequireUntouched("b")

	require.NoError(t, cluster.DeleteNodeMaintenance(e.Ctx, name))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		_, left := e.Node("a").Annotations[state.LeftMaintenanceAt]
		return left, nil
	}), "node a is recorded as having left its maintenance")
	require.Equal(t, state.PhaseTainted, state.PhaseOf(e.Node("a")), "tainted until cancelAfter")
	e.RequireUntouched("b")
}
