package chart_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// With orchestrator.flowSchema.enabled, the API server serves the requests of the orchestrator's
// ServiceAccount at the configured priority level: it names the FlowSchema that classified each
// request in the X-Kubernetes-PF-FlowSchema-UID response header, which is the chart's, not
// service-accounts (workload-low). helm uninstall deletes it.
func TestFlowSchemaClassifiesTheOrchestrator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := newLiveRelease(t, ctx, "prewarm-apf", "prewarm-apf", "apf-notebooks", map[string]any{
		"images":       []any{"registry.example.com/notebook/base:2026.11"},
		"orchestrator": map[string]any{"flowSchema": map[string]any{"enabled": true}},
	})
	r.poolNode(r.nodeName("apf-a")) // somewhere for the uninstall hook's Job to run
	name := r.ns + "." + r.fullname
	flowSchemas := cluster.Client.FlowcontrolV1().FlowSchemas()
	fs, err := flowSchemas.Get(ctx, name, metav1.GetOptions{})
	require.NoError(t, err, "the chart's FlowSchema")
	assert.Equal(t, "workload-high", fs.Spec.PriorityLevelConfiguration.Name)
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, func(context.Context) (bool, error) {
		fs, err = flowSchemas.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range fs.Status.Conditions {
			if c.Type == flowcontrolv1.FlowSchemaConditionDangling {
				return c.Status == flowcontrolv1.ConditionFalse, nil
			}
		}
		return false, nil
	}), "the FlowSchema's priority level exists (Dangling=False): %+v", fs.Status.Conditions)

	// The API server applies a new FlowSchema within moments (its APF config controller).
	_, kubeconfig := r.serviceAccount("")
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	require.NoError(t, err)
	httpClient, err := rest.HTTPClientFor(rc)
	require.NoError(t, err)
	var got string
	require.NoError(t, framework.Eventually(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, rc.Host+"/api/v1/nodes?limit=1", nil)
		if err != nil {
			return false, err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, nil
		}
		got = resp.Header.Get("X-Kubernetes-PF-FlowSchema-UID")
		return got == string(fs.UID), nil
	}), "a request of the orchestrator's ServiceAccount is classified by FlowSchema %s (uid %s), not %q", name, fs.UID, got)

	r.uninstall()
	_, err = flowSchemas.Get(ctx, name, metav1.GetOptions{})
	assert.True(t, apierrors.IsNotFound(err), "helm uninstall deletes the FlowSchema: %v", err)
}
