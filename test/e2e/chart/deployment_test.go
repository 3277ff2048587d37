package chart_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The Deployment mode under exactly the RBAC the chart grants it, with its two replicas: each
// orchestrator, run with the Deployment's own arguments, the chart's config.yaml and a token of
// the chart's ServiceAccount, syncs its caches; one takes the chart's Lease and taints a node in
// maintenance. It is killed (SIGKILL: the Lease is not handed back); the other takes the Lease
// over once it expires, releases the node once its warmer pod is Ready, and hands the Lease back
// on SIGTERM. Neither has a request refused.
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

	first := r.startDeployment()
	standby := r.startReplica(1)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		return strings.Contains(standby.logs.String(), "caches synced"), nil
	}), "the standby syncs its caches:\n%s", standby.logs)
	cfg := first.cfg
	r.maintenance(node)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		return state.HasTaint(r.node(node), cfg.Taint.Key, cfg.Taint.Effect), nil
	}), "the node in maintenance is tainted:\n%s", first.logs)

	first.kill()
	standby.waitLeading()
	r.reboot(node)
	require.NoError(t, framework.Eventually(ctx, 2*time.Minute, func(context.Context) (bool, error) {
		return r.node(node).Annotations[state.ReleaseReason] == state.ReasonWarm, nil
	}), "released once its warmer pod is Ready:\n%s", standby.logs)
	assert.False(t, state.HasTaint(r.node(node), cfg.Taint.Key, cfg.Taint.Effect))

	standby.stop()
	holder, err := r.leaseHolder()
	require.NoError(t, err)
	assert.Empty(t, holder, "the Lease is handed back")

	r.uninstall()
}
