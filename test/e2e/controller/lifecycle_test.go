package controller_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	dto "github.com/prometheus/client_model/go"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// Nodes deleted while the controller manages them, one `tainted` and one `warming` (its warmer
// pod still pulling): the controller forgets them. It keeps running, ready and leading, logs no
// error, does not keep logging about them, counts them no longer in the nodes-by-phase and pool
// gauges, records no release for them, and the remaining node goes through the whole lifecycle
// to a warm release.
func TestDeletedNodeIsForgotten(t *testing.T) {
	e := newEnv(t)
	// Every warmer pod becomes Ready 20s after it lands on its node, which holds the rebooted
	// nodes in `warming` long enough to delete one of them there.
	e.Images = []string{"registry.example.com/notebook/base:slow-pull-20s"}
	e.PoolNode("gone-tainted")
	e.PoolNode("gone-warming")
	e.PoolNode("stays")
	e.Warmer()
	p := e.startProcess("orchestrator-0")
	e.waitLeaderReady(p)

	for _, n := range []string{"gone-tainted", "gone-warming", "stays"} {
		e.Maintenance(n)
	}
	for _, n := range []string{"gone-tainted", "gone-warming", "stays"} {
		e.waitPhase(n, state.PhaseTainted)
	}
	e.waitGauges(p, 3, 0, 3)

	// Deleted while tainted.
	require.NoError(t, cluster.DeleteNode(e.Ctx, e.NodeName("gone-tainted")))
	e.waitGauges(p, 2, 0, 2)

	// Deleted while warming: upgraded, its warmer pod not Ready yet.
	e.Reboot("gone-warming", newKernel)
	e.Reboot("stays", newKernel)
	e.waitPhase("gone-warming", state.PhaseWarming)
	e.waitPhase("stays", state.PhaseWarming)
	e.waitGauges(p, 0, 2, 2)
	require.NoError(t, cluster.DeleteNode(e.Ctx, e.NodeName("gone-warming")))
	e.waitGauges(p, 0, 1, 1)
	require.Equal(t, state.PhaseWarming, e.Node("stays").Annotations[state.Phase],
		"the remaining node is still warming when the gauge counts one warming node")

	// The remaining node is released once its warmer pod is Ready.
	e.waitReleasedByWarmer("stays")
	e.waitGauges(p, 0, 0, 1)

	mf := p.scrape(t)
	var releases float64
	for _, m := range mf["image_prewarmer_transitions_total"].GetMetric() {
		if labelValue(m, "type") == "release" {
			releases += m.GetCounter().GetValue()
		}
	}
	assert.Equal(t, 1.0, releases, "one release in all (the remaining node's); none for the deleted nodes")
	v, ok := sample(mf, "image_prewarmer_transitions_total", map[string]string{"type": "release", "reason": state.ReasonWarm})
	assert.True(t, ok && v == 1, "release{reason=warm} is 1, got %v", v)

	// Several re-plans later (follow-ups, 2s resyncs): still running, ready and leading, and quiet
	// about the deleted nodes.
	mentions := func() int {
		n := 0
		for _, line := range strings.Split(p.log(), "\n") {
			if strings.Contains(line, e.NodeName("gone-tainted")) || strings.Contains(line, e.NodeName("gone-warming")) {
				n++
			}
		}
		return n
	}
	before := mentions()
	e.waitReconciles(p, reconcileCount(t, p), 3, "re-plans after the nodes were forgotten")
	assert.Equal(t, before, mentions(), "no log line about the deleted nodes after they were forgotten\n%s", p.log())
	p.requireHealthy(t)
	assert.Equal(t, p.name, e.leader(), "the controller still leads")
	assert.Empty(t, p.errorLines(), "no error is logged")
	e.waitGauges(p, 0, 0, 1)
}

// upgrade.when in the event-driven mode: a template that needs a node label as well as the
// kernel change. A rebooted node without the label stays `tainted`, as does a labelled node not
// rebooted yet; the missing half, when it arrives, moves each one to `warming` (the latency is
// logged). The resync is 10 minutes, so only the node events can account for that: the bound
// waited for is a minute, a tenth of the resync, not a latency target. Each node is released
// `warm` once its warmer pod is Ready (event-driven as well).
func TestUpgradeWhenTemplateInEventMode(t *testing.T) {
	const osImageLabel = "example.com/os-image"
	e := newEnv(t, func(cfg *config.Config) {
		// No target kernels: without the template, the default rule (kernel or boot ID changed)
		// would see either reboot as the upgrade, and the warmer has no kernel term.
		cfg.Upgrade.KernelVersions = nil
		// sprig's get takes a map[string]interface{}; .Labels is a map[string]string, so index
		// (which also leaves missingkey=error out of it: a missing label reads as "").
		cfg.Upgrade.When = `{{ and (ne .Kernel .Baseline.Kernel) (eq (index .Labels "` + osImageLabel + `") "v2") }}`
	})
	// The warmer pods take 20s to become Ready, so `warming` lasts long enough to be observed:
	// reboot-first's pull starts before label-first is rebooted and seen warming.
	e.Images = []string{"registry.example.com/notebook/base:slow-pull-20s"}
	e.PoolNode("reboot-first")
	e.PoolNode("label-first")
	e.Warmer()
	p := e.startProcess("orchestrator-0", "--resync", "10m")
	require.Contains(t, p.log(), "resync=10m0s", "the process runs with the long resync")
	e.waitLeaderReady(p)

	e.Maintenance("reboot-first")
	e.Maintenance("label-first")
	e.waitPhase("reboot-first", state.PhaseTainted)
	e.waitPhase("label-first", state.PhaseTainted)
	// The reconciles of the taints (and their follow-up) have run: the count holds.
	reconciles := e.waitQuiet(p)

	// One half of the condition each.
	e.Reboot("reboot-first", newKernel)
	e.label("label-first", osImageLabel, "v2")
	require.NoError(t, framework.Eventually(e.Ctx, 15*time.Second, func(context.Context) (bool, error) {
		return reconcileCount(t, p) > reconciles, nil
	}), "the node changes are reconciled")
	// ...all of them: the re-plans of both nodes, their follow-up, and any write they started.
	e.waitQuiet(p)
	for _, n := range []string{"reboot-first", "label-first"} {
		node := e.Node(n)
		require.Equal(t, state.PhaseTainted, node.Annotations[state.Phase], "%s: half of upgrade.when is not the upgrade", n)
		require.NotContains(t, node.Annotations, state.UpgradedAt, n)
		require.Equal(t, e.Config.StatusLabel.Value, node.Labels[e.Config.StatusLabel.Key], n)
		require.Empty(t, warmerPods(t, e, n), "%s: no warmer pod while the upgrade is not seen", n)
	}

	// The other half: the label on the rebooted node, the reboot of the labelled one.
	const wellBeforeResync = time.Minute // the resync is 10m: only the node events get there first
	start := time.Now()
	e.label("reboot-first", osImageLabel, "v2")
	e.waitWarmingWithin("reboot-first", wellBeforeResync)
	t.Logf("reboot-first: warming %s after its label was set (resync 10m)", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	e.Reboot("label-first", newKernel)
	e.waitWarmingWithin("label-first", wellBeforeResync)
	t.Logf("label-first: warming %s after its reboot (resync 10m)", time.Since(start).Round(time.Millisecond))

	e.waitReleasedByWarmer("reboot-first", "label-first")
	p.requireHealthy(t)
	assert.Empty(t, p.errorLines(), "no error is logged")
}

// waitLeaderReady waits until the process holds the Lease and answers /readyz.
func (e *env) waitLeaderReady(p *process) {
	e.T.Helper()
	require.NoError(e.T, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return e.leader() == p.name, nil
	}), "%s leads", p.name)
	e.waitReady(p)
}

// waitReady waits until the process answers /readyz (its caches synced).
func (e *env) waitReady(p *process) {
	e.T.Helper()
	require.NoError(e.T, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		code, _ := p.get(e.T, "/readyz")
		return code == http.StatusOK, nil
	}), "%s ready", p.name)
}

// waitGauges waits until the replica's /metrics counts these tainted and warming nodes and this
// pool size (the gauges follow the caches, after a whole-pool reconcile).
func (e *env) waitGauges(p scraper, tainted, warming, pool float64) {
	e.T.Helper()
	var got [3]float64
	err := framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		mf := p.scrape(e.T)
		got[0], _ = sample(mf, "image_prewarmer_nodes", map[string]string{"phase": state.PhaseTainted})
		got[1], _ = sample(mf, "image_prewarmer_nodes", map[string]string{"phase": state.PhaseWarming})
		got[2], _ = sample(mf, "image_prewarmer_pool_nodes", nil)
		return got == [3]float64{tainted, warming, pool}, nil
	})
	require.NoError(e.T, err, "nodes{phase=tainted}, nodes{phase=warming}, pool_nodes: want %v, last seen %v",
		[3]float64{tainted, warming, pool}, got)
}

// waitWarmingWithin waits, no longer than timeout, for the node to be warming (upgrade seen,
// still tainted).
func (e *env) waitWarmingWithin(short string, timeout time.Duration) {
	e.T.Helper()
	var last *corev1.Node
	err := framework.Eventually(e.Ctx, timeout, func(ctx context.Context) (bool, error) {
		n, err := e.client.CoreV1().Nodes().Get(ctx, e.NodeName(short), metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = n
		return n.Annotations[state.Phase] == state.PhaseWarming && n.Annotations[state.UpgradedAt] != "" &&
			state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect), nil
	})
	var ann map[string]string
	if last != nil {
		ann = last.Annotations
	}
	require.NoError(e.T, err, "node %s warming within %s; annotations %v", short, timeout, ann)
}

// label sets one label on the pool's node short.
func (e *env) label(short, key, value string) {
	e.T.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]string{key: value}}})
	require.NoError(e.T, err)
	_, err = e.client.CoreV1().Nodes().Patch(e.Ctx, e.NodeName(short), types.MergePatchType, patch, metav1.PatchOptions{})
	require.NoError(e.T, err)
}

// warmerPods returns the warmer's pods on the pool's node short.
func warmerPods(t *testing.T, e *env, short string) []corev1.Pod {
	t.Helper()
	list, err := e.client.CoreV1().Pods(e.Config.Warmer.Namespace).List(e.Ctx, metav1.ListOptions{
		FieldSelector: "spec.nodeName=" + e.NodeName(short),
	})
	require.NoError(t, err)
	return list.Items
}

// waitReleasedByWarmer waits for the pool's nodes, warming, to be released `warm` by their
// warmer pods: while a node was warming, its pod was seen on it not Ready yet (the node was held
// for it), and the node's Released Event names that pod. The pod itself may be gone by the end:
// once the status label is removed, the DaemonSet's affinity no longer admits the node.
func (e *env) waitReleasedByWarmer(shorts ...string) {
	e.T.Helper()
	pulling := map[string]string{}
	released := map[string]bool{}
	err := framework.Eventually(e.Ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		for _, short := range shorts {
			if released[short] {
				continue
			}
			n, err := e.client.CoreV1().Nodes().Get(ctx, e.NodeName(short), metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if _, ok := n.Annotations[state.ReleasedAt]; ok && n.Annotations[state.Phase] == "" {
				released[short] = true
				continue
			}
			if n.Annotations[state.Phase] != state.PhaseWarming || !state.HasTaint(n, e.Config.Taint.Key, e.Config.Taint.Effect) {
				continue
			}
			for _, pod := range warmerPods(e.T, e, short) {
				if !state.PodReady(&pod) {
					pulling[short] = pod.Name
				}
			}
		}
		return len(released) == len(shorts), nil
	})
	require.NoError(e.T, err, "waiting for nodes %v to be released; released: %v", shorts, released)
	for _, short := range shorts {
		e.RequireReleased(short, state.ReasonWarm)
		pod := pulling[short]
		require.NotEmpty(e.T, pod, "node %s: a warmer pod was seen not Ready while the node was warming", short)
		var messages []string
		require.NoError(e.T, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
			messages = messages[:0]
			for _, ev := range e.Events(short, "PrewarmReleased") {
				messages = append(messages, ev.Message)
			}
			return len(messages) == 1 && strings.Contains(messages[0], pod), nil
		}), "node %s: one Released Event naming the warmer pod %s; got %q", short, pod, messages)
	}
}

// scrape returns the process's /metrics as metric families.
func (p *process) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := p.get(t, "/metrics")
	require.Equal(t, http.StatusOK, code)
	return parseMetrics(t, body)
}

// requireHealthy checks that the process is still running and answers /healthz and /readyz.
func (p *process) requireHealthy(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		t.Fatalf("process %s exited: %v\n%s", p.name, p.err, p.log())
	default:
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		code, body := p.get(t, path)
		require.Equal(t, http.StatusOK, code, "%s %s: %s", p.name, path, body)
	}
}

// errorLines returns the lines the process logged at level ERROR.
func (p *process) errorLines() []string {
	var out []string
	for _, line := range strings.Split(p.log(), "\n") {
		if strings.Contains(line, "level=ERROR") {
			out = append(out, line)
		}
	}
	return out
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
