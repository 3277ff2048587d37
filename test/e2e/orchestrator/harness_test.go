package orchestrator_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

var (
	cluster *framework.Cluster
	crdOnce sync.Once
	crdErr  error
)

func TestMain(m *testing.M) {
	framework.Main(m, "orchestrator", func(c *framework.Cluster) { cluster = c })
}

// offsetClock is the real clock moved forward by a settable offset, so tests can jump past
// cancelAfter and the timeouts while the API server keeps real time.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// env is one test's slice of the shared cluster: its own pool label value, warmer namespace and
// installation, so tests do not see each other's nodes.
type env struct {
	t      *testing.T
	ctx    context.Context
	name   string
	client kubernetes.Interface
	dyn    dynamic.Interface
	cfg    *config.Config
	clock  *offsetClock
	images []string
}

func newEnv(t *testing.T, mutate ...func(*config.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	name := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 40 {
		name = strings.Trim(name[:40], "-")
	}
	crdOnce.Do(func() { crdErr = cluster.InstallNodeMaintenanceCRD(ctx) })
	require.NoError(t, crdErr, "installing the NodeMaintenance CRD")
	e := &env{t: t, ctx: ctx, name: name, client: cluster.Client, dyn: cluster.Dynamic, clock: &offsetClock{},
		images: []string{"registry.example.com/notebook/base:2026.11"}}

	_, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := config.Default()
	cfg.Instance = name + "/prewarm"
	cfg.Pool.NodeSelector = map[string]string{"e2e.image-prewarmer.io/pool": name}
	cfg.Warmer = config.Warmer{Namespace: name, DaemonSetName: "warmer"}
	cfg.CancelAfter = config.NewDuration(10 * time.Minute)
	cfg.MaxWaitForUpgrade = config.NewDuration(6 * time.Hour)
	cfg.MaxWaitForWarm = config.NewDuration(2 * time.Hour)
	for _, m := range mutate {
		m(cfg)
	}
	require.NoError(t, cfg.Validate())
	e.cfg = cfg
	return e
}

func (e *env) engine(opts ...func(*engine.Options)) *engine.Engine {
	e.t.Helper()
	o := engine.Options{
		Config: e.cfg, Client: e.client, Dynamic: e.dyn, Clock: e.clock,
		Logger: testLogger(e.t), Reporter: "e2e",
	}
	for _, f := range opts {
		f(&o)
	}
	en, err := engine.New(o)
	require.NoError(e.t, err)
	return en
}

// cycle runs one reconcile cycle and requires it to complete.
func (e *env) cycle() engine.Result {
	e.t.Helper()
	res, err := e.engine().RunOnce(e.ctx)
	require.NoError(e.t, err)
	return res
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) nodeName(short string) string { return e.name + "-" + short }

// poolNode creates a pool node on kernel 5.15.0-100 (label kernel-version too).
func (e *env) poolNode(short string, opts ...framework.NodeOption) *corev1.Node {
	e.t.Helper()
	all := append([]framework.NodeOption{
		framework.WithLabels(map[string]string{
			"e2e.image-prewarmer.io/pool": e.name,
			"kernel-version":              "5.15.0-100",
		}),
		framework.WithKernel("5.15.0-100"),
	}, opts...)
	n, err := cluster.CreateNode(e.ctx, e.nodeName(short), all...)
	require.NoError(e.t, err)
	return n
}

func (e *env) otherNode(short string, opts ...framework.NodeOption) *corev1.Node {
	e.t.Helper()
	all := append([]framework.NodeOption{
		framework.WithLabels(map[string]string{"e2e.image-prewarmer.io/pool": e.name + "-other"}),
		framework.WithKernel("5.15.0-100"),
	}, opts...)
	n, err := cluster.CreateNode(e.ctx, e.nodeName(short), all...)
	require.NoError(e.t, err)
	return n
}

func (e *env) warmer(mutate ...func(*framework.WarmerOptions)) *appsv1.DaemonSet {
	e.t.Helper()
	o := framework.WarmerOptionsFor(e.cfg, e.images)
	for _, m := range mutate {
		m(&o)
	}
	ds, err := e.client.AppsV1().DaemonSets(o.Namespace).Create(e.ctx, framework.WarmerDaemonSet(o), metav1.CreateOptions{})
	require.NoError(e.t, err)
	return ds
}

func (e *env) node(short string) *corev1.Node {
	e.t.Helper()
	n, err := e.client.CoreV1().Nodes().Get(e.ctx, e.nodeName(short), metav1.GetOptions{})
	require.NoError(e.t, err)
	return n
}

func (e *env) maintenance(short string) {
	e.t.Helper()
	_, err := cluster.CreateNodeMaintenance(e.ctx, e.nodeName(short), e.nodeName(short))
	require.NoError(e.t, err)
}

func (e *env) endMaintenance(short string) {
	e.t.Helper()
	require.NoError(e.t, cluster.DeleteNodeMaintenance(e.ctx, e.nodeName(short)))
}

// reboot simulates the OS upgrade: new kernel (nodeInfo and label) and boot ID.
func (e *env) reboot(short, kernel string) {
	e.t.Helper()
	_, err := cluster.Reboot(e.ctx, e.nodeName(short), kernel, map[string]string{"kernel-version": kernel})
	require.NoError(e.t, err)
}

// warmerPods returns the warmer pods on a node.
func (e *env) warmerPods(short string) []corev1.Pod {
	e.t.Helper()
	pods, err := e.client.CoreV1().Pods(e.cfg.Warmer.Namespace).List(e.ctx, metav1.ListOptions{
		FieldSelector: "spec.nodeName=" + e.nodeName(short),
	})
	require.NoError(e.t, err)
	return pods.Items
}

// waitWarmerReady waits until a Ready warmer pod of the DaemonSet's current revision runs on the node.
func (e *env) waitWarmerReady(short string) corev1.Pod {
	e.t.Helper()
	var ready corev1.Pod
	e.eventually(fmt.Sprintf("warmer pod Ready on %s", short), func() bool {
		for _, p := range e.warmerPods(short) {
			if p.DeletionTimestamp == nil && state.PodReady(&p) {
				ready = p
				return true
			}
		}
		return false
	})
	return ready
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// events returns the Events about a node with the given reason.
func (e *env) events(short, reason string) []corev1.Event {
	e.t.Helper()
	list, err := e.client.CoreV1().Events(e.cfg.Events.Namespace).List(e.ctx, metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + e.nodeName(short),
	})
	require.NoError(e.t, err)
	var out []corev1.Event
	for _, ev := range list.Items {
		if reason == "" || ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// Assertions on node state.

func (e *env) requireTainted(short string) {
	e.t.Helper()
	n := e.node(short)
	require.True(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect), "node %s should carry the taint: %v", short, n.Spec.Taints)
}

func (e *env) requirePhase(short, phase, label string) {
	e.t.Helper()
	n := e.node(short)
	require.Equal(e.t, phase, n.Annotations[state.Phase], "phase of %s", short)
	require.Equal(e.t, label, n.Labels[e.cfg.StatusLabel.Key], "status label of %s", short)
	require.True(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect), "node %s should carry the taint", short)
}

func (e *env) requireReleased(short, reason string) *corev1.Node {
	e.t.Helper()
	n := e.node(short)
	require.False(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect), "node %s should not carry the taint", short)
	require.NotContains(e.t, n.Labels, e.cfg.StatusLabel.Key)
	require.NotContains(e.t, n.Annotations, state.Phase)
	require.NotContains(e.t, n.Annotations, state.Owner)
	require.Equal(e.t, reason, n.Annotations[state.ReleaseReason], "release reason of %s", short)
	require.Contains(e.t, n.Annotations, state.ReleasedAt)
	return n
}

func (e *env) requireUntouched(short string) {
	e.t.Helper()
	n := e.node(short)
	require.False(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect), "node %s should not be tainted", short)
	require.NotContains(e.t, n.Labels, e.cfg.StatusLabel.Key)
	for k := range n.Annotations {
		require.False(e.t, strings.HasPrefix(k, state.Prefix), "node %s should carry none of our annotations, has %s", short, k)
	}
}

// restConfigWithCounter returns a copy of the cluster's config that counts requests by verb and resource.
func restConfigWithCounter(counter *requestCounter) *rest.Config {
	rc := rest.CopyConfig(cluster.RESTConfig)
	rc.QPS, rc.Burst = 1000, 1000
	rc.Wrap(counter.wrap)
	return rc
}
