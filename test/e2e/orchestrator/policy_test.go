package orchestrator_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// A release the API server refuses for what it would write, here by a ValidatingAdmissionPolicy
// that keeps the taint on one node (it answers 422 Invalid, as the API server answers a JSON patch
// whose test operations fail), fails the cycle at once with the policy's message: the node did
// not change, so re-reading and re-planning it, as after a failed test, would only send the same
// patch again.
func TestReleaseRefusedByAPolicy(t *testing.T) {
	e := newEnv(t, kernelTarget)
	e.Warmer()
	names := e.poolInMaintenance("v%d", 1)
	node := e.NodeName(names[0])
	e.cycle()
	e.requirePhase(names[0], state.PhaseTainted, "upgrading")

	policy := "e2e-keep-taint-" + e.Name
	lift := framework.DenyPolicy(e.Ctx, t, e.client, policy, admissionregistrationv1.Update, "nodes",
		fmt.Sprintf(`object.metadata.name != %q || (has(object.spec.taints) && object.spec.taints.exists(t, t.key == %q))`, node, e.Config.Taint.Key),
		"the node keeps its taint")
	// The API server applies a policy once its informers have it: wait until a server-side dry
	// run of the taint's removal is refused.
	untaint, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": []corev1.Taint{}}})
	require.NoError(t, err)
	e.eventually("the policy in force", func() bool {
		_, err := e.client.CoreV1().Nodes().Patch(e.Ctx, node, types.MergePatchType, untaint, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
		return apierrors.IsInvalid(err)
	})

	e.Reboot(names[0], newKernel)
	e.waitWarmerReady(names[0])
	counter := &requestCounter{}
	counted, err := kubernetes.NewForConfig(restConfigWithCounter(counter))
	require.NoError(t, err)
	_, err = e.engine(func(o *engine.Options) { o.Client = counted }).RunOnce(e.Ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), policy, "the error names the policy")
	assert.Equal(t, 1, counter.answered(http.MethodPatch, "/nodes/"+node, http.StatusUnprocessableEntity), "the release, refused: %v", counter.all())
	assert.Equal(t, 1, counter.count(http.MethodPatch, "/nodes/"+node), "no retry: %v", counter.all())
	assert.Equal(t, 0, counter.count(http.MethodGet, "/api/v1/nodes/"+node), "no re-read: %v", counter.all())
	e.requireTainted(names[0])

	// Without the policy the next cycle releases the node.
	lift()
	e.cycleUntilReleased(names, func() { _, _ = e.engine().RunOnce(e.Ctx) })
	e.RequireReleased(names[0], state.ReasonWarm)
}
