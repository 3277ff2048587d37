package controller_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// run --once --pushgateway against a real Pushgateway, which a real Prometheus scrapes with
// honor_labels and the chart's cronjob-mode alerting rules, as the chart's docs tell users to:
//
//   - a run whose cycle fails (the API server cannot be reached) adds its families to the group
//     (job image-prewarmer, instance <namespace>/<release>: a value with a slash, which the
//     push encodes in the URL) without node counts or a success time, and
//     ImagePrewarmerReconcileFailing becomes pending (its `for` is promtool's to time);
//   - a completed run replaces the group (a family it does not push goes): node counts,
//     transitions and the success time, and the alert resolves;
//   - a failed run after it keeps the node counts and the success time of the completed one (and
//     a family it does not push).
//
// The Pushgateway refuses a push whose families are inconsistent; no push here is refused.
func TestOncePushgateway(t *testing.T) {
	pushgateway := framework.Tool(t, "pushgateway")
	prometheus := framework.Tool(t, "prometheus")

	e := newEnv(t)
	e.PoolNode("a")
	e.Warmer()
	namespace, release, ok := strings.Cut(e.Config.Instance, "/")
	require.True(t, ok, "instance %q is <namespace>/<release>", e.Config.Instance)

	gateway := "http://" + startLocalServer(t, "pushgateway", pushgateway, func(addr string) []string {
		return []string{"--web.listen-address=" + addr, "--log.level=warn"}
	})
	dir := t.TempDir()
	rules := renderAlertRules(t, release, namespace,
		"orchestrator: {cronJob: {pushgateway: 'http://pushgateway.monitoring:9091'}, metrics: {prometheusRule: {enabled: true}}}")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600))
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: [%q]
`, strings.TrimPrefix(gateway, "http://"))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	prom := startPrometheus(t, prometheus, dir)

	// A kubeconfig whose API server refuses connections: the cycle fails at its first list
	// (without the Lease, which it would fail to read first, and then run no cycle).
	unreachable := framework.UnreachableKubeconfig(t)
	config := e.configFile()
	run := func(kubeconfig string, wantOK bool) {
		t.Helper()
		out, err := execBinary(t, "run", "--once", "--config", config, "--kubeconfig", kubeconfig, "--pushgateway", gateway,
			"--leader-elect="+strconv.FormatBool(wantOK))
		if wantOK {
			require.NoError(t, err, out)
		} else {
			require.Error(t, err, out)
			require.Contains(t, out, "cycle failed")
		}
		require.NotContains(t, out, "pushing metrics failed", "the Pushgateway took the push")
	}
	group := map[string]string{"job": "image-prewarmer", "instance": e.Config.Instance}
	with := func(labels map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range group {
			out[k] = v
		}
		for k, v := range labels {
			out[k] = v
		}
		return out
	}

	// A failed run first: no node counts, no success time; the alert's `or vector(0)` branch.
	run(unreachable, false)
	mf := scrapeGateway(t, gateway)
	_, ok = sample(mf, "image_prewarmer_nodes", group)
	assert.False(t, ok, "a failed cycle counted no nodes: none pushed")
	_, ok = sample(mf, "image_prewarmer_last_success_timestamp_seconds", group)
	assert.False(t, ok, "no success time pushed")
	succeeded, ok := sample(mf, "image_prewarmer_last_reconcile_succeeded", group)
	assert.True(t, ok && succeeded == 0, "the failed run pushed that it failed: %v", succeeded)
	errs, ok := sample(mf, "image_prewarmer_api_errors_total", with(map[string]string{"code": "transport"}))
	assert.True(t, ok && errs >= 1, "the failed list is counted under the group: %v", errs)
	v, ok := sample(mf, "image_prewarmer_reconcile_duration_seconds", with(map[string]string{"mode": "once"}))
	assert.True(t, ok && v == 1, "one cycle observed: %v", v)
	requirePushed(t, mf, group)
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return prom.active(t, "ImagePrewarmerReconcileFailing"), nil
	}), "ImagePrewarmerReconcileFailing is pending after a failed run; alerts: %+v", prom.alerts(t))

	// A completed run replaces the group: a family it does not push goes too.
	sentinelPushed := pushSentinel(t, gateway, e.Config.Instance)
	e.Maintenance("a")
	run(cluster.Kubeconfig, true)
	e.waitPhase("a", state.PhaseTainted)
	mf = scrapeGateway(t, gateway)
	v, ok = sample(mf, "image_prewarmer_nodes", with(map[string]string{"phase": "tainted"}))
	assert.True(t, ok && v == 1, "one tainted node: %v", v)
	v, ok = sample(mf, "image_prewarmer_pool_nodes", group)
	assert.True(t, ok && v == 1, "one pool node: %v", v)
	v, ok = sample(mf, "image_prewarmer_last_reconcile_succeeded", group)
	assert.True(t, ok && v == 1, "the completed run pushed that it completed: %v", v)
	v, ok = sample(mf, "image_prewarmer_transitions_total", with(map[string]string{"type": "enter", "reason": "nodeMaintenance"}))
	assert.True(t, ok && v == 1, "one entry: %v", v)
	_, ok = sample(mf, "image_prewarmer_api_errors_total", with(map[string]string{"code": "transport"}))
	assert.False(t, ok, "the failed run's errors are gone: the group was replaced")
	_, ok = sample(mf, sentinel, group)
	assert.False(t, ok, "a family the completed run did not push is gone: the group was replaced")
	requirePushedAfter(t, mf, group, sentinelPushed)
	v, ok = sample(mf, "image_prewarmer_reconcile_duration_seconds", with(map[string]string{"mode": "once"}))
	assert.True(t, ok && v == 1, "this run's one cycle: %v", v)
	success, ok := sample(mf, "image_prewarmer_last_success_timestamp_seconds", group)
	require.True(t, ok, "the success time is pushed")
	assert.InDelta(t, float64(time.Now().Unix()), success, 120)
	requirePushed(t, mf, group)
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return !prom.active(t, "ImagePrewarmerReconcileFailing"), nil
	}), "ImagePrewarmerReconcileFailing resolves after a completed run; alerts: %+v", prom.alerts(t))

	// A failed run after it keeps what the completed one knew, and any family it does not push.
	sentinelPushed = pushSentinel(t, gateway, e.Config.Instance)
	run(unreachable, false)
	mf = scrapeGateway(t, gateway)
	v, ok = sample(mf, "image_prewarmer_nodes", with(map[string]string{"phase": "tainted"}))
	assert.True(t, ok && v == 1, "the node counts of the completed run stay: %v", v)
	kept, ok := sample(mf, "image_prewarmer_last_success_timestamp_seconds", group)
	assert.True(t, ok && kept == success, "the success time of the completed run stays: %v, was %v", kept, success)
	errs, ok = sample(mf, "image_prewarmer_api_errors_total", with(map[string]string{"code": "transport"}))
	assert.True(t, ok && errs >= 1, "this run's failure is pushed: %v", errs)
	_, ok = sample(mf, sentinel, group)
	assert.True(t, ok, "a family the failed run did not push stays: it added to the group")
	requirePushedAfter(t, mf, group, sentinelPushed)
	requirePushed(t, mf, group)
}

// sentinel is a family no run pushes, which pushSentinel adds to the group.
const sentinel = "image_prewarmer_test_sentinel"

// pushSentinel adds the sentinel family to the group of instance (POST: the group's other
// families stay), so that what a later push does to the families it does not push shows. It
// returns the group's push time then.
func pushSentinel(t *testing.T, gateway, instance string) float64 {
	t.Helper()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: sentinel, Help: "Pushed by the test, never by the orchestrator."})
	g.Set(1)
	require.NoError(t, push.New(gateway, "image-prewarmer").Grouping("instance", instance).Collector(g).Add())
	group := map[string]string{"job": "image-prewarmer", "instance": instance}
	mf := scrapeGateway(t, gateway)
	_, ok := sample(mf, sentinel, group)
	require.True(t, ok, "the sentinel is in the group")
	pushed, ok := sample(mf, "push_time_seconds", group)
	require.True(t, ok, "the sentinel's push time")
	return pushed
}

// requirePushedAfter checks that the group was pushed again after the push at time since.
func requirePushedAfter(t *testing.T, mf map[string]*dto.MetricFamily, group map[string]string, since float64) {
	t.Helper()
	pushed, ok := sample(mf, "push_time_seconds", group)
	require.True(t, ok, "the group %v was pushed", group)
	assert.Greater(t, pushed, since, "the run pushed after the sentinel")
}

// scrapeGateway reads the Pushgateway's /metrics: the pushed series with their grouping labels,
// and its own push_time_seconds and push_failure_time_seconds per group.
func scrapeGateway(t *testing.T, gateway string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get(gateway + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return parseMetrics(t, string(body))
}

// requirePushed checks that the group's last push succeeded (the Pushgateway records the time of
// a push it refused in push_failure_time_seconds).
func requirePushed(t *testing.T, mf map[string]*dto.MetricFamily, group map[string]string) {
	t.Helper()
	pushed, ok := sample(mf, "push_time_seconds", group)
	require.True(t, ok, "the group %v was pushed", group)
	assert.InDelta(t, float64(time.Now().Unix()), pushed, 120)
	failed, ok := sample(mf, "push_failure_time_seconds", group)
	assert.True(t, ok && failed == 0, "no push of the group was refused: %v", failed)
}
