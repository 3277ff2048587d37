package orchestrator_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

var (
	cluster *framework.Cluster
	// engineClient is the engines' client: built-in types in protobuf, as the binary reads them.
	engineClient kubernetes.Interface
)

func TestMain(m *testing.M) {
	framework.Main(m, "orchestrator", func(c *framework.Cluster) {
		cluster = c
		client, err := kubernetes.NewForConfig(protobufConfig(rest.CopyConfig(c.RESTConfig)))
		if err != nil {
			panic(err)
		}
		engineClient = client
	})
}

// protobufConfig sets rc to speak protobuf for built-in types, as the binary does.
func protobufConfig(rc *rest.Config) *rest.Config {
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	return rc
}

// testPageSize is the engines' node list page size: small, so that a node list read in pages
// (engine.Options.PagedNodeLists, or an API server that does not stream lists) takes several,
// each requested while the one before is decoded.
const testPageSize = 3

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

// env is one test's slice of the shared cluster (framework.Pool) with an engine to drive it.
type env struct {
	*framework.Pool
	client kubernetes.Interface
	dyn    dynamic.Interface
	clock  *offsetClock
}

func newEnv(t *testing.T, mutate ...func(*config.Config)) *env {
	t.Helper()
	defaults := func(cfg *config.Config) {
		cfg.CancelAfter = config.NewDuration(10 * time.Minute)
		cfg.MaxWaitForUpgrade = config.NewDuration(6 * time.Hour)
		cfg.MaxWaitForWarm = config.NewDuration(2 * time.Hour)
		// The transition Events are these tests' record of each write (one Tainted event per node:
		// nothing was written twice).
		cfg.Events.Transitions = true
	}
	p := framework.NewPool(t, cluster, append([]func(*config.Config){defaults}, mutate...)...)
	return &env{Pool: p, client: cluster.Client, dyn: cluster.Dynamic, clock: &offsetClock{}}
}

func (e *env) engine(opts ...func(*engine.Options)) *engine.Engine {
	e.T.Helper()
	o := engine.Options{
		Config: e.Config, Client: engineClient, Dynamic: e.dyn, Clock: e.clock,
		Logger: testLogger(e.T), Reporter: "e2e", NodePageSize: testPageSize,
	}
	for _, f := range opts {
		f(&o)
	}
	en, err := engine.New(o)
	require.NoError(e.T, err)
	return en
}

// cycle runs one reconcile cycle and requires it to complete.
func (e *env) cycle() engine.Result {
	e.T.Helper()
	res, err := e.engine().RunOnce(e.Ctx)
	require.NoError(e.T, err)
	return res
}

// problemGauge runs a cycle with metrics and returns the image_prewarmer_node_problems series
// that are not 0, by reason.
func (e *env) problemGauge() map[string]float64 {
	e.T.Helper()
	m := metrics.New()
	_, err := e.engine(func(o *engine.Options) { o.Metrics = m }).RunOnce(e.Ctx)
	require.NoError(e.T, err)
	families, err := m.Registry.Gather()
	require.NoError(e.T, err)
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "image_prewarmer_node_problems" {
			continue
		}
		for _, s := range f.GetMetric() {
			if v := s.GetGauge().GetValue(); v != 0 {
				got[s.GetLabel()[0].GetValue()] = v
			}
		}
	}
	return got
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) otherNode(short string, opts ...framework.NodeOption) *corev1.Node {
	e.T.Helper()
	all := append([]framework.NodeOption{
		framework.WithLabels(map[string]string{framework.PoolLabel: e.Name + "-other"}),
		framework.WithKernel("5.15.0-100"),
	}, opts...)
	n, err := cluster.CreateNode(e.Ctx, e.NodeName(short), all...)
	require.NoError(e.T, err)
	return n
}

// warmerPods returns the warmer pods on a node.
func (e *env) warmerPods(short string) []corev1.Pod {
	e.T.Helper()
	pods, err := e.client.CoreV1().Pods(e.Config.Warmer.Namespace).List(e.Ctx, metav1.ListOptions{
		FieldSelector: "spec.nodeName=" + e.NodeName(short),
	})
	require.NoError(e.T, err)
	return pods.Items
}

// waitWarmerReady waits until a Ready warmer pod runs on the node, of any revision: after a roll of
// the DaemonSet, waitNewWarmerReady waits for one of the new revision.
func (e *env) waitWarmerReady(short string) corev1.Pod {
	e.T.Helper()
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
	e.T.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.T.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cycleUntilReleased runs cycle until every node of names has a release reason.
func (e *env) cycleUntilReleased(names []string, cycle func()) {
	e.T.Helper()
	e.eventually("every node released", func() bool {
		cycle()
		for _, s := range names {
			if e.Node(s).Annotations[state.ReleaseReason] == "" {
				return false
			}
		}
		return true
	})
}

// Assertions on node state.

func (e *env) requireTainted(short string) {
	e.T.Helper()
	n := e.Node(short)
	require.True(e.T, state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect), "node %s should carry the taint: %v", short, n.Spec.Taints)
}

func (e *env) requirePhase(short, phase, label string) {
	e.T.Helper()
	n := e.Node(short)
	require.Equal(e.T, phase, n.Annotations[state.Phase], "phase of %s", short)
	require.Equal(e.T, label, n.Labels[e.Config.StatusLabel.Key], "status label of %s", short)
	require.True(e.T, state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect), "node %s should carry the taint", short)
}

// restConfigWithCounter returns a copy of the cluster's config that counts requests by verb and resource.
func restConfigWithCounter(counter *requestCounter) *rest.Config {
	rc := protobufConfig(rest.CopyConfig(cluster.RESTConfig))
	rc.QPS, rc.Burst = 1000, 1000
	rc.Wrap(counter.wrap)
	return rc
}

// secondInstallation is another installation (its own instance, namespace, warmer and Events
// namespace) on the same cluster, with the same settings as e's until mutate changes them; its
// nodes are named like e's (NodeName). It shares e's clock.
func (e *env) secondInstallation(suffix string, mutate func(*config.Config)) *env {
	e.T.Helper()
	ns := e.Name + "-" + suffix
	_, err := e.client.CoreV1().Namespaces().Create(e.Ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	require.NoError(e.T, err)
	cfg := *e.Config
	cfg.Instance = ns + "/prewarm"
	cfg.Warmer = config.Warmer{Namespace: ns, DaemonSetName: "warmer"}
	cfg.Pool.NodeSelector = nil
	mutate(&cfg)
	require.NoError(e.T, cfg.Validate())
	p := &framework.Pool{T: e.T, Ctx: e.Ctx, Cluster: cluster, Name: e.Name, Config: &cfg, Images: e.Images}
	return &env{Pool: p, client: e.client, dyn: e.dyn, clock: e.clock}
}
