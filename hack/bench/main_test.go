package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
)

func TestPhasesFromLog(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC)
	log := `time=2026-11-25T15:00:00.010Z level=DEBUG msg=planned node=n1 action=adopt reason=joined-tainted
time=2026-11-25T15:00:00.020Z level=INFO msg=adopt node=n1 reason=joined-tainted message="x"
time=2026-11-25T15:00:01.005Z level=DEBUG msg=planned node=n1 action=release reason=warm
time=2026-11-25T15:00:01.030Z level=INFO msg=release node=n1 reason=warm message="warmer pod w is Ready"
time=2026-11-25T15:00:01.100Z level=DEBUG msg=planned node=n2 action=release reason=warm
time=2026-11-25T15:00:01.150Z level=INFO msg=release node=n2 reason=warm message="y"
`
	path := filepath.Join(t.TempDir(), "log")
	require.NoError(t, os.WriteFile(path, []byte(log), 0o600))
	w := &watcher{
		readyAt: map[string]time.Time{"n1": t0.Add(time.Second), "n2": t0.Add(1110 * time.Millisecond), "n3": t0},
		freeAt:  map[string]time.Time{"n1": t0.Add(1032 * time.Millisecond), "n2": t0.Add(1160 * time.Millisecond)},
	}
	got := w.phases(path, []string{"n1", "n2", "n3"})
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{-10 * ms, 5 * ms}, got[0], "reaction: ready seen -> planned (n2's pod event reached the orchestrator first)")
	assert.Equal(t, []time.Duration{25 * ms, 50 * ms}, got[1], "write: planned -> patch returned")
	assert.Equal(t, []time.Duration{2 * ms, 10 * ms}, got[2], "delivery: returned -> seen released")
}

func TestPercentile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	assert.Equal(t, time.Duration(50), percentile(s, 50))
	assert.Equal(t, time.Duration(99), percentile(s, 99))
	assert.Equal(t, time.Duration(100), percentile(s, 100))
	assert.Equal(t, time.Duration(0), percentile(nil, 99))
}

func TestNodeWatchersClosedIn(t *testing.T) {
	metrics := `# HELP apiserver_terminated_watchers_total [ALPHA] Counter of watchers closed due to unresponsiveness broken by resource type.
# TYPE apiserver_terminated_watchers_total counter
apiserver_terminated_watchers_total{group="",resource="pods"} 3
apiserver_terminated_watchers_total{group="",resource="nodes"} 87
apiserver_terminated_watchers_total{group="storage.k8s.io",resource="nodes"} 5
`
	assert.Equal(t, 87.0, nodeWatchersClosedIn([]byte(metrics)), "the core group's nodes series only")
	assert.Equal(t, 0.0, nodeWatchersClosedIn([]byte("# TYPE up gauge\nup 1\n")), "no watch closed yet: no series")
	assert.Equal(t, -1.0, nodeWatchersClosedIn([]byte("not { metrics")), "unparsable")
	assert.Equal(t, 12.0, countSince(75, 87))
	assert.Equal(t, -1.0, countSince(-1, 87), "a reading that failed makes the difference unknown")
}

func TestJoinVerdicts(t *testing.T) {
	// samples whose p99 is d: 100 samples, the 99th of them d.
	withP99 := func(d time.Duration) []time.Duration {
		s := make([]time.Duration, 100)
		for i := range s {
			s[i] = time.Millisecond
		}
		s[98], s[99] = d, d+time.Second
		return s
	}
	slow, fast := paced, clientSetting{qps: -1, burst: 100}
	rows := []latencyRow{
		{scenario: "100 nodes join tainted at once (adopt)", client: slow, nodes: 100, samples: withP99(time.Second)},
		{scenario: "1000 nodes join tainted at once (adopt), run 1 of 3", client: slow, nodes: 1000, samples: withP99(90 * time.Millisecond)},
		{scenario: "1000 nodes join tainted at once (adopt), run 2 of 3", client: slow, nodes: 1000, samples: withP99(300 * time.Millisecond)},
		{scenario: "1000 nodes join tainted at once (adopt), run 3 of 3", client: slow, nodes: 1000, samples: withP99(120 * time.Millisecond)},
		{scenario: "100 nodes of a 1000-node pool go through the upgrade", client: slow, nodes: 100, samples: withP99(time.Second)},
		{scenario: "1000 nodes join tainted at once (adopt)", client: fast, nodes: 1000, samples: withP99(80 * time.Millisecond)},
	}
	assert.Equal(t, []string{
		"- Target p99 <= 100 ms at 1000 nodes joining (default: qps 50, burst 100): **met in 1 of 3 runs** (p99 90.0 ms, 300.0 ms, 120.0 ms; median 120.0 ms).",
		"- Target p99 <= 100 ms at 1000 nodes joining (qps -1, no client-side limit): met (p99 80.0 ms).",
	}, joinVerdicts(rows))

	rows[5].samples = withP99(101 * time.Millisecond)
	assert.Equal(t, "- Target p99 <= 100 ms at 1000 nodes joining (qps -1, no client-side limit): **missed** (p99 101.0 ms).", joinVerdicts(rows)[1])
}

func TestClientSettingNamesTheDefault(t *testing.T) {
	unlimited := clientSetting{qps: -1, burst: 100}
	assert.Equal(t, "default: qps 50, burst 100", paced.String(), "the event-driven default")
	assert.Equal(t, "qps 50, burst 10", clientSetting{qps: 50, burst: 10}.String())
	assert.Equal(t, "qps -1, no client-side limit", unlimited.String())
	assert.Equal(t, "default: qps -1, no client-side limit", unlimited.label(false), "the one-shot default")
	assert.Equal(t, "default: qps -1, no client-side limit", clientSetting{qps: -1, burst: 7}.label(false), "burst is unused without a limit")
	assert.Equal(t, "qps 50, burst 100", paced.label(false))

	cfg := config.Default()
	paced.apply(cfg)
	assert.Equal(t, float32(50), cfg.Client.QPSFor(false), "an explicit setting applies in both modes")
	assert.Equal(t, 100, cfg.Client.Burst)
}

func TestRequestsByVerb(t *testing.T) {
	verb := func(v, code string, n float64) *dto.Metric {
		return &dto.Metric{
			Label:   []*dto.LabelPair{{Name: ptr("verb"), Value: ptr(v)}, {Name: ptr("code"), Value: ptr(code)}},
			Counter: &dto.Counter{Value: &n},
		}
	}
	before := requestsByVerb(&dto.MetricFamily{Metric: []*dto.Metric{verb("PATCH", "200", 10), verb("GET", "200", 4)}})
	after := requestsByVerb(&dto.MetricFamily{Metric: []*dto.Metric{
		verb("PATCH", "200", 30), verb("PATCH", "409", 2), verb("GET", "200", 4), verb("WATCH", "200", 3),
	}})
	assert.Equal(t, map[string]float64{"PATCH": 32, "GET": 4, "WATCH": 3}, after, "summed over codes")
	since := requestsSince(before, after)
	assert.Equal(t, map[string]float64{"PATCH": 22, "WATCH": 3}, since)
	assert.Equal(t, "25 (PATCH 22, WATCH 3)", verbs(since))
	assert.Equal(t, "-", verbs(requestsSince(nil, after)), "unknown when the process could not be read")
}

func ptr[T any](v T) *T { return &v }

func TestParseStatCPU(t *testing.T) {
	// A command name with a space and a parenthesis: fields are counted from the last ')'.
	stat := []byte("4242 (kube (odd) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 12 0 100 0 0\n")
	got, ok := parseStatCPU(stat)
	require.True(t, ok)
	assert.Equal(t, 3250*time.Millisecond, got, "utime 250 + stime 75 ticks at 100 a second")
	_, ok = parseStatCPU([]byte("4242 (truncated"))
	assert.False(t, ok)
	_, ok = parseStatCPU([]byte("4242 (x) S 1 2"))
	assert.False(t, ok)
}

func TestCPUComponent(t *testing.T) {
	assert.Equal(t, "kube-apiserver", component("/root/.cache/kwok/clusters/b/bin/kube-apiserver-v1.36.3"))
	assert.Equal(t, "kwok", component("/usr/local/bin/kwok"))
	assert.Equal(t, "etcd", component("etcd"))
	assert.Empty(t, component("/usr/local/bin/kwokctl"), "kwokctl is not a cluster component")
	assert.Empty(t, component("/bin/bash"))
}

func TestCPUSince(t *testing.T) {
	before := cpuSample{"etcd": time.Second, "kwok": 2 * time.Second, "gone": time.Second}
	after := cpuSample{"etcd": 3 * time.Second, "kwok": 2 * time.Second, "new": time.Second}
	assert.Equal(t, cpuSample{"etcd": 2 * time.Second, "kwok": 0}, after.since(before))
}

func TestCPUNowReadsThisProcess(t *testing.T) {
	s := cpuNow("", 0)
	_, ok := s["benchmark"]
	assert.True(t, ok, "this process's own CPU time")
	assert.NotContains(t, s, "orchestrator")
}

func TestLatenciesByReady(t *testing.T) {
	start := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	w := &watcher{readyAt: map[string]time.Time{}, freeAt: map[string]time.Time{}}
	add := func(name string, ready, latency time.Duration) {
		w.readyAt[name] = start.Add(ready)
		w.freeAt[name] = start.Add(ready + latency)
	}
	add("a", time.Second, 300*time.Millisecond)
	add("b", 4*time.Second, 100*time.Millisecond)
	add("c", 5*time.Second, 50*time.Millisecond) // a bound starts the next window
	add("d", 19*time.Second, 20*time.Millisecond)
	add("e", time.Minute, 7*time.Millisecond)
	w.readyAt["never-released"] = start
	got := w.latenciesByReady([]string{"a", "b", "c", "d", "e", "never-released", "unknown"}, start, readyWindows)
	assert.Equal(t, [][]time.Duration{
		{100 * time.Millisecond, 300 * time.Millisecond},
		{20 * time.Millisecond, 50 * time.Millisecond},
		{7 * time.Millisecond},
	}, got)
}

func TestScheduleAlternatesClientSettings(t *testing.T) {
	a, b := paced, clientSetting{qps: -1, burst: 100}
	type s struct {
		nodes   int
		client  clientSetting
		run     int
		upgrade bool
	}
	var got []s
	for _, st := range schedule([]int{100, 1000}, []clientSetting{a, b}, 3, true) {
		assert.Equal(t, map[int]int{100: 1, 1000: 3}[st.nodes], st.runs)
		got = append(got, s{st.nodes, st.client, st.run, st.upgrade})
	}
	assert.Equal(t, []s{
		{100, a, 1, false}, {100, b, 1, false},
		{1000, a, 1, false}, {1000, b, 1, false},
		{1000, b, 2, false}, {1000, a, 2, false},
		{1000, a, 3, true}, {1000, b, 3, true},
	}, got)

	one := schedule([]int{1000}, []clientSetting{a}, 0, false)
	require.Len(t, one, 1, "at least one run")
	assert.Equal(t, step{nodes: 1000, client: a, run: 1, runs: 1}, one[0])
	assert.Empty(t, schedule(nil, []clientSetting{a}, 3, true))
}

func TestLeaseWritesIn(t *testing.T) {
	text := `# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 120
apiserver_request_total{code="409",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="PUT",version="v1"} 3
apiserver_request_total{code="200",component="apiserver",dry_run="",group="coordination.k8s.io",resource="leases",scope="resource",subresource="",verb="GET",version="v1"} 50
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="nodes",scope="resource",subresource="",verb="PUT",version="v1"} 7
`
	assert.Equal(t, 123.0, leaseWritesIn([]byte(text)), "every code of PUT leases, nothing else")
	assert.Equal(t, 0.0, leaseWritesIn([]byte("# TYPE apiserver_request_total counter\n")))
	assert.Equal(t, -1.0, leaseWritesIn([]byte("not{ metrics")))
}

func TestParseOnceOutput(t *testing.T) {
	stderr := `time=2026-11-26T05:31:44.576Z level=INFO msg="cycle complete" actions=500 entered=500 adopted=0 duration=2.197s observe=752ms write=1.437s events=0s
` + cpuMarker + "0.45/0.08 " + rssMarker + "59676\n"
	assert.Equal(t, 530*time.Millisecond, parseCPU(stderr))
	assert.Equal(t, int64(59676), parseRSS(stderr))
	observe, write := parseCycle(stderr)
	assert.Equal(t, 752*time.Millisecond, observe)
	assert.Equal(t, 1437*time.Millisecond, write)

	assert.Equal(t, time.Duration(-1), parseCPU("no marker"))
	assert.Equal(t, time.Duration(-1), parseCPU(cpuMarker+"x/0.1"))
	observe, write = parseCycle(`msg="cycle failed" error=boom`)
	assert.Zero(t, observe)
	assert.Zero(t, write)
}

func TestFirstCycleIsTheLargestDefaultEntry(t *testing.T) {
	b := &bench{once: []onceRow{
		{pool: 1000, actions: 100, client: "default: qps -1", wall: 1},
		{pool: 5000, actions: 500, client: "default: qps -1", wall: 9},
		{pool: 5000, actions: 0, client: "default: qps -1", wall: 3},
		{pool: 5000, actions: 500, client: "default: qps -1", wall: 2},
		{pool: 5000, actions: 500, client: "default: qps -1", wall: 5},
		{pool: 5000, actions: 500, client: "qps 50, burst 100", wall: 4},
	}}
	r, ok := b.firstCycle()
	require.True(t, ok)
	assert.Equal(t, time.Duration(5), r.wall, "the median of the three default first cycles at 5000")
	_, ok = (&bench{}).firstCycle()
	assert.False(t, ok)
}

func TestLeaseLine(t *testing.T) {
	s := time.Second
	row := func(wall time.Duration, leases float64) onceRow {
		return onceRow{pool: 5000, wall: wall, leaseWrites: leases, cpu: cpuSample{"kube-apiserver": wall}}
	}
	assert.Equal(t, "Lease renewals the first cycles at 5000 nodes had, the slower the more: 2s with 0 (API server 2.00 s of CPU), 3s with 300 (API server 3.00 s of CPU).",
		leaseLine([]onceRow{row(2*s, 0), row(3*s, 300)}))
	assert.Equal(t, "Lease renewals the first cycles at 5000 nodes had: 2s with 300 (API server 2.00 s of CPU), 3s with 0 (API server 3.00 s of CPU).",
		leaseLine([]onceRow{row(2*s, 300), row(3*s, 0)}), "no claim the data does not show")
	assert.Empty(t, leaseLine([]onceRow{row(2*s, 0)}))
	assert.Empty(t, leaseLine([]onceRow{row(2*s, 0), row(3*s, -1)}), "unknown counts")
}

func TestOnceVerdicts(t *testing.T) {
	s := time.Second
	rows := []onceRow{
		{pool: 1000, cycle: "first (enters 10%), run 1 of 3", client: "default", wall: 3 * s},
		{pool: 5000, cycle: "first (enters 10%), run 1 of 3", client: "default", wall: 2100 * time.Millisecond, rssKiB: 60 << 10},
		{pool: 5000, cycle: "steady (no change)", client: "default", wall: s / 2, rssKiB: 60 << 10},
		{pool: 5000, cycle: "first (enters 10%), run 2 of 3", client: "default", wall: 1900 * time.Millisecond, rssKiB: 70 << 10},
		{pool: 5000, cycle: "first (enters 10%), run 3 of 3", client: "default", wall: 2 * s, rssKiB: 60 << 10},
		{pool: 5000, cycle: "first (enters 10%)", client: "qps 50", wall: 9 * s, rssKiB: 60 << 10},
	}
	assert.Equal(t, []string{
		"- 5000 nodes, first (enters 10%), default: wall <= 2 s **met in 2 of 3 runs** (2.1s, 1.9s, 2s); RSS <= 64 MiB **met in 2 of 3 runs** (60.0 MiB, 70.0 MiB, 60.0 MiB).",
		"- 5000 nodes, steady (no change), default: wall <= 2 s met (500ms); RSS <= 64 MiB met (60.0 MiB).",
		"- 5000 nodes, first (enters 10%), qps 50: wall <= 2 s **missed** (9s); RSS <= 64 MiB met (60.0 MiB).",
	}, onceVerdicts(rows))
}

func TestCPUHeader(t *testing.T) {
	got := cpuHeader("| pool | cycle |", "all | wall |")
	assert.Equal(t, "| pool | cycle | kube-apiserver | etcd | kube-controller-manager | kube-scheduler | kwok | orchestrator | benchmark | all | wall |\n"+
		"|---|---|---|---|---|---|---|---|---|---|---|", got)
}

// The report states the heartbeat rate the cluster runs with, and how far it is from kubelets'.
func TestLeaseRate(t *testing.T) {
	assert.Equal(t, "", leaseRate(0), "unknown: nothing said")
	assert.Equal(t, "kwok renews each node's Lease every 10s (a quarter of its 40s duration, as a kubelet does).", leaseRate(40*time.Second))
	assert.Contains(t, leaseRate(200*time.Second), "every 50s")
	assert.Contains(t, leaseRate(200*time.Second), "real kubelets would send 5 times as many renewals")
	assert.Contains(t, leaseRate(60*time.Second), "would send 1.5 times")
}

// The TTL the benchmark gives a grown pool's nodes is kube-controller-manager's for that size.
func TestTTLFor(t *testing.T) {
	for nodes, want := range map[int]int{0: 0, 100: 0, 101: 15, 500: 15, 501: 30, 1000: 30, 1001: 60, 2000: 60, 2001: 300, 6000: 300} {
		assert.Equal(t, want, ttlFor(nodes), "%d nodes", nodes)
	}
}

// The run --once rows need GNU time: without it the benchmark stops before the latency runs,
// whose results would otherwise be lost with the report written at the end.
func TestCheckTime(t *testing.T) {
	dir := t.TempDir()
	script := func(name, body string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
		return p
	}
	defer func(old string) { timeCommand = old }(timeCommand)

	// GNU time writes the format to stderr after the command's own output.
	timeCommand = script("gnu", `shift; printf '%s' "$1" | sed 's/%M$/1024/' >&2`)
	require.NoError(t, checkTime(context.Background()))

	for name, p := range map[string]string{
		"no such command":    filepath.Join(dir, "missing"),
		"busybox time":       script("busybox", `echo "time: unrecognized option '-f'" >&2; exit 1`),
		"ignores its format": script("posix", "exit 0"),
	} {
		timeCommand = p
		err := checkTime(context.Background())
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), "apt-get install -y time", name)
	}
}
