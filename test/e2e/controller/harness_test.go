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

var cluster *framework.Cluster

func TestMain(m *testing.M) {
	framework.Main(m, "controller", func(c *framework.Cluster) { cluster = c })
}

const (
	newKernel = "6.8.0-100"
	leaseName = "orchestrator"
)

// Leader-election timings for the in-process replicas: a graceful stop releases the Lease at
// once and a standby retrying every half second takes it over within a second, so the Lease's
// duration only has to ride out an API server or etcd that stalls for seconds on a loaded
// machine, which must not cost the leader its Lease (Run would end with an error). The tests of
// a killed leader, whose Lease must expire, run the binary with timings of their own.
var fastElection = controller.LeaderElection{
	Enabled: true, Name: leaseName,
	LeaseDuration: 20 * time.Second, RenewDeadline: 15 * time.Second, RetryPeriod: 500 * time.Millisecond,
}

// env is one test's slice of the shared cluster (framework.Pool).
type env struct {
	*framework.Pool
	client kubernetes.Interface
	dyn    dynamic.Interface
}

func newEnv(t *testing.T, mutate ...func(*config.Config)) *env {
	t.Helper()
	defaults := func(cfg *config.Config) {
		cfg.Upgrade.KernelVersions = []string{newKernel}
		cfg.Upgrade.KernelVersionLabel = "kernel-version"
		// The transition Events are these tests' record of each write (no replica wrote twice).
		cfg.Events.Transitions = true
	}
	p := framework.NewPool(t, cluster, append([]func(*config.Config){defaults}, mutate...)...)
	return &env{Pool: p, client: cluster.Client, dyn: cluster.Dynamic}
}

func testLogger(t *testing.T, id string) *slog.Logger {
	if os.Getenv("E2E_VERBOSE") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", id)
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// logSink is where replica logs go besides a test's own buffer: stderr with E2E_VERBOSE.
func logSink() io.Writer {
	if os.Getenv("E2E_VERBOSE") != "" {
		return os.Stderr
	}
	return io.Discard
}

// runner is one in-process `run` replica.
type runner struct {
	id      string
	addr    string
	metrics *metrics.Metrics
	cancel  context.CancelFunc
	done    chan error
}

// runnerResync is how often in-process replicas re-plan the whole pool unprompted, unless
// withResync says otherwise.
const runnerResync = 2 * time.Second

// startOption changes how an in-process replica is started.
type startOption func(*startSettings)

// startSettings are a replica's controller options and what its clients are built with.
type startSettings struct {
	controller.Options
	// transport, when set, wraps the API transport (inside the request metrics).
	transport func(http.RoundTripper) http.RoundTripper
}

// withResync sets the replica's resync period. A long one (minutes) leaves only the watches to
// account for what the replica does within a test.
func withResync(d time.Duration) startOption {
	return func(s *startSettings) { s.Resync = d }
}

// withLog sends the replica's log to w as well (text, debug level), for a test to read.
func withLog(w io.Writer) startOption {
	return func(s *startSettings) {
		s.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(w, logSink()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// withTransport wraps the replica's API transport, inside its request metrics.
func withTransport(wrap func(http.RoundTripper) http.RoundTripper) startOption {
	return func(s *startSettings) { s.transport = wrap }
}

// start runs an in-process replica with its own clients, metrics and leader-election identity.
func (e *env) start(id string, le controller.LeaderElection, opts ...startOption) *runner {
	e.T.Helper()
	m := metrics.New()
	st := startSettings{Options: controller.Options{Config: e.Config, Logger: testLogger(e.T, id), Metrics: m, Resync: runnerResync}}
	for _, opt := range opts {
		opt(&st)
	}
	rc := rest.CopyConfig(cluster.RESTConfig)
	if st.transport != nil {
		rc.Wrap(st.transport)
	}
	rc.Wrap(m.WrapTransport)
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(e.T, err)
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(e.T, err)
	co := st.Options
	co.Client, co.Dynamic = client, dyn
	en, err := engine.New(engine.Options{Config: e.Config, Client: client, Dynamic: dyn, Logger: co.Logger, Reporter: id, Metrics: m,
		Workers: engine.EventDrivenWorkers}) // as the binary's run
	require.NoError(e.T, err)
	co.Engine = en
	le.Namespace, le.Identity = e.Name, id
	ctx, cancel := context.WithCancel(e.Ctx)
	r := &runner{id: id, metrics: m, cancel: cancel, done: make(chan error, 1)}
	listening := make(chan string, 1)
	go func() {
		r.done <- controller.Run(ctx, controller.RunOptions{
			Options:        co,
			LeaderElection: le,
			Listen:         "127.0.0.1:0",
			OnListen:       func(addr string) { listening <- addr },
		})
	}()
	select {
	case r.addr = <-listening:
	case err := <-r.done:
		e.T.Fatalf("replica %s stopped before listening: %v", id, err)
	}
	e.T.Cleanup(func() { r.stop(e.T) })
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

// scraper is a replica that serves /metrics: an in-process runner or a process.
type scraper interface {
	scrape(t *testing.T) map[string]*dto.MetricFamily
}

// reconcileCount is the number of event-driven reconciles (mode="watch") the replica has
// completed: each re-plan, on a change, a follow-up or a resync, and each batch of writes once
// it has returned.
func reconcileCount(t *testing.T, s scraper) float64 {
	t.Helper()
	v, _ := sample(s.scrape(t), "image_prewarmer_reconcile_duration_seconds", map[string]string{"mode": "watch"})
	return v
}

// waitReconciles waits until the replica has completed at least n reconciles more than since:
// the positive progress a check that nothing happened needs, so that it cannot pass merely
// because the replica had not got round to the change yet.
func (e *env) waitReconciles(s scraper, since, n float64, what string) {
	e.T.Helper()
	var got float64
	err := framework.Eventually(e.Ctx, 60*time.Second, func(context.Context) (bool, error) {
		got = reconcileCount(e.T, s)
		return got >= since+n, nil
	})
	require.NoError(e.T, err, "%s: want at least %v reconciles (%v + %v), last seen %v", what, since+n, since, n, got)
}

// quietGap is how long a count must hold for waitSteady: longer than the controller's follow-up
// (a whole-pool re-plan one second after per-node work), with a second to spare on a loaded machine.
const quietGap = 3 * time.Second

// waitSteady waits until two readings of value, gap apart, are equal, and returns it: whatever
// value counts (requests, reconciles) has stopped for now. Meaningful only where nothing
// periodic adds to it within gap (a long resync).
func waitSteady(t *testing.T, ctx context.Context, gap, timeout time.Duration, what string, value func() float64) float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	prev := value()
	for {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v", what, ctx.Err())
		case <-time.After(gap):
		}
		cur := value()
		if cur == prev {
			return cur
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not hold for %s within %s: last %v, then %v", what, gap, timeout, prev, cur)
		}
		prev = cur
	}
}

// waitQuiet waits until the replica has completed a first reconcile and then none for quietGap,
// and returns its reconcile count. Only for replicas with a long resync.
func (e *env) waitQuiet(s scraper) float64 {
	e.T.Helper()
	e.waitReconciles(s, 0, 1, "a first reconcile")
	return waitSteady(e.T, e.Ctx, quietGap, 60*time.Second, "the reconcile count", func() float64 { return reconcileCount(e.T, s) })
}

// leader returns the Lease's holder ("" when released or absent).
func (e *env) leader() string {
	e.T.Helper()
	l, err := e.client.CoordinationV1().Leases(e.Name).Get(e.Ctx, leaseName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ""
	}
	require.NoError(e.T, err)
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// waitFor waits (generously: the e2e machine may be slow) for cond on the node.
func (e *env) waitFor(short, what string, cond func(*corev1.Node) bool) {
	e.T.Helper()
	err := framework.Eventually(e.Ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		n, err := e.client.CoreV1().Nodes().Get(ctx, e.NodeName(short), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cond(n), nil
	})
	require.NoError(e.T, err, "waiting for node %s: %s", short, what)
}

func (e *env) waitPhase(short, phase string) {
	e.T.Helper()
	e.waitFor(short, "phase "+phase, func(n *corev1.Node) bool {
		return n.Annotations[state.Phase] == phase && state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect)
	})
}

func (e *env) waitReleased(short string) {
	e.T.Helper()
	e.waitFor(short, "released", func(n *corev1.Node) bool {
		_, released := n.Annotations[state.ReleasedAt]
		return released && n.Annotations[state.Phase] == ""
	})
}

// Binary processes.

func (e *env) configFile() string {
	e.T.Helper()
	b, err := yaml.Marshal(e.Config)
	require.NoError(e.T, err)
	path := filepath.Join(e.T.TempDir(), "config.yaml")
	require.NoError(e.T, os.WriteFile(path, b, 0o600))
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
	e.T.Helper()
	all := append([]string{"run", "--config", e.configFile(), "--kubeconfig", cluster.Kubeconfig, "--listen", "127.0.0.1:0",
		"--leader-elect-name", leaseName, "--resync", "2s",
		"--leader-elect-lease-duration", "8s", "--leader-elect-renew-deadline", "6s", "--leader-elect-retry-period", "500ms"}, args...)
	cmd := exec.Command(framework.OrchestratorBinary(e.T), all...)
	// As the chart's pods get them: the identity and the container's memory limit (256Mi).
	cmd.Env = append(os.Environ(), "POD_NAME="+name, "POD_NAMESPACE="+e.Name, "PREWARM_MEMORY_LIMIT=268435456")
	stderr, err := cmd.StderrPipe()
	require.NoError(e.T, err)
	p := &process{name: name, cmd: cmd, exited: make(chan struct{})}
	require.NoError(e.T, cmd.Start())
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
		e.T.Fatalf("process %s exited before listening: %v\n%s", name, p.err, p.log())
	case <-time.After(30 * time.Second):
		e.T.Fatalf("process %s did not listen\n%s", name, p.log())
	}
	e.T.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if e.T.Failed() {
			e.T.Logf("process %s log:\n%s", name, p.log())
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
