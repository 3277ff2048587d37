// Command bench measures the orchestrator on the local cluster (test/e2e/framework) and writes
// docs/benchmarks.md: release latency in event-driven mode (nodes joining tainted, nodes going
// through an upgrade) and one `run --once` cycle at 1,000 and 5,000 nodes. It measures; it
// asserts nothing. `make bench` runs it; it is not part of `make test`.
//
// Latency is measured from outside, as a user would see it: watch streams of this process (on a
// connection of their own) note when a warmer pod on a node is first seen Ready and when the node
// is first seen without the taint.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	dto "github.com/prometheus/client_model/go"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: "+err.Error())
		os.Exit(1)
	}
}

type options struct {
	out       string
	joinSizes string
	poolSize  int
	upgrading int
	// repeat runs the largest join scenario this many times per client setting: its p99 varies
	// a lot between runs, and one run can mislead either way.
	repeat    int
	onceSizes string
	// onceRepeat runs each pool's first cycle (default client settings) this many times: its
	// wall time varies with what else the control plane is doing (kwok's Lease renewals come in
	// waves).
	onceRepeat int
	clients    string
	// keepNodes leaves each latency run's nodes in the cluster (no removePool).
	keepNodes bool
	// debugDir, when set, receives each orchestrator's debug log, a CPU profile of each join
	// scenario, per-node timelines (CSV), and the API server's metrics and a CPU profile around
	// each run --once cycle.
	debugDir string
}

// clientSetting is the orchestrator's client rate limit for a latency run.
type clientSetting struct {
	qps   float64
	burst int
}

// String names the setting of an event-driven (latency) run, marking the mode's default.
func (c clientSetting) String() string { return c.label(true) }

// label names the setting, marking it when it is the default of the mode (client.qps unset).
func (c clientSetting) label(eventDriven bool) string {
	s := fmt.Sprintf("qps %g, burst %d", c.qps, c.burst)
	if c.qps < 0 {
		s = "qps -1, no client-side limit"
	}
	if d := config.Default().Client; c.qps == float64(d.QPSFor(eventDriven)) && (c.qps < 0 || c.burst == d.Burst) {
		s = "default: " + s
	}
	return s
}

// apply sets the setting in cfg.
func (c clientSetting) apply(cfg *config.Config) {
	qps := float32(c.qps)
	cfg.Client.QPS, cfg.Client.Burst = &qps, c.burst
}

// paced is the client setting the run --once scenario compares the default (no client-side limit
// for one-shot commands) with: a client-side rate limit of 50 QPS, the event-driven default.
var paced = clientSetting{qps: 50, burst: 100}

func run(ctx context.Context) error {
	var o options
	flag.StringVar(&o.out, "out", "docs/benchmarks.md", "report to write")
	flag.StringVar(&o.joinSizes, "join", "100,1000", "sizes of the joining-tainted scenarios")
	flag.IntVar(&o.upgrading, "upgrade", 100, "nodes of the largest join pool that go through an upgrade")
	flag.IntVar(&o.repeat, "repeat", 3, "runs of the largest join scenario per client setting")
	flag.StringVar(&o.onceSizes, "once", "1000,5000", "pool sizes of the run --once cycles")
	flag.IntVar(&o.onceRepeat, "once-repeat", 3, "runs of each pool's first run --once cycle with the default client settings")
	flag.StringVar(&o.clients, "clients", "50/100,-1/100", "orchestrator client qps/burst settings of the latency runs (50/100 is the event-driven default; qps -1: no client-side limit)")
	flag.BoolVar(&o.keepNodes, "keep-nodes", false, "leave each latency run's nodes in the cluster instead of deleting them before the next run")
	flag.StringVar(&o.debugDir, "debug-dir", "", "write orchestrator debug logs, CPU profiles (the orchestrator's in the joins, the API server's in the run --once cycles) and per-node timelines here")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b := &bench{log: log, started: time.Now(), opts: o, logDir: o.debugDir}
	if o.debugDir != "" {
		// Its files are written at the end of each scenario: a missing directory would lose them.
		if err := os.MkdirAll(o.debugDir, 0o755); err != nil {
			return fmt.Errorf("-debug-dir: %w", err)
		}
	} else {
		// The orchestrator's debug logs of the latency runs are kept in any case: a run far off
		// the others (a stall seen once) can only be looked into afterwards.
		dir, err := os.MkdirTemp("", "image-prewarmer-bench-logs-")
		if err != nil {
			return err
		}
		b.logDir = dir
	}
	defer func() { log.Info("orchestrator logs of the latency runs kept", "dir", b.logDir) }()

	if strings.TrimSpace(o.onceSizes) != "" {
		// The run --once rows come last: a missing /usr/bin/time would fail them after the
		// latency runs, and lose those too (the report is written at the end).
		if err := checkTime(ctx); err != nil {
			return err
		}
	}
	bin, err := buildBinary(ctx)
	if err != nil {
		return err
	}
	defer os.RemoveAll(filepath.Dir(bin))
	b.bin = bin
	start := time.Now()
	c, err := framework.Start(ctx, "bench")
	if err != nil {
		return err
	}
	defer c.Stop()
	// The benchmark's own clients read protobuf, as the orchestrator does: decoding thousands of
	// node updates as JSON would make its watchers, the stopwatch, lag behind.
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 2000, 4000
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if b.client, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	// A dialer of its own: client-go then builds a transport, and so a connection, for it alone.
	b.watchConfig = rest.CopyConfig(rc)
	b.watchConfig.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	b.c = c
	log.Info("cluster up", "took", time.Since(start).Round(time.Second).String())
	if err := c.InstallNodeMaintenanceCRD(ctx); err != nil {
		return err
	}
	b.settler = newSettler(b.client)
	b.probe("at the start")
	if err := b.scenarios(ctx); err != nil {
		return err
	}
	return b.write()
}

type bench struct {
	log     *slog.Logger
	c       *framework.Cluster
	bin     string
	opts    options
	started time.Time
	// logDir keeps the orchestrator's debug log of each latency run: -debug-dir, or a temporary
	// directory left in place.
	logDir string

	latency []latencyRow
	once    []onceRow
	notes   []string
	// created counts the nodes created so far (it numbers the fill nodes); live, those that
	// still exist.
	created, live int
	// client is a fast client for bulk creation.
	client kubernetes.Interface
	// settler removes the not-ready taint of the nodes the benchmark creates.
	settler *settler
	// watchConfig is the stopwatch's client configuration: a connection of its own.
	watchConfig *rest.Config
	// keep and keepWatch carry the largest join scenario's orchestrator into the upgrade scenario.
	keep      *controllerProc
	keepWatch *watcher
	// onceRuns numbers the run --once logs written to the debug directory.
	onceRuns int
	// probes time a fixed CPU workload during the run.
	probes []cpuProbe
	// nodeLease is the duration of the node Leases kwok's simulated kubelets hold (renewed every
	// quarter of it, as a kubelet does), read from kwok's command line; 0 until read or unknown.
	nodeLease time.Duration
}

type latencyRow struct {
	scenario      string
	client        clientSetting
	nodes         int
	samples       []time.Duration
	missing       int
	wall          time.Duration
	controllerRSS int64
	// requests counts the orchestrator's API requests during the scenario, by verb.
	requests map[string]float64
	// phases split the latency: reaction (warmer Ready seen -> release planned), write (planned ->
	// patch returned), delivery (returned -> seen released).
	phases [3][]time.Duration
	// created is how long creating the scenario's nodes took (join scenarios).
	created time.Duration
	// watchersClosed counts the node watches the API server closed as unresponsive during the
	// scenario (apiserver_terminated_watchers_total); -1 when it could not be read.
	watchersClosed float64
	// cpu is the CPU time each process used during the scenario (wall).
	cpu cpuSample
	// byReady splits the samples of a join by when the warmer pod turned Ready (readyWindows).
	byReady [][]time.Duration
}

// readyWindows bound the windows a join's latencies are split by, in time since its first node
// was created: the burst of node creations and first writes to them, the control plane's
// catch-up (kube-controller-manager's and kwok's writes to a thousand new nodes), and after.
var readyWindows = []time.Duration{5 * time.Second, 20 * time.Second}

type onceRow struct {
	pool, inMaintenance int
	cycle, client       string
	actions             int
	wall                time.Duration
	// observe and write are the cycle's phases as the orchestrator logs them (0: not found).
	observe, write time.Duration
	requests       map[string]float64
	rssKiB         int64
	// orchestratorCPU is the process's user + system time (-1: unknown); cpu is the cluster
	// components' during the same time.
	orchestratorCPU time.Duration
	cpu             cpuSample
	// leaseWrites is how many Lease updates the API server served meanwhile: the node heartbeats
	// of kwok's simulated kubelets, and the controllers' leader leases (-1: unknown).
	leaseWrites float64
}

func (b *bench) scenarios(ctx context.Context) error {
	joins := ints(b.opts.joinSizes)
	sizes := ints(b.opts.onceSizes)
	var settings []clientSetting
	for _, s := range strings.Split(b.opts.clients, ",") {
		var c clientSetting
		if _, err := fmt.Sscanf(s, "%g/%d", &c.qps, &c.burst); err == nil {
			settings = append(settings, c)
		}
	}
	for _, st := range schedule(joins, settings, b.opts.repeat, b.opts.upgrading > 0) {
		name, label := fmt.Sprintf("join%d-q%g", st.nodes, st.client.qps), ""
		if st.runs > 1 {
			name += fmt.Sprintf("-r%d", st.run)
			label = fmt.Sprintf(", run %d of %d", st.run, st.runs)
		}
		if err := b.joinScenario(ctx, name, label, st.nodes, st.client, st.upgrade); err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		if st.upgrade {
			// The orchestrator and the pool of this run go on to the upgrade scenario.
			if err := b.upgradeScenario(ctx, name, b.opts.upgrading, st.client); err != nil {
				return fmt.Errorf("upgrade scenario: %w", err)
			}
		}
		if err := b.removePool(ctx, name); err != nil {
			return err
		}
	}
	if len(sizes) > 0 {
		b.probe("before the run --once scenarios")
	}
	for _, n := range sizes {
		if err := b.onceScenario(ctx, n); err != nil {
			return fmt.Errorf("run --once at %d nodes: %w", n, err)
		}
	}
	b.probe("at the end")
	return nil
}

// cpuProbe is one timing of a fixed single-core workload.
type cpuProbe struct {
	when string
	took time.Duration
}

// probe times SHA-256 over 256 MiB on one core. The shared host this benchmark has run on gave
// the same machine up to twice the CPU time per unit of work from one hour to the next (the
// control plane's CPU for the same 500 node patches, the orchestrator's for the same cycle), and
// the probe tells a reader which kind of hour a report comes from.
func (b *bench) probe(when string) {
	buf := make([]byte, 1<<20)
	start := time.Now()
	for range 256 {
		sha256.Sum256(buf)
	}
	b.probes = append(b.probes, cpuProbe{when: when, took: time.Since(start)})
}

// step is one latency run.
type step struct {
	nodes     int
	client    clientSetting
	run, runs int
	// upgrade: the upgrade scenario follows, in this run's pool.
	upgrade bool
}

// schedule orders the latency runs: each smaller join once per client setting, then the runs of
// the largest join (repeat of them per setting) with the settings' order alternating from run to
// run (A B, B A, A B, ...). Later runs in the same cluster have been faster (the API server's
// node watch caches grow with the traffic), by more than client settings differ; run in blocks,
// the setting that ran second always looked better. The upgrade scenario follows each setting's
// last run of the largest join.
func schedule(joins []int, settings []clientSetting, repeat int, upgrade bool) []step {
	if len(joins) == 0 {
		return nil
	}
	var out []step
	largest := joins[len(joins)-1]
	for _, n := range joins[:len(joins)-1] {
		for _, cs := range settings {
			out = append(out, step{nodes: n, client: cs, run: 1, runs: 1})
		}
	}
	runs := max(repeat, 1)
	for run := 1; run <= runs; run++ {
		order := slices.Clone(settings)
		if run%2 == 0 {
			slices.Reverse(order)
		}
		for _, cs := range order {
			out = append(out, step{nodes: largest, client: cs, run: run, runs: runs, upgrade: upgrade && run == runs})
		}
	}
	return out
}

func ints(list string) []int {
	var out []int
	for _, s := range strings.Split(list, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// Labels: every node carries bench-all=yes and bench-pool=<scenario>.
const (
	allLabel  = "bench.image-prewarmer.io/all"
	poolLabel = "bench.image-prewarmer.io/pool"
)

func (b *bench) config(pool map[string]string, instance, ns string) *config.Config {
	cfg := config.Default()
	cfg.Instance = instance
	cfg.Pool.NodeSelector = pool
	cfg.Warmer = config.Warmer{Namespace: ns, DaemonSetName: "warmer"}
	return cfg
}

func writeConfig(dir string, cfg *config.Config) (string, error) {
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "config.yaml")
	return path, os.WriteFile(path, data, 0o600)
}

// joinScenario: a running orchestrator; n nodes join with the taint at once (adopt path).
func (b *bench) joinScenario(ctx context.Context, name, label string, n int, cs clientSetting, keepRunning bool) error {
	b.log.Info("scenario: nodes joining tainted", "nodes", n, "client", cs.String())
	pool := map[string]string{poolLabel: name}
	cfg := b.config(pool, "bench/"+name, strings.ReplaceAll(name, ".", "-"))
	cs.apply(cfg)
	if err := b.warmer(ctx, cfg); err != nil {
		return err
	}
	w, err := b.watch(ctx, name, pool)
	if err != nil {
		return err
	}
	defer w.stop()
	proc, err := b.startController(ctx, cfg)
	if err != nil {
		return err
	}
	taint := corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect}
	// Expected before they exist: the first nodes are released while the last are being created.
	w.expect(nodeNames(name, n))
	stopProfile := b.profile(proc, name)
	closedBefore := b.nodeWatchersClosed(ctx)
	cpuBefore := b.cpu(proc)
	start := time.Now()
	names, err := b.createNodes(ctx, name, n, 0, map[string]string{poolLabel: name, allLabel: "yes"}, &taint)
	if err != nil {
		return err
	}
	created := time.Since(start)
	if err := w.waitReleased(ctx, names, 8*time.Minute); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("%s: %v", name, err))
	}
	wall := time.Since(start)
	cpu := b.cpu(proc).since(cpuBefore)
	stopProfile()
	b.timeline(w, name, names)
	row := latencyRow{scenario: fmt.Sprintf("%d nodes join tainted at once (adopt)%s", n, label), client: cs, nodes: n, wall: wall, created: created, cpu: cpu}
	row.watchersClosed = countSince(closedBefore, b.nodeWatchersClosed(ctx))
	row.samples, row.missing = w.latencies(names)
	row.byReady = w.latenciesByReady(names, start, readyWindows)
	row.phases = w.phases(proc.logPath, names)
	row.requests = proc.requests()
	if !keepRunning {
		row.controllerRSS = proc.stop()
	} else {
		b.keep = proc
		b.keepWatch = w
		w.keepOpen = true
	}
	b.latency = append(b.latency, row)
	return nil
}

// upgradeScenario: k nodes of the pool kept running go through the whole upgrade.
func (b *bench) upgradeScenario(ctx context.Context, name string, k int, cs clientSetting) error {
	proc, w := b.keep, b.keepWatch
	if proc == nil {
		return errors.New("no running orchestrator")
	}
	defer w.close()
	b.log.Info("scenario: upgrade", "pool", name, "upgrading", k)
	var names []string
	for i := range k {
		names = append(names, fmt.Sprintf("%s-%05d", name, i))
	}
	// The join scenario's warmer pods leave the released nodes when the DaemonSet controller gets to
	// it; one still there when its node is tainted would rightly not count (design: a pod already on
	// the node counts only if it restarts), and kwok never restarts it.
	ns := strings.ReplaceAll(name, ".", "-")
	if err := framework.Eventually(ctx, 5*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := b.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		return err == nil && len(pods.Items) == 0, err
	}); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("upgrade (%s): warmer pods of the join scenario still present: %v", cs, err))
	}
	w.reset(names)
	closedBefore := b.nodeWatchersClosed(ctx)
	requestsBefore := proc.requests()
	cpuBefore := b.cpu(proc)
	start := time.Now()
	if err := parallel(ctx, names, 32, func(ctx context.Context, node string) error {
		_, err := b.c.CreateNodeMaintenance(ctx, "bench-"+node, node)
		return err
	}); err != nil {
		return err
	}
	if err := w.waitTainted(ctx, names, 5*time.Minute); err != nil {
		return err
	}
	tainted := time.Since(start)
	if err := parallel(ctx, names, 32, func(ctx context.Context, node string) error {
		_, err := b.c.Reboot(ctx, node, "6.8.0-100", nil)
		return err
	}); err != nil {
		return err
	}
	if err := w.waitReleased(ctx, names, 8*time.Minute); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("upgrade: %v", err))
	}
	row := latencyRow{scenario: fmt.Sprintf("%d nodes of a %d-node pool go through the upgrade", k, w.size()), client: cs, nodes: k, wall: time.Since(start), cpu: b.cpu(proc).since(cpuBefore)}
	row.watchersClosed = countSince(closedBefore, b.nodeWatchersClosed(ctx))
	row.samples, row.missing = w.latencies(names)
	row.phases = w.phases(proc.logPath, names)
	row.requests = requestsSince(requestsBefore, proc.requests())
	row.controllerRSS = proc.stop()
	b.latency = append(b.latency, row)
	b.notes = append(b.notes, fmt.Sprintf("upgrade scenario (%s): all %d NodeMaintenance objects to all %d nodes tainted: %s (wall, from the first create)", cs, k, k, tainted.Round(time.Millisecond)))
	// Their maintenance is over.
	return parallel(ctx, names, 32, func(ctx context.Context, node string) error {
		return b.c.DeleteNodeMaintenance(ctx, "bench-"+node)
	})
}

// onceScenario: a pool of n nodes (created as needed), 10% with a NodeMaintenance; one cycle
// that enters them, then one with nothing to do.
func (b *bench) onceScenario(ctx context.Context, n int) error {
	b.log.Info("scenario: run --once", "pool", n)
	stopSettling := func() {}
	defer func() { stopSettling() }()
	if missing := n - b.live; missing > 0 {
		stopSettling = b.settleNodes(ctx)
		// What kube-controller-manager writes to every node of a long-lived cluster is given at
		// creation, as on a node of a pool that has been up for a while (the TTL controller may
		// still change the TTL of the first nodes while the cluster grows: waitSettled).
		total, err := b.nodeCount(ctx)
		if err != nil {
			return err
		}
		steady := framework.WithAnnotations(map[string]string{ttlAnnotation: strconv.Itoa(ttlFor(total + missing))})
		// Created over one Lease renewal interval, the nodes' heartbeats are as evenly spread as
		// in a pool whose nodes came up over time; created at once, kwok renews all their Leases
		// within the same few seconds of every interval, and a cycle is measured either in such
		// a burst of hundreds of Lease writes a second or between two.
		b.nodeLease = kwokLeaseDuration(filepath.Dir(b.c.Kubeconfig))
		if _, err := b.createNodes(ctx, fmt.Sprintf("fill%d", b.created), missing, b.nodeLease/4,
			map[string]string{poolLabel: "fill", allLabel: "yes", "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}, nil, steady); err != nil {
			return err
		}
	}
	// The watch cache (ResourceVersion "0") may not show the nodes just created yet.
	var all []string
	if err := framework.Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		list, err := b.c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: allLabel + "=yes", ResourceVersion: "0"})
		if err != nil {
			return false, err
		}
		all = all[:0]
		for _, node := range list.Items {
			all = append(all, node.Name)
		}
		if len(all) < n {
			return false, fmt.Errorf("%d of %d nodes listed", len(all), n)
		}
		return true, nil
	}); err != nil {
		return err
	}
	slices.Sort(all)
	all = all[:n]
	if err := b.waitSettled(ctx, all); err != nil {
		b.notes = append(b.notes, fmt.Sprintf("run --once at %d nodes: %v", n, err))
	}
	stopSettling() // no watcher of the benchmark's while the cycles are measured
	// The pool: exactly these n nodes.
	poolValue := fmt.Sprintf("once%d", n)
	if err := parallel(ctx, all, 64, func(ctx context.Context, node string) error {
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, "bench.image-prewarmer.io/once", poolValue)
		_, err := b.client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		return err
	}); err != nil {
		return err
	}
	var maint []string
	for i, node := range all {
		if i%10 == 0 {
			maint = append(maint, node)
		}
	}
	if err := parallel(ctx, maint, 32, func(ctx context.Context, node string) error {
		_, err := b.c.CreateNodeMaintenance(ctx, onceMaintenance(1, node), node)
		return err
	}); err != nil {
		return err
	}
	ns := poolValue
	cfg := b.config(map[string]string{"bench.image-prewarmer.io/once": poolValue}, "bench/"+poolValue, ns)
	if err := b.warmer(ctx, cfg); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "bench-once-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path, err := writeConfig(dir, cfg)
	if err != nil {
		return err
	}
	cleanup := func() error {
		if out, err := exec.CommandContext(ctx, b.bin, "cleanup", "--config", path, "--kubeconfig", b.c.Kubeconfig).CombinedOutput(); err != nil {
			return fmt.Errorf("cleanup: %w\n%s", err, lastLines(out, 5))
		}
		return nil
	}
	const first, steady = "first (enters 10%)", "steady (no change)"
	def := clientSetting{qps: float64(cfg.Client.QPSFor(false)), burst: cfg.Client.Burst}.label(false)
	record := func(path, cycle, client string) error {
		row, err := b.runOnce(ctx, path)
		if err != nil {
			return err
		}
		row.pool, row.inMaintenance, row.cycle, row.client = n, len(maint), cycle, client
		b.once = append(b.once, row)
		return nil
	}
	// again releases every node and gives each of maint a new NodeMaintenance (a node released for
	// a maintenance is not tainted again for it), for another first cycle.
	gen := 1
	again := func() error {
		if err := cleanup(); err != nil {
			return err
		}
		gen++
		return parallel(ctx, maint, 32, func(ctx context.Context, node string) error {
			if err := b.c.DeleteNodeMaintenance(ctx, onceMaintenance(gen-1, node)); err != nil {
				return err
			}
			_, err := b.c.CreateNodeMaintenance(ctx, onceMaintenance(gen, node), node)
			return err
		})
	}
	runs := max(b.opts.onceRepeat, 1)
	label := func(r int) string {
		if runs == 1 {
			return first
		}
		return fmt.Sprintf("%s, run %d of %d", first, r, runs)
	}
	if err := record(path, label(1), def); err != nil {
		return err
	}
	if err := record(path, steady, def); err != nil {
		return err
	}
	for r := 2; r <= runs; r++ {
		if err := again(); err != nil {
			return err
		}
		if err := record(path, label(r), def); err != nil {
			return err
		}
	}
	// The first cycle again with a client-side rate limit, which paces its writes.
	if err := again(); err != nil {
		return err
	}
	slow := *cfg
	paced.apply(&slow)
	slowDir, err := os.MkdirTemp("", "bench-once-paced-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(slowDir)
	slowPath, err := writeConfig(slowDir, &slow)
	if err != nil {
		return err
	}
	if err := record(slowPath, first, paced.label(false)); err != nil {
		return err
	}
	// Leave the nodes as they were for the next, larger pool.
	if err := cleanup(); err != nil {
		return err
	}
	return parallel(ctx, maint, 32, func(ctx context.Context, node string) error {
		return b.c.DeleteNodeMaintenance(ctx, onceMaintenance(gen, node))
	})
}

// onceMaintenance names the NodeMaintenance of a run --once pool's node in its generation (each
// repeated first cycle needs new ones).
func onceMaintenance(gen int, node string) string { return fmt.Sprintf("once%d-%s", gen, node) }

// settler stands in for the node lifecycle controller's removal of the not-ready taint, which it
// does at about five nodes a second (its client is limited to 20 QPS, and each new node also costs
// it an Event and a label patch): minutes for the thousands of nodes this benchmark creates at once, during which no warmer
// pod can be scheduled and every node write races with it. Once kwok reports a bench node Ready,
// it removes that taint (resourceVersion-guarded; a conflict is retried on the node's next event).
// Removing it right after each create instead (no watch) was tried: creation takes about twice as
// long and warmer pods start while nodes are still being created, and the thousand-node join's p99
// was worse (416 and 482 ms against 209 and 120 ms, two runs each).
//
// It reads no node watch of its own where it can help it: in a real cluster the node lifecycle
// controller shares kube-controller-manager's node watch, and on two cores every extra node
// watcher the API server serves in a burst slows its delivery to all the others. A join's nodes
// are fed to it from the stopwatch's stream (watcher.settle); a run --once pool's new nodes from a
// watch that ends once they are settled (settleNodes), before any cycle is measured.
type settler struct {
	client kubernetes.Interface
	slots  chan struct{}
}

func newSettler(client kubernetes.Interface) *settler {
	return &settler{client: client, slots: make(chan struct{}, 16)}
}

// node removes n's not-ready taint in the background if kwok reports n Ready.
func (s *settler) node(ctx context.Context, n *corev1.Node) {
	if !state.NodeReady(n) || !state.HasTaint(n, corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule) {
		return
	}
	var taints []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key != corev1.TaintNodeNotReady {
			taints = append(taints, t)
		}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": n.ResourceVersion},
		"spec":     map[string]any{"taints": taints},
	})
	if err != nil {
		return
	}
	go func() {
		s.slots <- struct{}{}
		defer func() { <-s.slots }()
		// A conflict is fine: the watch delivers the newer version and this runs again.
		_, _ = s.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	}()
}

// settleNodes runs the settler on every bench node until stop is called (more than once is fine).
func (b *bench) settleNodes(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	// An informer, not a polling list: listing thousands of nodes twice a second would take a
	// good share of the two cores from the components being measured.
	f := informers.NewSharedInformerFactoryWithOptions(b.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.LabelSelector = allLabel + "=yes"
	}))
	check := func(obj any) {
		if n, ok := obj.(*corev1.Node); ok {
			b.settler.node(ctx, n)
		}
	}
	_, _ = f.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: check, UpdateFunc: func(_, n any) { check(n) },
	})
	f.Start(ctx.Done())
	return sync.OnceFunc(func() {
		cancel()
		f.Shutdown()
	})
}

// ttlAnnotation is kept on every node by kube-controller-manager's TTL controller: the value
// ttlFor gives for the cluster's size, rewritten on a node's next update when the size crosses a
// step, at the controller manager's client rate (20 a second).
const ttlAnnotation = "node.alpha.kubernetes.io/ttl"

// ttlFor is the TTL annotation (seconds) kube-controller-manager's TTL controller wants on every
// node of a cluster that grew to nodes nodes (pkg/controller/ttl, v1.36: its steps move up as the
// count exceeds each maximum; they move down only below lower minimums, which a growing cluster
// does not meet).
func ttlFor(nodes int) int {
	for _, step := range []struct{ max, ttl int }{{100, 0}, {500, 15}, {1000, 30}, {2000, 60}} {
		if nodes <= step.max {
			return step.ttl
		}
	}
	return 300
}

// nodeCount is the number of nodes in the cluster.
func (b *bench) nodeCount(ctx context.Context) (int, error) {
	list, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// waitSettled waits until the control plane is done with the new nodes of names: none carries the
// not-ready taint any more, kwok holds each one's Lease (kwok creates it, then lists the node's
// pods, once per new node), and each has the TTL annotation the cluster's size calls for. A run
// --once cycle measured earlier would race with those writes (conflicts, re-reads) and share the
// API server with them. The TTL controller rewrites the annotation only on a node's next update,
// and the cycle's own patches would be those updates: a node whose annotation a pool's growth left
// behind (the size crossed a step while the node was new, or since) is given the value here.
func (b *bench) waitSettled(ctx context.Context, names []string) error {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	total, err := b.nodeCount(ctx)
	if err != nil {
		return err
	}
	ttl := strconv.Itoa(ttlFor(total))
	var behind []string
	fixed, rounds := 0, 0
	var fighting error // the TTL controller wants another value than ttl
	start := time.Now()
	err = framework.Eventually(ctx, 6*time.Minute, func(ctx context.Context) (bool, error) {
		// A list of thousands of nodes is not free: not more than one every two seconds.
		if time.Since(start) > time.Second {
			select {
			case <-ctx.Done():
				return false, ctx.Err()
			case <-time.After(2 * time.Second):
			}
		}
		list, err := b.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: allLabel + "=yes", ResourceVersion: "0"})
		if err != nil {
			return false, err
		}
		behind = behind[:0]
		for _, node := range list.Items {
			if !want[node.Name] {
				continue
			}
			if state.HasTaint(&node, corev1.TaintNodeNotReady, corev1.TaintEffectNoSchedule) {
				return false, nil
			}
			if node.Annotations[ttlAnnotation] != ttl {
				behind = append(behind, node.Name)
			}
		}
		if len(behind) > 0 {
			// Nodes behind again round after round: the controller wants another value (a cluster
			// that shrank into the overlap of two of its steps: ttlFor assumes growth).
			if rounds++; rounds > 3 {
				fighting = fmt.Errorf("kube-controller-manager's TTL controller keeps %d nodes' %s away from %s", len(behind), ttlAnnotation, ttl)
				return true, nil
			}
			fixed += len(behind)
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, ttlAnnotation, ttl)
			return false, parallel(ctx, behind, 32, func(ctx context.Context, node string) error {
				_, err := b.client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
				return err
			})
		}
		leases, err := b.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false, err
		}
		held := 0
		for _, l := range leases.Items {
			if want[l.Name] && l.Spec.HolderIdentity != nil {
				held++
			}
		}
		return held == len(want), nil
	})
	b.log.Info("nodes settled", "nodes", len(names), "waited", time.Since(start).Round(time.Second).String(),
		"ttl", ttl, "ttlBehind", fixed)
	if err == nil {
		err = fighting
	}
	if err != nil {
		return fmt.Errorf("nodes not settled: %w", err)
	}
	return nil
}

// runOnce runs the built binary once with a Pushgateway stand-in to collect its request counts.
// timeCommand runs the run --once cycles: GNU time, whose -f %M gives a child's peak RSS.
var timeCommand = "/usr/bin/time"

// checkTime checks that timeCommand is GNU time.
func checkTime(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, timeCommand, "-f", rssMarker+"%M", "true").CombinedOutput()
	if err != nil || !strings.Contains(string(out), rssMarker) {
		return fmt.Errorf("the run --once rows measure peak RSS with GNU time's -f %%M, which %s does not give (%v: %s); "+
			"Debian: apt-get install -y time, or leave those rows out with -once \"\"", timeCommand, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (b *bench) runOnce(ctx context.Context, cfgPath string) (onceRow, error) {
	var (
		mu     sync.Mutex
		pushed map[string]*dto.MetricFamily
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fams := map[string]*dto.MetricFamily{}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				break
			}
			fams[mf.GetName()] = &mf
		}
		mu.Lock()
		pushed = fams
		mu.Unlock()
	}))
	defer srv.Close()
	// Peak RSS through /usr/bin/time: the rusage of a child forked from this (large) process would
	// count this process's pages, which the child shares until it execs.
	args := []string{"-f", cpuMarker + "%U/%S " + rssMarker + "%M", b.bin, "run", "--once", "--config", cfgPath, "--kubeconfig", b.c.Kubeconfig, "--pushgateway", srv.URL}
	if b.opts.debugDir != "" {
		args = append(args, "-v", "1")
	}
	cmd := exec.CommandContext(ctx, timeCommand, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	before := b.apiserverMetrics(ctx)
	leasesBefore := b.leaseWrites(ctx)
	profile := func() []byte { return nil }
	if b.opts.debugDir != "" {
		// A few seconds cover the first cycle at 5,000 nodes.
		profile = b.apiserverProfile(ctx, 4*time.Second)
	}
	clusterDir := filepath.Dir(b.c.Kubeconfig)
	cpuBefore := cpuNow(clusterDir, 0)
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	cpu := cpuNow(clusterDir, 0).since(cpuBefore)
	leases := countSince(leasesBefore, b.leaseWrites(ctx))
	if b.opts.debugDir != "" {
		b.onceRuns++
		if data := profile(); len(data) > 0 {
			_ = os.WriteFile(filepath.Join(b.opts.debugDir, fmt.Sprintf("once-%d.apiserver.cpu.pprof", b.onceRuns)), data, 0o644)
		}
		_ = os.WriteFile(filepath.Join(b.opts.debugDir, fmt.Sprintf("once-%d.log", b.onceRuns)), stderr.Bytes(), 0o644)
		_ = os.WriteFile(filepath.Join(b.opts.debugDir, fmt.Sprintf("once-%d.apiserver-before.prom", b.onceRuns)), before, 0o644)
		_ = os.WriteFile(filepath.Join(b.opts.debugDir, fmt.Sprintf("once-%d.apiserver-after.prom", b.onceRuns)), b.apiserverMetrics(ctx), 0o644)
	}
	if err != nil {
		return onceRow{}, fmt.Errorf("run --once: %w\n%s", err, lastLines(stderr.Bytes(), 10))
	}
	row := onceRow{wall: wall, rssKiB: parseRSS(stderr.String()), orchestratorCPU: parseCPU(stderr.String()), leaseWrites: leases}
	if row.orchestratorCPU >= 0 {
		cpu["orchestrator"] = row.orchestratorCPU
	}
	row.cpu = cpu
	row.observe, row.write = parseCycle(stderr.String())
	mu.Lock()
	defer mu.Unlock()
	row.requests = requestsByVerb(pushed["image_prewarmer_api_requests_total"])
	for _, m := range pushed["image_prewarmer_transitions_total"].GetMetric() {
		row.actions += int(m.GetCounter().GetValue())
	}
	return row, nil
}

// nodeWatchersClosed reads apiserver_terminated_watchers_total for nodes: the node watches the
// API server has closed because their consumer could not keep up (a watcher whose small buffer is
// full holds up delivery to every other watcher for up to 100 ms before it is closed). -1 when
// it cannot be read.
func (b *bench) nodeWatchersClosed(ctx context.Context) float64 {
	data, err := b.apiserverMetricsText(ctx)
	if err != nil {
		return -1
	}
	return nodeWatchersClosedIn(data)
}

// nodeWatchersClosedIn reads the core nodes series of apiserver_terminated_watchers_total from
// the API server's metrics text: 0 when it does not exist yet, -1 when the text cannot be parsed.
func nodeWatchersClosedIn(data []byte) float64 {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return -1
	}
	for _, m := range fams["apiserver_terminated_watchers_total"].GetMetric() {
		var group, resource string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "group":
				group = l.GetValue()
			case "resource":
				resource = l.GetValue()
			}
		}
		if group == "" && resource == "nodes" {
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// countSince is what a counter read as before (-1: unknown) grew by until after.
func countSince(before, after float64) float64 {
	if before < 0 || after < 0 {
		return -1
	}
	return after - before
}

// leaseWrites reads how many Lease updates (PUT) the API server has served, or -1.
func (b *bench) leaseWrites(ctx context.Context) float64 {
	data, err := b.apiserverMetricsText(ctx)
	if err != nil {
		return -1
	}
	return leaseWritesIn(data)
}

// leaseWritesIn sums apiserver_request_total over the PUTs of leases in the API server's metrics
// text: 0 when there are none yet, -1 when the text cannot be parsed.
func leaseWritesIn(data []byte) float64 {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return -1
	}
	var n float64
	for _, m := range fams["apiserver_request_total"].GetMetric() {
		var verb, resource string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "verb":
				verb = l.GetValue()
			case "resource":
				resource = l.GetValue()
			}
		}
		if verb == "PUT" && resource == "leases" {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// apiserverMetrics returns the API server's /metrics when -debug-dir is set (nil otherwise, or when
// it cannot be read): the request and etcd latencies around a cycle, for comparing runs.
func (b *bench) apiserverMetrics(ctx context.Context) []byte {
	if b.opts.debugDir == "" {
		return nil
	}
	data, err := b.apiserverMetricsText(ctx)
	if err != nil {
		b.log.Warn("reading the API server's metrics failed", "error", err)
		return nil
	}
	return data
}

// apiserverMetricsText reads the API server's /metrics (Prometheus text).
func (b *bench) apiserverMetricsText(ctx context.Context) ([]byte, error) {
	return b.client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// warmer creates the namespace and the warmer DaemonSet of cfg (no kernel target: the warming
// label admits the pods).
func (b *bench) warmer(ctx context.Context, cfg *config.Config) error {
	ns := cfg.Warmer.Namespace
	if _, err := b.c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	ds := framework.WarmerDaemonSet(framework.WarmerOptions{
		Namespace: ns, Name: cfg.Warmer.DaemonSetName, PoolSelector: cfg.Pool.NodeSelector,
		Taint:  corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect},
		Images: []string{"registry.example.com/notebook/base:2026.11"},
	})
	_, err := b.c.Client.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("creating the warmer DaemonSet in %s: %w", ns, err)
	}
	// The planner needs the controller to have observed the DaemonSet (its current revision).
	return framework.Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		got, err := b.c.Client.AppsV1().DaemonSets(ns).Get(ctx, ds.Name, metav1.GetOptions{})
		return err == nil && got.Status.ObservedGeneration >= got.Generation, err
	})
}

// cpu samples the CPU time of the cluster's processes, the orchestrator p and this process.
func (b *bench) cpu(p *controllerProc) cpuSample {
	return cpuNow(filepath.Dir(b.c.Kubeconfig), p.cmd.Process.Pid)
}

// removePool deletes a latency scenario's nodes, warmer DaemonSet, pods and namespace, and waits
// until they are gone and the control plane has caught up, so that every scenario meets the same
// cluster: with the nodes of earlier runs kept (-keep-nodes), each run meets more nodes, more
// Leases to renew and a larger API server watch cache than the one before.
func (b *bench) removePool(ctx context.Context, name string) error {
	if b.opts.keepNodes {
		return nil
	}
	start := time.Now()
	ns := strings.ReplaceAll(name, ".", "-")
	sel := metav1.ListOptions{LabelSelector: poolLabel + "=" + name}
	background := metav1.DeletePropagationBackground
	if err := b.client.AppsV1().DaemonSets(ns).Delete(ctx, "warmer", metav1.DeleteOptions{PropagationPolicy: &background}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the warmer DaemonSet of %s: %w", name, err)
	}
	// Grace period 0: kwok runs no containers to stop, so the pods go at once.
	if err := b.client.CoreV1().Pods(ns).DeleteCollection(ctx, *metav1.NewDeleteOptions(0), metav1.ListOptions{}); err != nil {
		return fmt.Errorf("deleting the warmer pods of %s: %w", name, err)
	}
	list, err := b.client.CoreV1().Nodes().List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing the nodes of %s: %w", name, err)
	}
	if err := b.client.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return fmt.Errorf("deleting the nodes of %s: %w", name, err)
	}
	b.live -= len(list.Items)
	// The nodes' Leases (kwok renews one per node) would be collected by the garbage collector
	// (they are owned by their nodes) while the next scenario runs.
	names := make([]string, len(list.Items))
	for i := range list.Items {
		names[i] = list.Items[i].Name
	}
	if err := parallel(ctx, names, 32, func(ctx context.Context, node string) error {
		err := b.client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, node, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}); err != nil {
		return fmt.Errorf("deleting the node leases of %s: %w", name, err)
	}
	if err := b.client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting namespace %s: %w", ns, err)
	}
	err = framework.Eventually(ctx, 5*time.Minute, func(ctx context.Context) (bool, error) {
		_, err := b.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return false, err
		}
		nodes, err := b.client.CoreV1().Nodes().List(ctx, sel)
		return err == nil && len(nodes.Items) == 0, err
	})
	if err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	// The controllers' reactions to the deletions (the namespace's remaining objects, the node
	// lifecycle controller forgetting the nodes) settle within a few seconds.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
	}
	b.log.Info("pool removed", "pool", name, "nodes", len(list.Items), "took", time.Since(start).Round(time.Second).String())
	return nil
}

// createNodes creates n kwok nodes named <prefix>-%05d, in parallel, without waiting for them:
// at once, or evenly over spread.
func (b *bench) createNodes(ctx context.Context, prefix string, n int, spread time.Duration, labels map[string]string, taint *corev1.Taint, more ...framework.NodeOption) ([]string, error) {
	names := nodeNames(prefix, n)
	start := time.Now()
	opts := append([]framework.NodeOption{framework.WithLabels(labels)}, more...)
	if taint != nil {
		opts = append(opts, framework.WithTaints(*taint))
	}
	index := make(map[string]int, n)
	for i, name := range names {
		index[name] = i
	}
	err := parallel(ctx, names, 64, func(ctx context.Context, name string) error {
		if spread > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(start.Add(spread * time.Duration(index[name]) / time.Duration(n)))):
			}
		}
		_, err := b.client.CoreV1().Nodes().Create(ctx, framework.NewNode(name, opts...), metav1.CreateOptions{})
		return err
	})
	b.created += n
	b.live += n
	b.log.Info("nodes created", "nodes", n, "took", time.Since(start).Round(time.Millisecond).String())
	return names, err
}

// nodeNames are the names createNodes gives n nodes.
func nodeNames(prefix string, n int) []string {
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("%s-%05d", prefix, i)
	}
	return names
}

func parallel(ctx context.Context, items []string, workers int, f func(context.Context, string) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	ch := make(chan string)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range ch {
				if err := f(ctx, it); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, it := range items {
		select {
		case ch <- it:
		case <-ctx.Done():
		}
	}
	close(ch)
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d failed, first: %w", len(errs), len(items), errs[0])
	}
	return ctx.Err()
}

// Watching.

type watcher struct {
	mu       sync.Mutex
	taintKey string
	readyAt  map[string]time.Time // node -> first time a Ready warmer pod was seen on it
	freeAt   map[string]time.Time // node -> first time seen without the taint after having it
	tainted  map[string]bool
	expected map[string]bool
	present  map[string]bool // the pool's nodes
	cancel   context.CancelFunc
	keepOpen bool
	// settle is handed every node the stream delivers (the settler's feed during a join).
	settle func(*corev1.Node)
}

// watch starts the stopwatch: plain watch streams on the pool's nodes and the warmer pods in ns,
// each event timed as it is read off the stream. The streams have a connection of their own
// (a client with its own dialer): on the connection the benchmark creates nodes with, they would
// queue behind those requests, and an informer would add its queues. Measured side by side with a
// separate process, informers on the shared client saw releases up to seconds late during the
// burst of node creations; these streams see them within milliseconds of it. The node stream
// also feeds the settler.
func (b *bench) watch(ctx context.Context, ns string, pool map[string]string) (*watcher, error) {
	w := &watcher{taintKey: "os-upgrade", readyAt: map[string]time.Time{}, freeAt: map[string]time.Time{},
		tainted: map[string]bool{}, expected: map[string]bool{}, present: map[string]bool{}}
	client, err := kubernetes.NewForConfig(b.watchConfig)
	if err != nil {
		return nil, err
	}
	sel := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: pool})
	nodes, pods := client.CoreV1().Nodes(), client.CoreV1().Pods(ns)
	nodeList, err := nodes.List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	podList, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for i := range nodeList.Items {
		w.onNode(now, watch.Added, &nodeList.Items[i])
	}
	for i := range podList.Items {
		w.onPod(now, watch.Added, &podList.Items[i])
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w.cancel = cancel
	w.settle = func(n *corev1.Node) { b.settler.node(wctx, n) }
	go b.follow(wctx, "nodes", nodeList.ResourceVersion, func(ctx context.Context, rv string) (watch.Interface, error) {
		return nodes.Watch(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: rv, AllowWatchBookmarks: true})
	}, w.onNode)
	go b.follow(wctx, "pods", podList.ResourceVersion, func(ctx context.Context, rv string) (watch.Interface, error) {
		return pods.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
	}, w.onPod)
	return w, nil
}

// follow reads a watch stream from rv until ctx ends, re-opening it from the last version seen
// when the server closes it, and hands each event to on with the time it was read.
func (b *bench) follow(ctx context.Context, what, rv string, open func(context.Context, string) (watch.Interface, error), on func(time.Time, watch.EventType, runtime.Object)) {
	for ctx.Err() == nil {
		wi, err := open(ctx, rv)
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("stopwatch: watch failed; retrying", "what", what, "error", err)
				time.Sleep(100 * time.Millisecond)
			}
			continue
		}
		for ev := range wi.ResultChan() {
			at := time.Now()
			if ev.Type == watch.Error {
				if ctx.Err() != nil {
					break // stopped: the stream ends with the cancellation
				}
				// Typically "resource version too old": start over from the current state.
				b.log.Warn("stopwatch: watch error; restarting from now", "what", what, "error", apierrors.FromObject(ev.Object))
				rv = ""
				break
			}
			if m, err := meta.Accessor(ev.Object); err == nil {
				rv = m.GetResourceVersion()
			}
			if ev.Type != watch.Bookmark {
				on(at, ev.Type, ev.Object)
			}
		}
		wi.Stop()
	}
}

func (w *watcher) onNode(at time.Time, t watch.EventType, obj runtime.Object) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	if w.settle != nil && t != watch.Deleted {
		w.settle(n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if t == watch.Deleted {
		delete(w.present, n.Name)
		return
	}
	w.present[n.Name] = true
	if state.HasTaint(n, w.taintKey, corev1.TaintEffectNoSchedule) {
		w.tainted[n.Name] = true
		return
	}
	if w.tainted[n.Name] && w.expected[n.Name] {
		if _, seen := w.freeAt[n.Name]; !seen {
			w.freeAt[n.Name] = at
		}
	}
}

func (w *watcher) onPod(at time.Time, t watch.EventType, obj runtime.Object) {
	p, ok := obj.(*corev1.Pod)
	if !ok || t == watch.Deleted || p.Spec.NodeName == "" || !state.PodReady(p) || p.DeletionTimestamp != nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, seen := w.readyAt[p.Spec.NodeName]; !seen && w.expected[p.Spec.NodeName] {
		w.readyAt[p.Spec.NodeName] = at
	}
}

func (w *watcher) expect(names []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range names {
		w.expected[n] = true
	}
}

// reset starts a new measurement on names (the node is tainted again first).
func (w *watcher) reset(names []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.expected = map[string]bool{}
	for _, n := range names {
		w.expected[n] = true
		delete(w.readyAt, n)
		delete(w.freeAt, n)
		w.tainted[n] = false
	}
}

func (w *watcher) size() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.present)
}

func (w *watcher) waitReleased(ctx context.Context, names []string, timeout time.Duration) error {
	return framework.Eventually(ctx, timeout, func(context.Context) (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		done := 0
		for _, n := range names {
			if _, ok := w.freeAt[n]; ok {
				done++
			}
		}
		if done < len(names) {
			return false, fmt.Errorf("%d of %d nodes released", done, len(names))
		}
		return true, nil
	})
}

func (w *watcher) waitTainted(ctx context.Context, names []string, timeout time.Duration) error {
	return framework.Eventually(ctx, timeout, func(context.Context) (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, n := range names {
			if !w.tainted[n] {
				return false, nil
			}
		}
		return true, nil
	})
}

// latencies returns, per node, release seen minus warmer Ready seen, and how many nodes lack one.
func (w *watcher) latencies(names []string) ([]time.Duration, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []time.Duration
	missing := 0
	for _, n := range names {
		r, ok1 := w.readyAt[n]
		f, ok2 := w.freeAt[n]
		if !ok1 || !ok2 {
			missing++
			continue
		}
		out = append(out, f.Sub(r))
	}
	slices.Sort(out)
	return out, missing
}

// latenciesByReady splits the latencies of names by when their warmer pod was seen Ready, in time
// since start: one sorted slice per window below each of bounds (ascending), and one after the last.
func (w *watcher) latenciesByReady(names []string, start time.Time, bounds []time.Duration) [][]time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][]time.Duration, len(bounds)+1)
	for _, n := range names {
		r, ok1 := w.readyAt[n]
		f, ok2 := w.freeAt[n]
		if !ok1 || !ok2 {
			continue
		}
		i := 0
		for i < len(bounds) && r.Sub(start) >= bounds[i] {
			i++
		}
		out[i] = append(out[i], f.Sub(r))
	}
	for _, s := range out {
		slices.Sort(s)
	}
	return out
}

// logLineRE matches the orchestrator's debug log lines that time a release: the plan that handed
// it to a writer, and the patch's return.
var logLineRE = regexp.MustCompile(`^time=(\S+) level=\S+ msg=(?:(planned) node=(\S+) action=release|(release) node=(\S+))`)

// phases splits each node's latency with the orchestrator's log: warmer Ready seen -> release
// planned -> patch returned -> node seen released. The last release of each node counts.
func (w *watcher) phases(logPath string, names []string) [3][]time.Duration {
	var out [3][]time.Duration
	data, err := os.ReadFile(logPath)
	if err != nil {
		return out
	}
	planned, patched := map[string]time.Time{}, map[string]time.Time{}
	for _, line := range strings.Split(string(data), "\n") {
		m := logLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		if m[2] != "" {
			planned[m[3]] = at
		} else {
			patched[m[5]] = at
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range names {
		ready, ok1 := w.readyAt[n]
		free, ok2 := w.freeAt[n]
		pl, ok3 := planned[n]
		pa, ok4 := patched[n]
		if !ok1 || !ok2 || !ok3 || !ok4 {
			continue
		}
		out[0] = append(out[0], pl.Sub(ready))
		out[1] = append(out[1], pa.Sub(pl))
		out[2] = append(out[2], free.Sub(pa))
	}
	for i := range out {
		slices.Sort(out[i])
	}
	return out
}

func (w *watcher) stop() {
	if !w.keepOpen {
		w.close()
	}
}

func (w *watcher) close() { w.cancel() }

// The event-driven orchestrator as a process of the built binary.

type controllerProc struct {
	// dir holds the process's configuration; removed by stop. Its log is in bench.logDir.
	dir     string
	cmd     *exec.Cmd
	addr    string
	stderr  *testutil.LogBuffer
	done    chan struct{}
	logPath string
}

var listenRE = regexp.MustCompile(`msg="serving /healthz, /readyz, /metrics" address=(\S+)`)

func (b *bench) startController(ctx context.Context, cfg *config.Config) (*controllerProc, error) {
	dir, err := os.MkdirTemp("", "bench-run-")
	if err != nil {
		return nil, err
	}
	path, err := writeConfig(dir, cfg)
	if err != nil {
		return nil, err
	}
	// Debug logs (-v 1) carry the moment each action is planned, which splits the latency into
	// its phases.
	args := []string{"run", "--config", path, "--kubeconfig", b.c.Kubeconfig, "--listen", "127.0.0.1:0",
		"--leader-elect-namespace", cfg.Warmer.Namespace, "-v", "1"}
	if b.opts.debugDir != "" {
		args = append(args, "--profiling")
	}
	logPath := filepath.Join(b.logDir, strings.ReplaceAll(cfg.Instance, "/", "_")+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	buf := &testutil.LogBuffer{}
	cmd := exec.Command(b.bin, args...)
	cmd.Stderr = io.MultiWriter(buf, f)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &controllerProc{dir: dir, cmd: cmd, stderr: buf, done: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	err = framework.Eventually(ctx, time.Minute, func(context.Context) (bool, error) {
		if m := listenRE.FindStringSubmatch(buf.String()); m != nil {
			p.addr = m[1]
		}
		if p.addr == "" {
			return false, nil
		}
		resp, err := http.Get("http://" + p.addr + "/readyz")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(buf.String(), "leading"), nil
	})
	if err != nil {
		_ = cmd.Process.Kill()
		<-p.done
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("orchestrator not ready: %w\n%s", err, lastLines([]byte(buf.String()), 10))
	}
	return p, nil
}

// requests returns the API requests the orchestrator made so far, by verb (its /metrics); nil
// when they cannot be read.
func (p *controllerProc) requests() map[string]float64 {
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil
	}
	return requestsByVerb(fams["image_prewarmer_api_requests_total"])
}

// requestsByVerb sums image_prewarmer_api_requests_total over its other labels.
func requestsByVerb(mf *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "verb" {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// requestsSince is what a process's request counts grew by since before (nil when unknown).
func requestsSince(before, after map[string]float64) map[string]float64 {
	if before == nil || after == nil {
		return nil
	}
	out := map[string]float64{}
	for verb, n := range after {
		if d := n - before[verb]; d > 0 {
			out[verb] = d
		}
	}
	return out
}

// stop sends SIGTERM and returns the process's peak RSS in KiB (VmHWM, read just before: the
// rusage of a child forked from this large process would count this process's pages).
func (p *controllerProc) stop() int64 {
	var hwm int64
	if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "VmHWM:") {
				_, _ = fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(line, "VmHWM:"), "kB")), &hwm)
			}
		}
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = os.RemoveAll(p.dir)
	return hwm
}

// rssMarker prefixes the peak RSS (KiB) that /usr/bin/time prints when the command exits, and
// cpuMarker its user and system CPU seconds ("<user>/<system>").
const (
	rssMarker = "bench-maxrss-kib="
	cpuMarker = "bench-cpu-seconds="
)

// parseCPU reads the user + system time after cpuMarker, or -1.
func parseCPU(stderr string) time.Duration {
	i := strings.LastIndex(stderr, cpuMarker)
	if i < 0 {
		return -1
	}
	field, _, _ := strings.Cut(stderr[i+len(cpuMarker):], " ")
	user, sys, ok := strings.Cut(field, "/")
	u, err1 := strconv.ParseFloat(user, 64)
	s, err2 := strconv.ParseFloat(sys, 64)
	if !ok || err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration((u + s) * float64(time.Second))
}

// cycleRE matches the phases in the orchestrator's "cycle complete" log line.
var cycleRE = regexp.MustCompile(`msg="cycle complete" .*\bobserve=(\S+) write=(\S+)`)

// parseCycle reads the observe and write phases of the last cycle the orchestrator logged
// (zero when there is none).
func parseCycle(stderr string) (observe, write time.Duration) {
	m := cycleRE.FindAllStringSubmatch(stderr, -1)
	if len(m) == 0 {
		return 0, 0
	}
	last := m[len(m)-1]
	o, err1 := time.ParseDuration(last[1])
	w, err2 := time.ParseDuration(last[2])
	if err1 != nil || err2 != nil {
		return 0, 0
	}
	return o, w
}

func parseRSS(stderr string) int64 {
	i := strings.LastIndex(stderr, rssMarker)
	if i < 0 {
		return 0
	}
	var kib int64
	_, _ = fmt.Sscan(stderr[i+len(rssMarker):], &kib)
	return kib
}

func buildBinary(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "bench-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "prewarm-orchestrator")
	// Built as `make build` and the image build it (stripped: the symbol table alone is about 6 MiB
	// of resident memory).
	built := bin + ".linked"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", built, "./cmd/prewarm-orchestrator")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the orchestrator: %w\n%s", err, out)
	}
	// Run a copy, written as extracting an image layer writes the file. The linker writes its
	// output through a memory map, and a process started from that very file may map it in larger
	// page cache folios: up to 4 MiB more resident file pages for the same bytes, here, from one
	// build to the next.
	if err := copyFile(built, bin); err != nil {
		return "", fmt.Errorf("copying the orchestrator binary: %w", err)
	}
	return bin, os.Remove(built)
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// profile starts a CPU profile of the orchestrator when -debug-dir is set; the returned function
// stops it and writes <scenario>.cpu.pprof.
func (b *bench) profile(p *controllerProc, scenario string) func() {
	if b.opts.debugDir == "" {
		return func() {}
	}
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(done)
		// The first 60 s of the scenario, where the burst is.
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/debug/pprof/profile?seconds=60", nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.log.Warn("CPU profile failed", "error", err)
			return
		}
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil || len(data) == 0 {
			return
		}
		_ = os.WriteFile(filepath.Join(b.opts.debugDir, scenario+".cpu.pprof"), data, 0o644)
	}()
	return func() {
		// pprof ends a profile early only when the client goes away; the partial profile is lost,
		// so wait for the full duration unless the scenario outlives it.
		<-done
		cancel()
	}
}

// apiserverProfile starts a CPU profile of the API server (its /debug/pprof, on by default) that
// lasts d; the returned function waits for it and returns it (nil when it failed).
func (b *bench) apiserverProfile(ctx context.Context, d time.Duration) func() []byte {
	var data []byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		seconds := strconv.Itoa(int(d.Seconds()))
		out, err := b.client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", seconds).Timeout(d + 30*time.Second).DoRaw(ctx)
		if err != nil {
			b.log.Warn("API server CPU profile failed", "error", err)
			return
		}
		data = out
	}()
	return func() []byte {
		<-done
		return data
	}
}

// timeline writes, per node, when the warmer pod was seen Ready and the node seen released.
func (b *bench) timeline(w *watcher, scenario string, names []string) {
	if b.opts.debugDir == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var sb strings.Builder
	sb.WriteString("node,ready_unix_ms,released_unix_ms,latency_ms\n")
	for _, n := range names {
		r, f := w.readyAt[n], w.freeAt[n]
		lat := ""
		if !r.IsZero() && !f.IsZero() {
			lat = fmt.Sprint(f.Sub(r).Milliseconds())
		}
		fmt.Fprintf(&sb, "%s,%d,%d,%s\n", n, r.UnixMilli(), f.UnixMilli(), lat)
	}
	_ = os.WriteFile(filepath.Join(b.opts.debugDir, scenario+".timeline.csv"), []byte(sb.String()), 0o644)
}
