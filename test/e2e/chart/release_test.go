// Package chart_test installs the Helm chart into a local control plane and runs the orchestrator
// with the chart's rendered configuration and a token of the chart's ServiceAccount, so the
// lifecycle is proven under exactly the RBAC the chart grants.
package chart_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	helmcli "helm.sh/helm/v3/pkg/cli"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

var cluster *framework.Cluster

func TestMain(m *testing.M) {
	framework.Main(m, "chart", func(c *framework.Cluster) { cluster = c })
}

const (
	poolLabel = "e2e.image-prewarmer.io/pool"
	oldKernel = "5.15.0-100"
	newKernel = "6.8.0-100"
)

func chartDir(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	require.True(t, ok)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "charts", "image-prewarmer")
}

// runs counts the tests of each name started in this process: a test run again (go test
// -count=2) names its namespace, pool and nodes apart, since the first run's are still there.
var runs = struct {
	sync.Mutex
	n map[string]int
}{n: map[string]int{}}

func runSuffix(t *testing.T) string {
	runs.Lock()
	defer runs.Unlock()
	runs.n[t.Name()]++
	if n := runs.n[t.Name()]; n > 1 {
		return fmt.Sprintf("-%d", n)
	}
	return ""
}

// liveRelease is one installation of the chart in a namespace of its own (restricted Pod
// Security), with a pool of its own, and the means to run the orchestrator as the chart runs it:
// with the ConfigMap's config.yaml and a token of the chart's ServiceAccount.
type liveRelease struct {
	t        *testing.T
	ctx      context.Context
	ns, rel  string
	poolVal  string
	sfx      string // appended to the names of this run's nodes (see runSuffix)
	fullname string
	helm     *action.Configuration
	dir      string
	gen      int // ConfigMap renderings read so far (each is written to its own file)
}

// newLiveRelease installs the chart as rel in namespace ns, with vals and the pool poolVal
// (vals' pool is set to it).
func newLiveRelease(t *testing.T, ctx context.Context, ns, rel, poolVal string, vals map[string]any) *liveRelease {
	t.Helper()
	sfx := runSuffix(t)
	r := &liveRelease{t: t, ctx: ctx, ns: ns + sfx, rel: rel, poolVal: poolVal + sfx, sfx: sfx,
		fullname: rel + "-image-prewarmer", dir: t.TempDir()}
	vals["pool"] = map[string]any{"nodeSelector": map[string]any{poolLabel: r.poolVal}}

	require.NoError(t, cluster.InstallNodeMaintenanceCRD(ctx)) // the chart's default maintenance source
	_, err := cluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   r.ns,
		Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{})
	require.NoError(t, err)

	// As `helm install` does it, with the Helm SDK.
	settings := helmcli.New()
	settings.KubeConfig = cluster.Kubeconfig
	settings.SetNamespace(r.ns)
	r.helm = new(action.Configuration)
	require.NoError(t, r.helm.Init(settings.RESTClientGetter(), r.ns, "secret", func(string, ...any) {}))
	ch, err := loader.Load(chartDir(t))
	require.NoError(t, err)
	install := action.NewInstall(r.helm)
	install.ReleaseName, install.Namespace, install.Timeout = rel, r.ns, 2*time.Minute
	_, err = install.RunWithContext(ctx, ch, vals)
	require.NoError(t, err, "helm install")
	return r
}

// nodeName is the name this run gives the node called name.
func (r *liveRelease) nodeName(name string) string { return name + r.sfx }

// upgrade runs `helm upgrade` of the release with vals (not --reuse-values: the whole values).
func (r *liveRelease) upgrade(vals map[string]any) {
	r.t.Helper()
	ch, err := loader.Load(chartDir(r.t))
	require.NoError(r.t, err)
	up := action.NewUpgrade(r.helm)
	up.Namespace, up.Timeout = r.ns, 2*time.Minute
	_, err = up.RunWithContext(r.ctx, r.rel, ch, vals)
	require.NoError(r.t, err, "helm upgrade")
}

// uninstall runs `helm uninstall`, pre-delete hook included.
func (r *liveRelease) uninstall() {
	r.t.Helper()
	u := action.NewUninstall(r.helm)
	u.Timeout = 2 * time.Minute
	_, err := u.Run(r.rel)
	require.NoError(r.t, err, "helm uninstall")
}

// config reads the chart's ConfigMap as it is now and writes config.yaml to a file of its own.
func (r *liveRelease) config() (*config.Config, string) {
	r.t.Helper()
	cm, err := cluster.Client.CoreV1().ConfigMaps(r.ns).Get(r.ctx, r.fullname, metav1.GetOptions{})
	require.NoError(r.t, err)
	data := cm.Data["config.yaml"]
	cfg, err := config.Parse([]byte(data))
	require.NoError(r.t, err)
	r.gen++
	path := filepath.Join(r.dir, fmt.Sprintf("config-%d.yaml", r.gen))
	require.NoError(r.t, os.WriteFile(path, []byte(data), 0o600))
	return cfg, path
}

// serviceAccount returns a client that authenticates with a token of the ServiceAccount sa (the
// release's orchestrator's when sa is ""), and a kubeconfig holding that token.
func (r *liveRelease) serviceAccount(sa string) (kubernetes.Interface, string) {
	r.t.Helper()
	if sa == "" {
		sa = r.serviceAccountOf("orchestrator")
	}
	expiry := int64(3600)
	tr, err := cluster.Client.CoreV1().ServiceAccounts(r.ns).CreateToken(r.ctx, sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	require.NoError(r.t, err)
	rc := rest.AnonymousClientConfig(cluster.RESTConfig)
	rc.BearerToken = tr.Status.Token
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(r.t, err)

	return client, framework.TokenKubeconfig(r.t, cluster.Kubeconfig, r.dir, tr.Status.Token)
}

// serviceAccountOf returns the name of the release's ServiceAccount of component (orchestrator;
// cleanup, the uninstall hook's).
func (r *liveRelease) serviceAccountOf(component string) string {
	r.t.Helper()
	sas, err := cluster.Client.CoreV1().ServiceAccounts(r.ns).List(r.ctx, metav1.ListOptions{
		LabelSelector: "app.kubernetes.io/instance=" + r.rel + ",app.kubernetes.io/component=" + component})
	require.NoError(r.t, err)
	require.Len(r.t, sas.Items, 1, "one ServiceAccount for the %s", component)
	return sas.Items[0].Name
}

// createUninstallHookRBAC creates the uninstall mark's Role and RoleBinding as `helm uninstall`
// does before its cleanup Job: from the release's pre-delete hooks, with the admin client.
func (r *liveRelease) createUninstallHookRBAC() {
	r.t.Helper()
	rel, err := action.NewGet(r.helm).Run(r.rel)
	require.NoError(r.t, err)
	created := 0
	for _, h := range rel.Hooks {
		if h.Name != r.fullname+"-uninstall" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(h.Manifest), nil, nil)
		require.NoError(r.t, err, h.Manifest)
		switch o := obj.(type) {
		case *rbacv1.Role:
			_, err = cluster.Client.RbacV1().Roles(r.ns).Create(r.ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = cluster.Client.RbacV1().RoleBindings(r.ns).Create(r.ctx, o, metav1.CreateOptions{})
		default:
			r.t.Fatalf("unexpected hook object %T", obj)
		}
		require.NoError(r.t, err)
		created++
	}
	require.Equal(r.t, 2, created, "the uninstall hook's Role and RoleBinding")
}

// kubeconfig returns a kubeconfig holding a token of the release's ServiceAccount.
func (r *liveRelease) kubeconfig() string {
	r.t.Helper()
	_, path := r.serviceAccount("")
	return path
}

// run runs the orchestrator binary with args, cfgPath and kubeconfig, as the CronJob or the
// pre-delete hook does, and requires it to succeed.
func (r *liveRelease) run(cfgPath, kubeconfig string, args ...string) string {
	r.t.Helper()
	cmd := exec.CommandContext(r.ctx, framework.OrchestratorBinary(r.t), append(args, "--config", cfgPath, "--kubeconfig", kubeconfig)...)
	out, err := cmd.CombinedOutput()
	require.NoError(r.t, err, "prewarm-orchestrator %v under the chart's RBAC:\n%s", args, out)
	return string(out)
}

// cycle runs `prewarm-orchestrator run --once` as the CronJob does, with cfgPath and kubeconfig:
// holding the release's Lease (the warmer's namespace is the release's, as POD_NAMESPACE is).
func (r *liveRelease) cycle(cfgPath, kubeconfig string) string {
	r.t.Helper()
	return r.run(cfgPath, kubeconfig, "run", "--once", "--leader-elect-name="+r.fullname)
}

// poolNode creates a node of the release's pool on the old kernel (also in the kernel-version
// label), with opts.
func (r *liveRelease) poolNode(name string, opts ...framework.NodeOption) {
	r.t.Helper()
	_, err := cluster.CreateNode(r.ctx, name, append([]framework.NodeOption{
		framework.WithLabels(map[string]string{poolLabel: r.poolVal, "kernel-version": oldKernel}),
		framework.WithKernel(oldKernel),
	}, opts...)...)
	require.NoError(r.t, err)
}

// maintenance creates a NodeMaintenance named after node.
func (r *liveRelease) maintenance(node string) {
	r.t.Helper()
	_, err := cluster.CreateNodeMaintenance(r.ctx, node, node)
	require.NoError(r.t, err)
}

// reboot brings node back on the new kernel (and kernel-version label), with a new boot ID.
func (r *liveRelease) reboot(node string) {
	r.t.Helper()
	_, err := cluster.Reboot(r.ctx, node, newKernel, map[string]string{"kernel-version": newKernel})
	require.NoError(r.t, err)
}

func (r *liveRelease) node(name string) *corev1.Node {
	r.t.Helper()
	n, err := cluster.Client.CoreV1().Nodes().Get(r.ctx, name, metav1.GetOptions{})
	require.NoError(r.t, err)
	return n
}

// orchestrator is the release's Deployment's orchestrator, run on the host as the Deployment's
// pod runs it.
type orchestrator struct {
	t      *testing.T
	r      *liveRelease
	pod    string
	cmd    *exec.Cmd
	logs   *tu.LogBuffer
	exited chan error
	cfg    *config.Config
}

// startDeployment starts the orchestrator as the release's Deployment runs it (replica
// "<fullname>-0"; see startReplica) and waits until it holds the release's Lease.
func (r *liveRelease) startDeployment() *orchestrator {
	r.t.Helper()
	o := r.startReplica(0)
	o.waitLeading()
	return o
}

// startReplica starts the orchestrator as the release's Deployment runs it: its arguments, the
// ConfigMap's config.yaml, a token of the Deployment's ServiceAccount, and its namespace and pod
// name as the downward API gives them (pod "<fullname>-<i>"), with the HTTP endpoints on a free
// port of 127.0.0.1.
func (r *liveRelease) startReplica(i int) *orchestrator {
	r.t.Helper()
	d, err := cluster.Client.AppsV1().Deployments(r.ns).Get(r.ctx, r.fullname, metav1.GetOptions{})
	require.NoError(r.t, err, "the release's Deployment")
	args := d.Spec.Template.Spec.Containers[0].Args
	require.Contains(r.t, args, "--leader-elect-name="+r.fullname)
	cfg, cfgPath := r.config()
	_, kubeconfig := r.serviceAccount(d.Spec.Template.Spec.ServiceAccountName)

	pod := fmt.Sprintf("%s-%d", r.fullname, i)
	o := &orchestrator{t: r.t, r: r, pod: pod, logs: &tu.LogBuffer{}, exited: make(chan error, 1), cfg: cfg}
	o.cmd = exec.CommandContext(r.ctx, framework.OrchestratorBinary(r.t), append(withoutFlag(args, "--listen"),
		"--config", cfgPath, "--kubeconfig", kubeconfig, "--listen", "127.0.0.1:0")...)
	o.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+r.ns, "POD_NAME="+pod)
	o.cmd.Stdout, o.cmd.Stderr = o.logs, o.logs
	require.NoError(r.t, o.cmd.Start())
	go func() { o.exited <- o.cmd.Wait() }()
	r.t.Cleanup(func() { _ = o.cmd.Process.Kill() })
	return o
}

// waitLeading waits until the replica holds the release's Lease (its identity starts with the
// pod's name).
func (o *orchestrator) waitLeading() {
	o.t.Helper()
	require.NoError(o.t, framework.Eventually(o.r.ctx, time.Minute, func(ctx context.Context) (bool, error) {
		holder, err := o.r.leaseHolder()
		return err == nil && strings.HasPrefix(holder, o.pod), nil
	}), "%s takes the release's Lease:\n%s", o.pod, o.logs)
}

// leaseHolder is the identity holding the release's Lease, "" when none does.
func (r *liveRelease) leaseHolder() (string, error) {
	lease, err := cluster.Client.CoordinationV1().Leases(r.ns).Get(r.ctx, r.fullname, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		return "", err
	}
	return *lease.Spec.HolderIdentity, nil
}

// kill ends the replica with SIGKILL (it hands nothing back) and requires that it had no
// request refused.
func (o *orchestrator) kill() {
	o.t.Helper()
	require.NoError(o.t, o.cmd.Process.Kill())
	<-o.exited
	assert.NotContains(o.t, strings.ToLower(o.logs.String()), "forbidden", "no request of %s refused under the chart's RBAC", o.pod)
}

// stop sends SIGTERM and requires exit 0 within 30 s, and no request refused along the way.
func (o *orchestrator) stop() {
	o.t.Helper()
	require.NoError(o.t, o.cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-o.exited:
		require.NoError(o.t, err, "exit 0 on SIGTERM:\n%s", o.logs)
	case <-time.After(30 * time.Second):
		o.t.Fatalf("no exit within 30 s of SIGTERM:\n%s", o.logs)
	}
	assert.NotContains(o.t, strings.ToLower(o.logs.String()), "forbidden", "no request refused under the chart's RBAC")
}

// withoutFlag returns args without the flags named flag (as --flag=value or --flag value).
func withoutFlag(args []string, flag string) []string {
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

// warmerPods are the live (not terminating) pods of the warmer DaemonSet on node.
func (r *liveRelease) warmerPods(ds *appsv1.DaemonSet, node string) []corev1.Pod {
	r.t.Helper()
	pods, err := cluster.Client.CoreV1().Pods(r.ns).List(r.ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	require.NoError(r.t, err)
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, ref := range p.OwnerReferences {
			if ref.UID == ds.UID {
				out = append(out, p)
			}
		}
	}
	return out
}

func eventReasons(t *testing.T, ctx context.Context, node string) []string {
	t.Helper()
	events, err := cluster.NodeEvents(ctx, node)
	require.NoError(t, err)
	var reasons []string
	for _, ev := range events {
		reasons = append(reasons, ev.Reason)
	}
	return reasons
}
