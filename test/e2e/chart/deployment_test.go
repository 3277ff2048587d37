package chart_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The Deployment mode under exactly the RBAC the chart grants it: the orchestrator, run with the
// Deployment's own arguments, the chart's config.yaml and a token of the chart's ServiceAccount,
// takes the chart's Lease, taints a node in maintenance, releases it once its warmer pod is Ready,
// and hands the Lease back on SIGTERM, without a request refused.
func TestDeploymentModeUnderItsRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newLiveRelease(t, ctx, "prewarm-deploy", "prewarm-d", "deploy-notebooks", map[string]any{
		"images":  []any{"registry.example.com/notebook/base:2026.11"},
		"upgrade": map[string]any{"kernelVersions": []any{newKernel}, "kernelVersionLabel": "kernel-version"},
		"orchestrator": map[string]any{
			"mode":       "deployment",
			"deployment": map[string]any{"replicas": 2},
		},
	})
	node := r.nodeName("deploy-a")
	r.poolNode(node)

	o := r.startDeployment()
	cfg := o.cfg
	r.maintenance(node)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		return state.HasTaint(r.node(node), cfg.Taint.Key, cfg.Taint.Effect), nil
	}), "the node in maintenance is tainted:\n%s", o.logs)
	r.reboot(node)
	require.NoError(t, framework.Eventually(ctx, 2*time.Minute, func(context.Context) (bool, error) {
		return r.node(node).Annotations[state.ReleaseReason] == state.ReasonWarm, nil
	}), "released once its warmer pod is Ready:\n%s", o.logs)
	assert.False(t, state.HasTaint(r.node(node), cfg.Taint.Key, cfg.Taint.Effect))

	o.stop()
	lease, err := cluster.Client.CoordinationV1().Leases(r.ns).Get(ctx, r.fullname, metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "", "the Lease is handed back")

	r.uninstall()
}
