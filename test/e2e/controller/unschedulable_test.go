package controller_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A warmer pod the scheduler cannot place is never bound to its node (no spec.nodeName): its
// own events still re-plan the node, which records the problem at once. The pod is held by a
// scheduling gate until the replica has gone quiet (its follow-up whole-pool plans done, its
// resync 10 minutes away), so only the pod's update can tell the replica. Once the warmer asks
// for what the node has, its new pod makes the node warm.
func TestUnschedulableWarmerInEventMode(t *testing.T) {
	e := newEnv(t)
	e.PoolNode("a")
	ds := e.Warmer()
	patchWarmer := func(patch string) {
		_, err := e.client.AppsV1().DaemonSets(ds.Namespace).Patch(e.Ctx, ds.Name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		require.NoError(t, err)
	}
	// kwok nodes have 1k CPUs.
	patchWarmer(`{"spec":{"template":{"spec":{"schedulingGates":[{"name":"example.com/hold"}],"containers":[{"name":"warm-0","resources":{"requests":{"cpu":"5k"}}}]}}}}`)
	r := e.start("only", fastElection, withResync(10*time.Minute))
	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)
	e.Reboot("a", newKernel)
	e.waitPhase("a", state.PhaseWarming)

	var gated *corev1.Pod
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		pods, err := e.client.CoreV1().Pods(ds.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for i := range pods.Items {
			if p := &pods.Items[i]; plan.PodNode(p) == e.NodeName("a") {
				gated = p
				return true, nil
			}
		}
		return false, nil
	}), "the warmer pod, held by its gate")
	e.waitQuiet(r)
	assert.NotContains(t, e.Node("a").Annotations, state.LastError)

	_, err := e.client.CoreV1().Pods(gated.Namespace).Patch(e.Ctx, gated.Name, types.JSONPatchType,
		[]byte(`[{"op":"remove","path":"/spec/schedulingGates"}]`), metav1.PatchOptions{})
	require.NoError(t, err)
	e.waitFor("a", "its last-error to record the unschedulable warmer", func(n *corev1.Node) bool {
		return strings.HasPrefix(n.Annotations[state.LastError], "Unschedulable: ")
	})
	assert.Contains(t, e.Node("a").Annotations[state.LastError], "Insufficient cpu")
	require.NoError(t, framework.Eventually(e.Ctx, 10*time.Second, func(context.Context) (bool, error) {
		return len(e.Events("a", "PrewarmUnschedulable")) == 1, nil
	}), "one Warning Event")

	patchWarmer(`{"spec":{"template":{"spec":{"schedulingGates":null,"containers":[{"name":"warm-0","resources":{"requests":{"cpu":"1m"}}}]}}}}`)
	e.waitReleased("a")
	n := e.Node("a")
	assert.Equal(t, state.ReasonWarm, n.Annotations[state.ReleaseReason])
	assert.NotContains(t, n.Annotations, state.LastError, "a warm release clears the problem")
	assert.Len(t, e.Events("a", "PrewarmUnschedulable"), 1)
}
