package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func readyPod(since time.Time) *corev1.Pod {
	return &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{
		Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(since),
	}}}}
}

func node(ann map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Annotations: ann}}
}

func TestTransition(t *testing.T) {
	cases := []struct {
		name              string
		node              *corev1.Node
		action            plan.Action
		upgradeCount      int
		upgradeSum        float64
		readyCount        int
		readySum          float64
		transitionLabels  []string
		transitionsWanted float64
	}{
		{
			name:         "warm release of a warming node",
			node:         node(map[string]string{state.Phase: state.PhaseWarming, state.UpgradedAt: state.FormatTime(now.Add(-90 * time.Second))}),
			action:       plan.Action{Type: plan.Release, Reason: state.ReasonWarm, WarmPod: readyPod(now.Add(-2 * time.Second))},
			upgradeCount: 1, upgradeSum: 90, readyCount: 1, readySum: 2,
			transitionLabels: []string{"release", "warm"}, transitionsWanted: 1,
		},
		{
			name:         "upgraded and warm in one cycle",
			node:         node(map[string]string{state.Phase: state.PhaseTainted}),
			action:       plan.Action{Type: plan.Release, Reason: state.ReasonWarm, WarmPod: readyPod(now.Add(-5 * time.Second))},
			upgradeCount: 1, upgradeSum: 0, readyCount: 1, readySum: 5,
			transitionLabels: []string{"release", "warm"}, transitionsWanted: 1,
		},
		{
			name:         "joined tainted with a Ready warmer pod: adopted and released in one cycle",
			node:         node(nil),
			action:       plan.Action{Type: plan.Release, Reason: state.ReasonWarm, WarmPod: readyPod(now.Add(-5 * time.Second))},
			upgradeCount: 1, upgradeSum: 0, readyCount: 1, readySum: 5,
			transitionLabels: []string{"release", "warm"}, transitionsWanted: 1,
		},
		{
			name:             "cancelled before any upgrade: no latency",
			node:             node(map[string]string{state.Phase: state.PhaseTainted}),
			action:           plan.Action{Type: plan.Release, Reason: state.ReasonCancelled},
			transitionLabels: []string{"release", "cancelled"}, transitionsWanted: 1,
		},
		{
			name:             "enter",
			node:             node(nil),
			action:           plan.Action{Type: plan.Enter, Reason: plan.SourceNodeMaintenance},
			transitionLabels: []string{"enter", "nodeMaintenance"}, transitionsWanted: 1,
		},
		{
			name:         "pod Ready clock skew is not negative",
			node:         node(map[string]string{state.Phase: state.PhaseWarming, state.UpgradedAt: state.FormatTime(now)}),
			action:       plan.Action{Type: plan.Release, Reason: state.ReasonWarm, WarmPod: readyPod(now.Add(3 * time.Second))},
			upgradeCount: 1, readyCount: 1, readySum: 0,
			transitionLabels: []string{"release", "warm"}, transitionsWanted: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := New()
			m.Transition(tc.node, tc.action, now)
			assert.Equal(t, tc.transitionsWanted, testutil.ToFloat64(m.transitions.WithLabelValues(tc.transitionLabels...)))
			up := histogram(t, m, "image_prewarmer_upgrade_to_release_seconds")
			assert.Equal(t, tc.upgradeCount, int(up.count))
			assert.InDelta(t, tc.upgradeSum, up.sum, 1e-9)
			ready := histogram(t, m, "image_prewarmer_warmer_ready_to_release_seconds")
			assert.Equal(t, tc.readyCount, int(ready.count))
			assert.InDelta(t, tc.readySum, ready.sum, 1e-9)
		})
	}
}

type hist struct {
	count uint64
	sum   float64
}

func histogram(t *testing.T, m *Metrics, name string) hist {
	t.Helper()
	fams, err := m.Registry.Gather()
	require.NoError(t, err)
	var h hist
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, metric := range f.GetMetric() {
			h.count += metric.GetHistogram().GetSampleCount()
			h.sum += metric.GetHistogram().GetSampleSum()
		}
	}
	return h
}

// series returns the values of a family's series as a scrape reads them (looking a series up by
// its labels would create it), keyed by the value of label.
func series(t *testing.T, m *Metrics, family, label string, match map[string]string) map[string]float64 {
	t.Helper()
	fams, err := m.Registry.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
	series:
		for _, metric := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range metric.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for k, v := range match {
				if labels[k] != v {
					continue series
				}
			}
			out[labels[label]] = metric.GetGauge().GetValue() + metric.GetCounter().GetValue()
		}
	}
	return out
}

// Every phase has a nodes series from the start, and a phase no node is in any more goes back to 0.
func TestSetNodesReportsEveryPhase(t *testing.T) {
	m := New()
	byPhase := func() map[string]float64 { return series(t, m, "image_prewarmer_nodes", "phase", nil) }
	assert.Equal(t, map[string]float64{state.PhaseTainted: 0, state.PhaseWarming: 0}, byPhase(), "every phase, at 0, before the first cycle")
	m.SetNodes(NodeCounts{ByPhase: map[string]int{state.PhaseTainted: 3, state.PhaseWarming: 2}, Pool: 10})
	assert.Equal(t, map[string]float64{state.PhaseTainted: 3, state.PhaseWarming: 2}, byPhase())
	m.SetNodes(NodeCounts{ByPhase: map[string]int{state.PhaseTainted: 1}, Pool: 10})
	assert.Equal(t, map[string]float64{state.PhaseTainted: 1, state.PhaseWarming: 0}, byPhase(), "no node warming any more: back to 0")
	assert.Equal(t, 10.0, testutil.ToFloat64(m.poolNodes))
}

// Every problem reason has a node_problems series from the start, so an alert sees it go from 0;
// a reason no node records any more goes back to 0.
func TestSetNodesReportsEveryProblemReason(t *testing.T) {
	m := New()
	byReason := func() map[string]float64 { return series(t, m, "image_prewarmer_node_problems", "reason", nil) }
	zero := map[string]float64{}
	for _, r := range append(plan.ProblemReasons(), plan.ProblemOther) {
		zero[r] = 0
	}
	require.Contains(t, zero, "ImagePull")
	require.Contains(t, zero, plan.ProblemWarmTimeout)
	assert.Equal(t, zero, byReason(), "every reason, at 0, before the first cycle")

	m.SetNodes(NodeCounts{ByProblem: map[string]int{"ImagePull": 3, plan.ProblemOther: 1}})
	want := maps.Clone(zero)
	want["ImagePull"], want[plan.ProblemOther] = 3, 1
	assert.Equal(t, want, byReason())
	m.SetNodes(NodeCounts{ByProblem: map[string]int{plan.ProblemWarmTimeout: 2}})
	want = maps.Clone(zero)
	want[plan.ProblemWarmTimeout] = 2
	assert.Equal(t, want, byReason(), "the pull problems are gone: back to 0")
}

func TestWrapTransportCountsRequestsAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch {
			w.WriteHeader(http.StatusConflict)
			return
		}
		_, _ = io.WriteString(w, "{}")
	}))
	defer srv.Close()
	m := New()
	client := &http.Client{Transport: m.WrapTransport(http.DefaultTransport)}
	for _, method := range []string{http.MethodGet, http.MethodGet, http.MethodPatch} {
		req, err := http.NewRequest(method, srv.URL, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
	}
	_, err := client.Get("http://127.0.0.1:1/")
	require.Error(t, err)

	assert.Equal(t, 2.0, testutil.ToFloat64(m.apiRequests.WithLabelValues("GET", "200")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.apiRequests.WithLabelValues("PATCH", "409")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.apiRequests.WithLabelValues("GET", "transport")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.apiErrors.WithLabelValues("PATCH", "409")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.apiErrors.WithLabelValues("GET", "transport")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.apiErrors.WithLabelValues("GET", "200")))
}

func TestPush(t *testing.T) {
	var got struct {
		method, path string
		body         string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.method, got.path, got.body = r.Method, r.URL.Path, string(b)
	}))
	defer srv.Close()
	require.True(t, strings.HasPrefix(srv.URL, "http://127.0.0.1:"))
	m := New()
	m.Transition(node(nil), plan.Action{Type: plan.Enter, Reason: plan.SourceCordoned}, now)
	m.SetNodes(NodeCounts{ByPhase: map[string]int{state.PhaseTainted: 1}, Pool: 1})
	m.ObserveCycle("once", time.Second, true, now)
	require.NoError(t, m.Push(context.Background(), srv.URL, "prewarm-system/prewarm"))
	assert.Equal(t, http.MethodPut, got.method)
	// A grouping value with a slash is base64-encoded by the push client.
	assert.Equal(t, "/metrics/job/image-prewarmer/instance@base64/cHJld2FybS1zeXN0ZW0vcHJld2FybQ", got.path)
	assert.Contains(t, got.body, "image_prewarmer_transitions_total")

	srv.Close()
	err := m.Push(context.Background(), srv.URL, "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pushing metrics to "+srv.URL)
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics
	m.Transition(node(nil), plan.Action{Type: plan.Release}, now)
	m.SetNodes(NodeCounts{})
	m.ObserveCycle("once", time.Second, true, now)
	m.SetLeader(true)
	assert.NoError(t, m.Push(context.Background(), "http://127.0.0.1:1", "x"))
	rt := roundTripper(func(*http.Request) (*http.Response, error) { return nil, errors.New("x") })
	assert.NotNil(t, m.WrapTransport(rt))
}

type pushed struct {
	method string
	// names are the metric families pushed, with the value of each unlabelled gauge.
	names map[string]float64
}

// decodePush decodes a pushed body. It runs in the stand-in's handler, off the test's
// goroutine: a body that does not decode fails the test (assert) and ends the decoding.
func decodePush(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	names := map[string]float64{}
	dec := expfmt.NewDecoder(bytes.NewReader(body), expfmt.NewFormat(expfmt.TypeProtoDelim))
	for {
		var mf dto.MetricFamily
		err := dec.Decode(&mf)
		if errors.Is(err, io.EOF) || !assert.NoError(t, err, "decoding a pushed body") {
			return names
		}
		names[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
	}
}

func pushgateway(t *testing.T) (*httptest.Server, *[]pushed) {
	t.Helper()
	var got []pushed
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = append(got, pushed{method: r.Method, names: decodePush(t, b)})
	}))
	t.Cleanup(srv.Close)
	return srv, &got
}

func TestPushAfterCompleteCycleReplacesTheGroup(t *testing.T) {
	srv, got := pushgateway(t)
	m := New()
	m.SetNodes(NodeCounts{ByPhase: map[string]int{state.PhaseTainted: 2}, Pool: 5})
	m.ObserveCycle("once", time.Second, true, now)
	require.NoError(t, m.Push(context.Background(), srv.URL, "x"))
	require.Len(t, *got, 1)
	assert.Equal(t, http.MethodPut, (*got)[0].method, "a complete cycle replaces the whole group: no stale series")
	for _, name := range []string{"image_prewarmer_nodes", "image_prewarmer_node_problems", "image_prewarmer_pool_nodes", "image_prewarmer_last_success_timestamp_seconds"} {
		assert.Contains(t, (*got)[0].names, name)
	}
}

func TestPushAfterFailedCycleKeepsTheLastKnownValues(t *testing.T) {
	cases := []struct {
		name      string
		setNodes  bool
		ok        bool
		withheld  []string
		preserved []string
	}{
		{
			name: "observe failed: node counts and last success unknown", ok: false,
			withheld:  []string{"image_prewarmer_nodes", "image_prewarmer_node_problems", "image_prewarmer_pool_nodes", "image_prewarmer_last_success_timestamp_seconds"},
			preserved: []string{"image_prewarmer_reconcile_duration_seconds", "image_prewarmer_build_info"},
		},
		{
			name: "a write failed: counts known, no success", setNodes: true, ok: false,
			withheld:  []string{"image_prewarmer_last_success_timestamp_seconds"},
			preserved: []string{"image_prewarmer_nodes", "image_prewarmer_node_problems", "image_prewarmer_pool_nodes", "image_prewarmer_reconcile_duration_seconds"},
		},
		{
			name: "dry run: no counts", ok: true,
			withheld:  []string{"image_prewarmer_nodes", "image_prewarmer_node_problems", "image_prewarmer_pool_nodes"},
			preserved: []string{"image_prewarmer_last_success_timestamp_seconds"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, got := pushgateway(t)
			m := New()
			if tc.setNodes {
				m.SetNodes(NodeCounts{ByPhase: map[string]int{state.PhaseTainted: 2}, Pool: 5})
			}
			m.ObserveCycle("once", time.Second, tc.ok, now)
			require.NoError(t, m.Push(context.Background(), srv.URL, "x"))
			require.Len(t, *got, 1)
			// POST replaces only the metric names pushed: what this run does not know keeps
			// the value the last run that knew it pushed, instead of a 0 that is not true.
			assert.Equal(t, http.MethodPost, (*got)[0].method)
			for _, name := range tc.withheld {
				assert.NotContains(t, (*got)[0].names, name, "%s is not pushed as 0", name)
			}
			for _, name := range tc.preserved {
				assert.Contains(t, (*got)[0].names, name)
			}
		})
	}
}

func TestPushGivesUpOnAPushgatewayThatDoesNotAnswer(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	old := pushTimeout
	pushTimeout = 100 * time.Millisecond
	defer func() { pushTimeout = old }()

	done := make(chan error, 1)
	go func() { done <- New().Push(context.Background(), srv.URL, "x") }()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Push still waiting for the Pushgateway: a CronJob run would hang until its deadline")
	}
}

// increase() sees nothing when a series appears with its first value, so the documented alert
// on timeout releases would miss the first one after each start (or each CronJob push) unless
// the release series exist at 0 from the start.
func TestReleaseSeriesStartAtZero(t *testing.T) {
	got := series(t, New(), "image_prewarmer_transitions_total", "reason", map[string]string{"type": "release"})
	want := map[string]float64{}
	for _, r := range []string{state.ReasonWarm, state.ReasonCancelled, state.ReasonTimeout, state.ReasonExternal, state.ReasonLeftPool, state.ReasonCleanup} {
		want[r] = 0
	}
	assert.Equal(t, want, got, "transitions_total{type=release} exported at 0 for every reason before the first such release")
}
