// Package controller_test runs the event-driven mode (`prewarm-orchestrator run`) against a real
// control plane: in-process runners with their own leader-election identities, and processes of
// the built binary.
package controller_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	dto "github.com/prometheus/client_model/go"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/controller"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

var (
	cluster *framework.Cluster
	crdOnce sync.Once
	crdErr  error
)

func TestMain(m *testing.M) {
	framework.Main(m, "controller", func(c *framework.Cluster) { cluster = c })
}

const (
	newKernel = "6.8.0-100"
	leaseName = "orchestrator"
)

// Short leader-election timings keep takeovers within seconds.
var fastElection = controller.LeaderElection{
	Enabled: true, Name: leaseName,
	LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
}

// env is one test's slice of the shared cluster: its own pool, warmer namespace and installation.
type env struct {
	t      *testing.T
	ctx    context.Context
	name   string
	client kubernetes.Interface
	dyn    dynamic.Interface
	cfg    *config.Config
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
	e := &env{t: t, ctx: ctx, name: name, client: cluster.Client, dyn: cluster.Dynamic,
		images: []string{"registry.example.com/notebook/base:2026.11"}}
	_, err := e.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	require.NoError(t, err)

	cfg := config.Default()
	cfg.Instance = name + "/prewarm"
	cfg.Pool.NodeSelector = map[string]string{"e2e.image-prewarmer.io/pool": name}
	cfg.Warmer = config.Warmer{Namespace: name, DaemonSetName: "warmer"}
	cfg.Upgrade.KernelVersions = []string{newKernel}
	cfg.Upgrade.KernelVersionLabel = "kernel-version"
	for _, m := range mutate {
		m(cfg)
	}
	require.NoError(t, cfg.Validate())
	e.cfg = cfg
	return e
}

func testLogger(t *testing.T, id string) *slog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", id)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// runner is one in-process `run` replica.
type runner struct {
	id      string
	addr    string
	metrics *metrics.Metrics
	cancel  context.CancelFunc
	done    chan error
}

// start runs an in-process replica with its own clients, metrics and leader-election identity.
func (e *env) start(id string, le controller.LeaderElection) *runner {
	e.t.Helper()
	m := metrics.New()
	rc := rest.CopyConfig(cluster.RESTConfig)
	rc.Wrap(m.WrapTransport)
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(e.t, err)
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(e.t, err)
	log := testLogger(e.t, id)
	en, err := engine.New(engine.Options{Config: e.cfg, Client: client, Dynamic: dyn, Logger: log, Reporter: id, Metrics: m})
	require.NoError(e.t, err)
	le.Namespace, le.Identity = e.name, id
	ctx, cancel := context.WithCancel(e.ctx)
	r := &runner{id: id, metrics: m, cancel: cancel, done: make(chan error, 1)}
	listening := make(chan string, 1)
	go func() {
		r.done <- controller.Run(ctx, controller.RunOptions{
			Options: controller.Options{
				Config: e.cfg, Client: client, Dynamic: dyn, Engine: en, Logger: log, Metrics: m,
				Resync: 2 * time.Second,
			},
			LeaderElection: le,
			Listen:         "127.0.0.1:0",
			OnListen:       func(addr string) { listening <- addr },
		})
	}()
	select {
	case r.addr = <-listening:
	case err := <-r.done:
		e.t.Fatalf("replica %s stopped before listening: %v", id, err)
	}
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

// stop cancels the replica (SIGTERM) and requires a clean return.
func (r *runner) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		require.NoError(t, err, "replica %s", r.id)
	case <-time.After(30 * time.Second):
		t.Fatalf("replica %s did not stop", r.id)
	}
}

func (r *runner) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + r.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// scrape returns the replica's /metrics as metric families.
func (r *runner) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := r.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	return parseMetrics(t, body)
}

func parseMetrics(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return mf
}

// sample returns the value of the family's series with exactly these label values (counter,
// gauge or histogram count), and whether it exists.
func sample(mf map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := mf[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		match := true
		for k, v := range labels {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			match = match && found
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// leader returns the Lease's holder ("" when released or absent).
func (e *env) leader() string {
	e.t.Helper()
	l, err := e.client.CoordinationV1().Leases(e.name).Get(e.ctx, leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	require.NoError(e.t, err)
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func (e *env) nodeName(short string) string { return e.name + "-" + short }

// poolNode creates a pool node on kernel 5.15.0-100 (label kernel-version too).
func (e *env) poolNode(short string, opts ...framework.NodeOption) {
	e.t.Helper()
	all := append([]framework.NodeOption{
		framework.WithLabels(map[string]string{"e2e.image-prewarmer.io/pool": e.name, "kernel-version": "5.15.0-100"}),
		framework.WithKernel("5.15.0-100"),
	}, opts...)
	_, err := cluster.CreateNode(e.ctx, e.nodeName(short), all...)
	require.NoError(e.t, err)
}

func (e *env) warmer() *appsv1.DaemonSet {
	e.t.Helper()
	o := framework.WarmerOptionsFor(e.cfg, e.images)
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

func (e *env) reboot(short string) {
	e.t.Helper()
	_, err := cluster.Reboot(e.ctx, e.nodeName(short), newKernel, map[string]string{"kernel-version": newKernel})
	require.NoError(e.t, err)
}

// waitFor waits (generously: the e2e machine may be slow) for cond on the node.
func (e *env) waitFor(short, what string, cond func(*corev1.Node) bool) {
	e.t.Helper()
	err := framework.Eventually(e.ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		n, err := e.client.CoreV1().Nodes().Get(ctx, e.nodeName(short), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cond(n), nil
	})
	require.NoError(e.t, err, "waiting for node %s: %s", short, what)
}

func (e *env) waitPhase(short, phase string) {
	e.t.Helper()
	e.waitFor(short, "phase "+phase, func(n *corev1.Node) bool {
		return n.Annotations[state.Phase] == phase && state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect)
	})
}

func (e *env) waitReleased(short string) {
	e.t.Helper()
	e.waitFor(short, "released", func(n *corev1.Node) bool {
		_, released := n.Annotations[state.ReleasedAt]
		return released && n.Annotations[state.Phase] == ""
	})
}

// requireReleased checks a released node completely: no taint, label, phase or owner; reason kept.
func (e *env) requireReleased(short, reason string) *corev1.Node {
	e.t.Helper()
	n := e.node(short)
	require.False(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect), "node %s should not carry the taint", short)
	require.NotContains(e.t, n.Labels, e.cfg.StatusLabel.Key)
	require.NotContains(e.t, n.Annotations, state.Phase)
	require.NotContains(e.t, n.Annotations, state.Owner)
	require.Equal(e.t, reason, n.Annotations[state.ReleaseReason], "release reason of %s", short)
	return n
}

func (e *env) requireUntouched(short string) {
	e.t.Helper()
	n := e.node(short)
	require.False(e.t, state.HasTaint(n, e.cfg.Taint.Key, e.cfg.Taint.Effect))
	require.NotContains(e.t, n.Labels, e.cfg.StatusLabel.Key)
	for k := range n.Annotations {
		require.False(e.t, strings.HasPrefix(k, state.Prefix), "node %s carries %s", short, k)
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
		if ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// Binary processes.

func (e *env) configFile() string {
	e.t.Helper()
	b, err := yaml.Marshal(e.cfg)
	require.NoError(e.t, err)
	path := filepath.Join(e.t.TempDir(), "config.yaml")
	require.NoError(e.t, os.WriteFile(path, b, 0o600))
	return path
}

// process is a running `prewarm-orchestrator run` process.
type process struct {
	name   string
	cmd    *exec.Cmd
	addr   string
	mu     sync.Mutex
	stderr bytes.Buffer
	exited chan struct{}
	err    error
}

var listenRE = regexp.MustCompile(`msg="serving /healthz, /readyz, /metrics" address=(\S+)`)

// startProcess runs the built binary in event-driven mode with POD_NAME=name.
func (e *env) startProcess(name string, args ...string) *process {
	e.t.Helper()
	all := append([]string{"run", "--config", e.configFile(), "--kubeconfig", cluster.Kubeconfig, "--listen", "127.0.0.1:0",
		"--leader-elect-name", leaseName, "--resync", "2s",
		"--leader-elect-lease-duration", "4s", "--leader-elect-renew-deadline", "3s", "--leader-elect-retry-period", "500ms"}, args...)
	cmd := exec.Command(framework.OrchestratorBinary(e.t), all...)
	cmd.Env = append(os.Environ(), "POD_NAME="+name, "POD_NAMESPACE="+e.name)
	stderr, err := cmd.StderrPipe()
	require.NoError(e.t, err)
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	require.NoError(e.t, cmd.Start())
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			line := s.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
			if os.Getenv("E2E_VERBOSE") != "" {
				fmt.Fprintf(os.Stderr, "[%s] %s\n", name, line)
			}
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.addr = <-addr:
	case <-p.exited:
		e.t.Fatalf("process %s exited before listening: %v\n%s", name, p.err, p.log())
	case <-time.After(30 * time.Second):
		e.t.Fatalf("process %s did not listen\n%s", name, p.log())
	}
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if e.t.Failed() {
			e.t.Logf("process %s log:\n%s", name, p.log())
		}
	})
	return p
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

func (p *process) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.addr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// execBinary runs the built binary to completion and returns its combined output.
func execBinary(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, framework.OrchestratorBinary(t), args...).CombinedOutput()
	return string(out), err
}
