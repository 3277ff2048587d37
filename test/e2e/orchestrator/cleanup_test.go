package orchestrator_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// removeLabels removes labels from the pool's node short, as a person or a tool relabelling it would.
func (e *env) removeLabels(short string, keys ...string) {
	e.T.Helper()
	labels := map[string]any{}
	for _, k := range keys {
		labels[k] = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	require.NoError(e.T, err)
	_, err = e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName(short), types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(e.T, err)
}

// A managed node that lost both its pool label and the status label is found by neither of a
// cycle's two node lists; `cleanup` reads every node and releases it still (taint, status label
// and our annotations off, the release recorded), while the node another installation manages,
// which lost its labels too, keeps what that installation put on it. (The fake-client test is
// pkg/engine TestCleanupFindsManagedNodesOutsideThePool.)
func TestCleanupReleasesManagedNodesOutsideThePool(t *testing.T) {
	e := newEnv(t)
	const poolB = "e2e.image-prewarmer.io/pool-b"
	b := e.secondInstallation("b", func(c *config.Config) {
		c.Pool.NodeSelector = map[string]string{poolB: e.Name}
	})
	e.PoolNode("lost")
	_, err := cluster.CreateNode(e.Ctx, e.NodeName("theirs"), framework.WithKernel(framework.InitialKernel),
		framework.WithLabels(map[string]string{poolB: e.Name, "kernel-version": framework.InitialKernel}))
	require.NoError(t, err)
	e.Warmer()
	b.Warmer()
	e.Maintenance("lost")
	e.Maintenance("theirs")
	e.cycle()
	e.requirePhase("lost", state.PhaseTainted, "upgrading")
	b.cycle()
	b.requirePhase("theirs", state.PhaseTainted, "upgrading")

	e.removeLabels("lost", framework.PoolLabel, e.Config.StatusLabel.Key)
	e.removeLabels("theirs", poolB, b.Config.StatusLabel.Key)
	lost := e.Node("lost")
	require.NotContains(t, lost.Labels, framework.PoolLabel)
	require.NotContains(t, lost.Labels, e.Config.StatusLabel.Key)
	require.Equal(t, state.PhaseTainted, state.PhaseOf(lost), "still managed, outside both node lists")
	theirsBefore := e.Node("theirs")

	res := e.runBinary(e.configYAML(), "cleanup", "--kubeconfig", cluster.Kubeconfig)
	require.Equal(t, 0, res.code, res.stderr)

	lost = e.RequireReleased("lost", state.ReasonCleanup)
	e.RequireTaints("lost")
	for _, k := range state.ManagedAnnotations {
		assert.NotContains(t, lost.Annotations, k, "cleanup removes %s", k)
	}
	require.Len(t, e.Events("lost", "PrewarmReleased"), 1)

	theirs := e.Node("theirs")
	b.requirePhase("theirs", state.PhaseTainted, "")
	assert.Equal(t, b.Config.Instance, theirs.Annotations[state.Owner])
	assert.Equal(t, theirsBefore.Spec.Taints, theirs.Spec.Taints, "another installation's node keeps its taints")
	assert.Equal(t, theirsBefore.Annotations, theirs.Annotations, "and its annotations")
	assert.Empty(t, e.Events("theirs", ""), "and gets no Event of this installation")
}
