package controller_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The presence sources in the event-driven mode: a cordon (maintenance.cordoned) and a label
// (maintenance.nodeLabel) put on a node while the replica runs are maintenances it acts on from
// the node's own watch (the resync is 10 minutes), each recorded as its source; the cordoned
// node, upgraded, is released warm with its cordon kept.
func TestPresenceSourcesInEventMode(t *testing.T) {
	e := newEnv(t, func(c *config.Config) {
		c.Maintenance.NodeMaintenance.Enabled = false
		c.Maintenance.Cordoned.Enabled = true
		c.Maintenance.NodeLabel = config.NodeLabelSource{Enabled: true, Selector: "upgrade.example.com/pending=true"}
	})
	e.PoolNode("cordoned")
	e.PoolNode("labelled")
	e.Warmer()
	r := e.start("only", fastElection, withResync(10*time.Minute))
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == r.id, nil
	}))
	e.waitQuiet(r)
	e.RequireUntouched("cordoned")
	e.RequireUntouched("labelled")

	_, err := cluster.Cordon(e.Ctx, e.NodeName("cordoned"))
	require.NoError(t, err)
	e.waitPhase("cordoned", state.PhaseTainted)
	e.RequireUntouched("labelled")
	_, err = e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName("labelled"), types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"upgrade.example.com/pending":"true"}}}`), metav1.PatchOptions{})
	require.NoError(t, err)
	e.waitPhase("labelled", state.PhaseTainted)
	assert.Equal(t, plan.SourceCordoned, e.Node("cordoned").Annotations[state.MaintenanceID])
	assert.Equal(t, plan.SourceNodeLabel, e.Node("labelled").Annotations[state.MaintenanceID])

	e.Reboot("cordoned", newKernel)
	e.waitReleased("cordoned")
	n := e.RequireReleased("cordoned", state.ReasonWarm)
	assert.True(t, n.Spec.Unschedulable, "the cordon is the pipeline's, not ours to remove")
	assert.NotContains(t, n.Spec.Taints, corev1.Taint{Key: e.Config.Taint.Key, Value: e.Config.Taint.Value, Effect: e.Config.Taint.Effect})
}
