package orchestrator_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A NodeMaintenance deleted while its operator's finalizer holds it (medik8s' objects carry one)
// ends the maintenance: the API server keeps the object, with a deletionTimestamp, and the
// tainted node that was never upgraded is released (cancelled) rather than held for as long as
// the operator takes to remove its finalizer.
func TestMaintenanceHeldByAFinalizerHasEnded(t *testing.T) {
	e := newEnv(t, func(c *config.Config) { c.CancelAfter = config.NewDuration(0) })
	e.Warmer()
	names := e.poolInMaintenance("f%d", 1)
	e.cycle()
	e.requirePhase(names[0], state.PhaseTainted, "upgrading")

	nms := cluster.Dynamic.Resource(framework.NodeMaintenanceGVR())
	name := e.NodeName(names[0])
	_, err := nms.Patch(e.Ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":["e2e.example.com/hold"]}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = nms.Patch(e.Ctx, name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	})
	require.NoError(t, nms.Delete(e.Ctx, name, metav1.DeleteOptions{}))
	held, err := nms.Get(e.Ctx, name, metav1.GetOptions{})
	require.NoError(t, err, "the finalizer holds the object")
	require.NotNil(t, held.GetDeletionTimestamp())

	e.cycleUntilReleased(names, func() { e.cycle() })
	e.RequireReleased(names[0], state.ReasonCancelled)
	_, err = nms.Get(e.Ctx, name, metav1.GetOptions{})
	assert.NoError(t, err, "released while the object is still there")
}
