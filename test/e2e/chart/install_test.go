// Package chart_test installs the Helm chart into a local control plane and runs the orchestrator
// with the chart's rendered configuration and a token of the chart's ServiceAccount, so the
// lifecycle is proven under exactly the RBAC the chart grants.
package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	helmcli "helm.sh/helm/v3/pkg/cli"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

var cluster *framework.Cluster

func TestMain(m *testing.M) {
	framework.Main(m, "chart", func(c *framework.Cluster) { cluster = c })
}

const (
	release   = "prewarm"
	namespace = "prewarm-system"
	poolLabel = "e2e.image-prewarmer.io/pool"
	pool      = "chart-notebooks"
	newKernel = "6.8.0-100"
)

func chartDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "charts", "image-prewarmer")
}

// restrictedNamespace creates namespace under the restricted Pod Security level, and the
// NodeMaintenance resource the chart's default maintenance source reads.
func restrictedNamespace(t *testing.T, ctx context.Context, namespace string) {
	t.Helper()
	require.NoError(t, cluster.InstallNodeMaintenanceCRD(ctx))
	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   namespace,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// helmInstall installs the chart with the Helm SDK, as `helm install` would, as release in namespace.
func helmInstall(t *testing.T, ctx context.Context, namespace, release string, vals map[string]any) *action.Configuration {
	t.Helper()
	settings := helmcli.New()
	settings.KubeConfig = cluster.Kubeconfig
	settings.SetNamespace(namespace)
	cfg := new(action.Configuration)
	require.NoError(t, cfg.Init(settings.RESTClientGetter(), namespace, "secret", func(string, ...any) {}))
	ch, err := loader.Load(chartDir(t))
	require.NoError(t, err)
	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace, install.Timeout = release, namespace, 2*time.Minute
	_, err = install.RunWithContext(ctx, ch, vals)
	require.NoError(t, err, "helm install")
	return cfg
}

// serviceAccountClient returns a client that authenticates with a token of the chart's
// ServiceAccount sa in namespace, and the token.
func serviceAccountClient(t *testing.T, ctx context.Context, namespace, sa string) (kubernetes.Interface, string) {
	t.Helper()
	expiry := int64(3600)
	tr, err := cluster.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	require.NoError(t, err)
	rc := rest.AnonymousClientConfig(cluster.RESTConfig)
	rc.BearerToken = tr.Status.Token
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	return client, tr.Status.Token
}

// tokenKubeconfig writes the cluster's kubeconfig with its credentials replaced by token.
func tokenKubeconfig(t *testing.T, dir, token string) string {
	t.Helper()
	kc, err := clientcmd.LoadFromFile(cluster.Kubeconfig)
	require.NoError(t, err)
	for name := range kc.AuthInfos {
		kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	}
	path := filepath.Join(dir, "kubeconfig")
	require.NoError(t, clientcmd.WriteToFile(*kc, path))
	return path
}

func TestChartLifecycleUnderItsRBAC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	admin := cluster.Client
	restrictedNamespace(t, ctx, namespace)

	poolNode := func(name string, opts ...framework.NodeOption) {
		t.Helper()
		all := append([]framework.NodeOption{
			framework.WithLabels(map[string]string{poolLabel: pool, "kernel-version": "5.15.0-100"}),
			framework.WithKernel("5.15.0-100"),
		}, opts...)
		_, err := cluster.CreateNode(ctx, name, all...)
		require.NoError(t, err)
	}
	foreign := corev1.Taint{Key: "example.com/foreign", Value: "x", Effect: corev1.TaintEffectPreferNoSchedule}
	poolNode("chart-a", framework.WithTaints(foreign))
	poolNode("chart-b")
	poolNode("chart-c")
	for _, n := range []string{"chart-a", "chart-b"} {
		_, err := cluster.CreateNodeMaintenance(ctx, n, n)
		require.NoError(t, err)
	}

	helmCfg := helmInstall(t, ctx, namespace, release, map[string]any{
		"pool":        map[string]any{"nodeSelector": map[string]any{poolLabel: pool}},
		"images":      []any{"registry.example.com/notebook/base:2026.11", "registry.example.com/notebook/gpu:2026.11"},
		"upgrade":     map[string]any{"kernelVersions": []any{newKernel}, "kernelVersionLabel": "kernel-version"},
		"cancelAfter": "2s",
		"events":      map[string]any{"transitions": true},
		"orchestrator": map[string]any{
			"cronJob": map[string]any{"suspend": true}, // this test runs the cycles itself
		},
	})

	// The orchestrator's configuration is the chart's ConfigMap, read as the container reads it.
	cms, err := admin.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	require.NoError(t, err)
	var cfg *config.Config
	var configData string
	for _, cm := range cms.Items {
		if data, ok := cm.Data["config.yaml"]; ok {
			configData = data
			cfg, err = config.Parse([]byte(data))
			require.NoError(t, err)
		}
	}
	require.NotNil(t, cfg, "the chart renders a ConfigMap with config.yaml")
	assert.Equal(t, namespace+"/"+release, cfg.Instance)

	sas, err := admin.CoreV1().ServiceAccounts(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + release})
	require.NoError(t, err)
	require.Len(t, sas.Items, 1, "one ServiceAccount for the orchestrator")
	client, token := serviceAccountClient(t, ctx, namespace, sas.Items[0].Name)

	// The token reads no Secrets and writes no pods.
	_, err = client.CoreV1().Secrets(namespace).List(ctx, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "listing secrets must be forbidden, got %v", err)
	_, err = client.CoreV1().Secrets("default").Get(ctx, "anything", metav1.GetOptions{})
	assert.True(t, apierrors.IsForbidden(err), "reading secrets must be forbidden, got %v", err)
	err = client.CoreV1().Pods(namespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{})
	assert.True(t, apierrors.IsForbidden(err), "deleting pods must be forbidden, got %v", err)

	// Run the orchestrator binary as the CronJob does: the chart's config.yaml and the chart's
	// ServiceAccount token (in a kubeconfig, since the test runs outside the cluster).
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfgPath, []byte(configData), 0o600))
	kubeconfig := tokenKubeconfig(t, dir, token)
	bin := framework.OrchestratorBinary(t)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, append(args, "--config", cfgPath, "--kubeconfig", kubeconfig)...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "prewarm-orchestrator %v under the chart's RBAC:\n%s", args, out)
		return string(out)
	}
	cycle := func() { t.Helper(); run("run", "--once") }
	node := func(name string) *corev1.Node {
		t.Helper()
		n, err := admin.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		require.NoError(t, err)
		return n
	}
	tainted := func(name string) bool { return state.HasTaint(node(name), cfg.Taint.Key, cfg.Taint.Effect) }
	warmerReady := func(name string) bool {
		pods, err := admin.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + name})
		require.NoError(t, err)
		for i := range pods.Items {
			if state.PodReady(&pods.Items[i]) {
				return true
			}
		}
		return false
	}

	cycle()
	assert.True(t, tainted("chart-a"))
	assert.True(t, tainted("chart-b"))
	assert.False(t, tainted("chart-c"))
	assert.Equal(t, state.PhaseTainted, node("chart-a").Annotations[state.Phase])

	// The upgrade: the chart's kernel term admits the warmer pod (restricted Pod Security enforced).
	_, err = cluster.Reboot(ctx, "chart-a", newKernel, map[string]string{"kernel-version": newKernel})
	require.NoError(t, err)
	require.NoError(t, framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) { return warmerReady("chart-a"), nil }),
		"the chart's warmer pod is admitted and Ready on the upgraded node")
	cycle()
	a := node("chart-a")
	assert.False(t, state.HasTaint(a, cfg.Taint.Key, cfg.Taint.Effect))
	assert.Equal(t, state.ReasonWarm, a.Annotations[state.ReleaseReason])
	assert.Contains(t, a.Spec.Taints, foreign, "a foreign taint is kept")
	assert.NotContains(t, a.Labels, cfg.StatusLabel.Key)

	// Events were written under the chart's RBAC.
	events, err := cluster.NodeEvents(ctx, "chart-a")
	require.NoError(t, err)
	var reasons []string
	for _, ev := range events {
		reasons = append(reasons, ev.Reason)
	}
	assert.Contains(t, reasons, "PrewarmTainted")
	assert.Contains(t, reasons, "PrewarmReleased")

	// status reads the pool under the same RBAC.
	status := run("status", "-o", "json")
	assert.Contains(t, status, `"name": "chart-a"`)
	assert.Contains(t, status, `"releaseReason": "warm"`)

	// A cancelled maintenance.
	require.NoError(t, cluster.DeleteNodeMaintenance(ctx, "chart-b"))
	cycle()
	assert.True(t, tainted("chart-b"))
	time.Sleep(cfg.CancelAfter.Duration) // the values set cancelAfter: 2s
	cycle()
	assert.False(t, tainted("chart-b"))
	assert.Equal(t, state.ReasonCancelled, node("chart-b").Annotations[state.ReleaseReason])

	// cleanup under the same token releases every managed node.
	_, err = cluster.CreateNodeMaintenance(ctx, "chart-c", "chart-c")
	require.NoError(t, err)
	cycle()
	require.True(t, tainted("chart-c"))
	// The pre-delete hook's command: it marks the warmer DaemonSet (under the chart's RBAC), after
	// which a cycle taints nothing, however many maintenances appear.
	run("cleanup", "--uninstall", "--settle", "1s")
	c := node("chart-c")
	assert.False(t, state.HasTaint(c, cfg.Taint.Key, cfg.Taint.Effect))
	assert.Equal(t, state.ReasonCleanup, c.Annotations[state.ReleaseReason])
	assert.NotContains(t, c.Labels, cfg.StatusLabel.Key)
	ds, err := admin.AppsV1().DaemonSets(namespace).Get(ctx, cfg.Warmer.DaemonSetName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Contains(t, ds.Annotations, state.Uninstalling)
	_, err = cluster.CreateNodeMaintenance(ctx, "chart-b-again", "chart-b")
	require.NoError(t, err)
	cycle()
	assert.False(t, tainted("chart-b"), "nothing is tainted while the release is being uninstalled")

	// helm uninstall runs the pre-delete hook and removes the release.
	uninstall := action.NewUninstall(helmCfg)
	uninstall.Timeout = 2 * time.Minute
	_, err = uninstall.Run(release)
	require.NoError(t, err, "helm uninstall")
}
