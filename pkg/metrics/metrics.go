// Package metrics holds the orchestrator's Prometheus metrics, on a registry of its own (no
// global default registry): served on /metrics in event-driven mode, pushed to a Pushgateway
// after the cycle in CronJob mode.
//
// Every method is safe on a nil *Metrics, so library code records unconditionally and callers
// that want no metrics pass nil.
package metrics

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/pkg/version"
)

// Namespace prefixes every metric name.
const Namespace = "image_prewarmer"

// Phases reported by the nodes gauge.
var Phases = []string{state.PhaseTainted, state.PhaseWarming}

// ReleaseReasons are the release reasons whose transitions_total series are exported at 0
// before the first such release.
var ReleaseReasons = []string{state.ReasonWarm, state.ReasonCancelled, state.ReasonTimeout,
	state.ReasonExternal, state.ReasonLeftPool, state.ReasonCleanup}

// Metrics are the orchestrator's collectors and the registry that holds them.
type Metrics struct {
	Registry *prometheus.Registry

	nodes            *prometheus.GaugeVec
	nodeProblems     *prometheus.GaugeVec
	poolNodes        prometheus.Gauge
	transitions      *prometheus.CounterVec
	upgradeToRelease *prometheus.HistogramVec
	readyToRelease   prometheus.Histogram
	cycleDuration    *prometheus.HistogramVec
	apiErrors        *prometheus.CounterVec
	apiRequests      *prometheus.CounterVec
	leader           prometheus.Gauge
	lastSuccess      prometheus.Gauge
	lastSucceeded    prometheus.Gauge

	// nodesSet and succeeded say whether the node gauges and lastSuccess hold values of this
	// process (a push must not report 0 for what a failed or dry-run cycle never counted).
	nodesSet, succeeded atomic.Bool
}

// Names of the families a push leaves out when this process has no value for them.
var (
	nodeFamilies        = []string{Namespace + "_nodes", Namespace + "_node_problems", Namespace + "_pool_nodes"}
	lastSuccessFamilies = []string{Namespace + "_last_success_timestamp_seconds"}
)

// pushTimeout bounds a push: a Pushgateway that does not answer must not hold a CronJob run
// (and, with concurrencyPolicy Forbid, the runs after it) until the Job's deadline.
var pushTimeout = 30 * time.Second

// New returns the metrics registered on a new registry, with Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		nodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "nodes",
			Help: "Nodes managed by this installation, by phase (tainted: waiting for the upgrade; warming: waiting for the warmer pod).",
		}, []string{"phase"}),
		nodeProblems: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "node_problems",
			Help: "Managed nodes whose last-error records a problem (a warmer pod that cannot pull or start, is unschedulable or missed maxWaitForWarm with onWarmTimeout keep; an upgrade rule that failed), by its reason. A warmer pod's problem counts until the node is released, even once it has passed; an upgrade rule error until the rule evaluates on the node again.",
		}, []string{"reason"}),
		poolNodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "pool_nodes",
			Help: "Nodes matching the pool selector.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "transitions_total",
			Help: "Node transitions written, by type (enter, adopt, upgraded, release, record) and reason (release reason for release).",
		}, []string{"type", "reason"}),
		upgradeToRelease: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "upgrade_to_release_seconds",
			Help:    "Seconds from the upgrade being seen (upgraded-at; 0 when seen and released in one cycle) to the node's release, by release reason. Node timestamps have a resolution of one second.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400},
		}, []string{"reason"}),
		readyToRelease: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "warmer_ready_to_release_seconds",
			Help:    "Seconds from the warmer pod's PodReady lastTransitionTime to the warm release of its node. The API records that time to the second.",
			Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600},
		}),
		cycleDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "reconcile_duration_seconds",
			Help:    "Duration of one reconcile: observe (list calls in CronJob mode, informer caches in event-driven mode), plan and apply.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"mode"}),
		apiErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "api_errors_total",
			Help: "Kubernetes API requests that failed, by verb and HTTP status code (\"transport\" when no response arrived). Conflicts (409) are retried; a missing optional resource answers 404.",
		}, []string{"verb", "code"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "api_requests_total",
			Help: "Kubernetes API requests made (including watches and leader election), by verb and HTTP status code (\"transport\" when no response arrived).",
		}, []string{"verb", "code"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "leader",
			Help: "1 while this process is the leader (event-driven mode) and reconciles, 0 otherwise.",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "last_success_timestamp_seconds",
			Help: "Unix time of the last reconcile that completed without error (event-driven mode: of the whole pool, with the maintenance source read and no node's write failing).",
		}),
		lastSucceeded: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "last_reconcile_succeeded",
			Help: "1 if this process's last reconcile completed without error, else 0 (also before its first, and for a run --once that did not get the Lease and ran none). A CronJob run pushes it: whether the last run completed, with no clock to compare.",
		}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help: "Always 1; the labels carry the orchestrator's version, commit and Go version.",
	}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(version.Version, version.Commit, runtime.Version()).Set(1)

	m.Registry.MustRegister(m.nodes, m.nodeProblems, m.poolNodes, m.transitions, m.upgradeToRelease, m.readyToRelease,
		m.cycleDuration, m.apiErrors, m.apiRequests, m.leader, m.lastSuccess, m.lastSucceeded, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, p := range Phases {
		m.nodes.WithLabelValues(p).Set(0)
	}
	for _, r := range plan.ProblemReasons() {
		m.nodeProblems.WithLabelValues(r).Set(0)
	}
	m.nodeProblems.WithLabelValues(plan.ProblemOther).Set(0)
	// Release series exist from the start, so that increase() counts the first release of each
	// reason (a series that appears with the value 1 shows no increase).
	for _, r := range ReleaseReasons {
		m.transitions.WithLabelValues(string(plan.Release), r)
	}
	return m
}

// Transition records an action that was written to its node at now.
func (m *Metrics) Transition(node *corev1.Node, a plan.Action, now time.Time) {
	if m == nil {
		return
	}
	m.transitions.WithLabelValues(string(a.Type), a.Reason).Inc()
	if a.Type != plan.Release || node == nil {
		return
	}
	if upgradedAt, ok := state.Time(node, state.UpgradedAt); ok {
		m.upgradeToRelease.WithLabelValues(a.Reason).Observe(nonNegative(now.Sub(upgradedAt)))
	} else if phase := state.PhaseOf(node); a.Reason == state.ReasonWarm && (phase == state.PhaseTainted || phase == "") {
		// Upgrade seen and warm in the same cycle, or a node that joined tainted adopted and
		// released at once (an adoption counts as the upgrade seen).
		m.upgradeToRelease.WithLabelValues(a.Reason).Observe(0)
	}
	if a.WarmPod != nil {
		if readyAt, ok := PodReadySince(a.WarmPod); ok {
			m.readyToRelease.Observe(nonNegative(now.Sub(readyAt)))
		}
	}
}

// NodeCounts are the values of the node gauges.
type NodeCounts struct {
	// ByPhase counts the managed nodes by phase.
	ByPhase map[string]int
	// ByProblem counts the managed nodes by the reason of the problem their last-error records
	// (plan.RecordedProblem).
	ByProblem map[string]int
	// Pool counts the nodes matching the pool selector.
	Pool int
}

// SetNodes sets the phase, problem and pool gauges.
func (m *Metrics) SetNodes(c NodeCounts) {
	if m == nil {
		return
	}
	for _, p := range Phases {
		m.nodes.WithLabelValues(p).Set(float64(c.ByPhase[p]))
	}
	for _, r := range append(plan.ProblemReasons(), plan.ProblemOther) {
		m.nodeProblems.WithLabelValues(r).Set(float64(c.ByProblem[r]))
	}
	m.poolNodes.Set(float64(c.Pool))
	m.nodesSet.Store(true)
}

// ObserveCycle records the duration of one reconcile in mode ("once" or "watch"), whether it
// succeeded, and its completion time when it did.
func (m *Metrics) ObserveCycle(mode string, took time.Duration, ok bool, now time.Time) {
	if m == nil {
		return
	}
	m.cycleDuration.WithLabelValues(mode).Observe(took.Seconds())
	if ok {
		m.lastSuccess.Set(float64(now.Unix()))
		m.lastSucceeded.Set(1)
		m.succeeded.Store(true)
	} else {
		m.lastSucceeded.Set(0)
	}
}

// SetLeader reports whether this process leads.
func (m *Metrics) SetLeader(leading bool) {
	if m == nil {
		return
	}
	if leading {
		m.leader.Set(1)
	} else {
		m.leader.Set(0)
	}
}

// WrapTransport counts API requests and failed ones; use it with rest.Config.Wrap.
func (m *Metrics) WrapTransport(rt http.RoundTripper) http.RoundTripper {
	if m == nil {
		return rt
	}
	return roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		code := "transport"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		m.apiRequests.WithLabelValues(req.Method, code).Inc()
		if err != nil || resp.StatusCode >= 400 {
			m.apiErrors.WithLabelValues(req.Method, code).Inc()
		}
		return resp, err
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// PodReadySince returns the lastTransitionTime of the pod's PodReady condition when it is True.
func PodReadySince(pod *corev1.Pod) (time.Time, bool) {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime.Time, true
		}
	}
	return time.Time{}, false
}

func nonNegative(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

// Push sends this installation's metrics to a Prometheus Pushgateway (job "image-prewarmer",
// grouped by instance), as a CronJob run does after its cycle, giving up after pushTimeout.
//
// After a cycle that completed and counted the nodes, the push replaces the whole group (PUT),
// so no series of an earlier run lingers. Otherwise (the cycle failed, or a dry run counted
// nothing) it replaces only the families it has values for (POST): the node gauges and the last
// success time keep what the last run that knew them pushed, rather than drop to 0.
func (m *Metrics) Push(ctx context.Context, url, instance string) error {
	if m == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	var withheld []string
	if !m.nodesSet.Load() {
		withheld = append(withheld, nodeFamilies...)
	}
	if !m.succeeded.Load() {
		withheld = append(withheld, lastSuccessFamilies...)
	}
	p := push.New(url, "image-prewarmer").Grouping("instance", instance)
	var err error
	if len(withheld) == 0 {
		err = p.Gatherer(m.Registry).PushContext(ctx)
	} else {
		err = p.Gatherer(without(m.Registry, withheld)).AddContext(ctx)
	}
	if err != nil {
		return fmt.Errorf("pushing metrics to %s: %w", url, err)
	}
	return nil
}

// without returns g's families except those named.
func without(g prometheus.Gatherer, names []string) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		fams, err := g.Gather()
		out := fams[:0]
		for _, f := range fams {
			if !slices.Contains(names, f.GetName()) {
				out = append(out, f)
			}
		}
		return out, err
	})
}
