package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The Deployment mode under exactly the RBAC the chart grants it: the orchestrator, run with the
// Deployment's own arguments, the chart's config.yaml and a token of the chart's ServiceAccount,
// takes the chart's Lease, taints a node in maintenance, releases it once its warmer pod is Ready,
// and hands the Lease back on SIGTERM, without a request refused.
func TestDeploymentModeUnderItsRBAC(t *testing.T) {
	const (
		ns      = "prewarm-deploy"
		rel     = "prewarm-d"
		poolVal = "deploy-notebooks"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := cluster.Client
	restrictedNamespace(t, ctx, ns)
	_, err := cluster.CreateNode(ctx, "deploy-a",
		framework.WithLabels(map[string]string{poolLabel: poolVal, "kernel-version": "5.15.0-100"}),
		framework.WithKernel("5.15.0-100"))
	require.NoError(t, err)

	helmCfg := helmInstall(t, ctx, ns, rel, map[string]any{
		"pool":    map[string]any{"nodeSelector": map[string]any{poolLabel: poolVal}},
		"images":  []any{"registry.example.com/notebook/base:2026.11"},
		"upgrade": map[string]any{"kernelVersions": []any{newKernel}, "kernelVersionLabel": "kernel-version"},
		"orchestrator": map[string]any{
			"mode":       "deployment",
			"deployment": map[string]any{"replicas": 2},
		},
	})

	fullname := rel + "-image-prewarmer"
	d, err := admin.AppsV1().Deployments(ns).Get(ctx, fullname, metav1.GetOptions{})
	require.NoError(t, err)
	args := d.Spec.Template.Spec.Containers[0].Args
	require.Contains(t, args, "--leader-elect-name="+fullname)
	cm, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, fullname, metav1.GetOptions{})
	require.NoError(t, err)
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]))
	require.NoError(t, err)
	_, token := serviceAccountClient(t, ctx, ns, d.Spec.Template.Spec.ServiceAccountName)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cm.Data["config.yaml"]), 0o600))
	// As the Deployment's pod runs it (its namespace and name come from the downward API), with
	// the HTTP endpoints on a free local port.
	cmd := exec.CommandContext(ctx, framework.OrchestratorBinary(t), append(slicesWithout(args, "--listen"),
		"--config", cfgPath, "--kubeconfig", tokenKubeconfig(t, dir, token), "--listen", "127.0.0.1:0")...)
	cmd.Env = append(os.Environ(), "POD_NAMESPACE="+ns, "POD_NAME="+fullname+"-0")
	var logs tu.LogBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()

	require.NoError(t, framework.Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		lease, err := admin.CoordinationV1().Leases(ns).Get(ctx, fullname, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return lease.Spec.HolderIdentity != nil && strings.HasPrefix(*lease.Spec.HolderIdentity, fullname+"-0"), nil
	}), "the chart's Lease is taken:\n%s", &logs)

	node := func() *corev1.Node {
		n, err := admin.CoreV1().Nodes().Get(ctx, "deploy-a", metav1.GetOptions{})
		require.NoError(t, err)
		return n
	}
	_, err = cluster.CreateNodeMaintenance(ctx, "deploy-a", "deploy-a")
	require.NoError(t, err)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		return state.HasTaint(node(), cfg.Taint.Key, cfg.Taint.Effect), nil
	}), "the node in maintenance is tainted:\n%s", &logs)
	_, err = cluster.Reboot(ctx, "deploy-a", newKernel, map[string]string{"kernel-version": newKernel})
	require.NoError(t, err)
	require.NoError(t, framework.Eventually(ctx, 2*time.Minute, func(context.Context) (bool, error) {
		return node().Annotations[state.ReleaseReason] == state.ReasonWarm, nil
	}), "released once its warmer pod is Ready:\n%s", &logs)
	assert.False(t, state.HasTaint(node(), cfg.Taint.Key, cfg.Taint.Effect))

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err, "exit 0 on SIGTERM:\n%s", &logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit within 30 s of SIGTERM:\n%s", &logs)
	}
	lease, err := admin.CoordinationV1().Leases(ns).Get(ctx, fullname, metav1.GetOptions{})
	require.NoError(t, err)
	assert.True(t, lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "", "the Lease is handed back")
	assert.NotContains(t, strings.ToLower(logs.String()), "forbidden", "no request refused under the chart's RBAC")

	uninstall := action.NewUninstall(helmCfg)
	uninstall.Timeout = 2 * time.Minute
	_, err = uninstall.Run(rel)
	require.NoError(t, err, "helm uninstall")
}

// slicesWithout returns args without the flags named flag (as --flag=value or --flag value).
func slicesWithout(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		switch {
		case strings.HasPrefix(args[i], flag+"="):
		case args[i] == flag:
			i++
		default:
			out = append(out, args[i])
		}
	}
	return out
}
