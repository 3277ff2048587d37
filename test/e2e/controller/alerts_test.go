package controller_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// The chart's alerts on a real Prometheus, scraping the orchestrator binary the way the chart's
// ServiceMonitor does (the labels namespace and service of the metrics Service), with the
// PrometheusRule's groups as rendered by the chart: a warmer that cannot pull makes
// ImagePrewarmerNodeProblem fire with reason ImagePull, and the warm timeout's cold release makes
// ImagePrewarmerNodeReleasedCold fire (on a Prometheus this young through its branch for counters
// new within the hour; the promtool tests in test/chart cover the other). At the end no other
// alert is pending or firing. The alerts whose `for` is minutes long are the promtool tests' to
// time.
func TestChartAlertsOnARealPrometheus(t *testing.T) {
	prometheus := framework.Tool(t, "prometheus")

	// Room for the pull problem's alert to fire before the timeout releases the node.
	e := newEnv(t, func(c *config.Config) { c.MaxWaitForWarm = config.NewDuration(40 * time.Second) })
	e.Images = []string{framework.FailPullImage("registry.example.com/notebook/missing:1")}
	e.PoolNode("a")
	e.Warmer()
	p := e.startProcess("only")
	e.waitLeaderReady(p)

	const release, namespace = "prewarm", "prewarm-system"
	dir := t.TempDir()
	rules := renderAlertRules(t, release, namespace,
		"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true, nodeProblemFor: '0'}}}")
	require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600))
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [rules.yaml]
scrape_configs:
  - job_name: prewarm
    static_configs:
      - targets: [%q]
        labels: {namespace: %s, service: %s-image-prewarmer-metrics}
`, p.addr, namespace, release)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600))
	prom := startPrometheus(t, prometheus, dir)

	e.Maintenance("a")
	e.waitPhase("a", state.PhaseTainted)
	e.Reboot("a", newKernel)
	e.waitPhase("a", state.PhaseWarming)

	firing := prom.waitFiring(t, e.Ctx, "ImagePrewarmerNodeProblem", 60*time.Second)
	assert.Equal(t, "ImagePull", firing.Labels["reason"])
	assert.Equal(t, "warning", firing.Labels["severity"])
	assert.Contains(t, firing.Annotations["description"], "1 node(s) of prewarm-system/prewarm recorded the problem ImagePull")

	e.waitReleased("a")
	e.RequireReleased("a", state.ReasonTimeout)
	prom.waitFiring(t, e.Ctx, "ImagePrewarmerNodeReleasedCold", 60*time.Second)
	// The released node no longer counts: its problem alert resolves.
	require.NoError(t, framework.Eventually(e.Ctx, 30*time.Second, func(context.Context) (bool, error) {
		return !prom.active(t, "ImagePrewarmerNodeProblem"), nil
	}), "ImagePrewarmerNodeProblem resolves once the node is released")
	for _, a := range prom.alerts(t) {
		assert.Equal(t, "ImagePrewarmerNodeReleasedCold", a.Labels["alertname"], "no other alert is pending or firing: %+v", a)
	}
	p.requireHealthy(t)
}

// renderAlertRules renders the chart's PrometheusRule with these values (YAML) and returns its
// groups as a Prometheus rule file.
func renderAlertRules(t *testing.T, release, namespace, values string) []byte {
	t.Helper()
	ch, err := loader.Load("../../../charts/image-prewarmer")
	require.NoError(t, err)
	vals := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte("pool: {nodeSelector: {pool: x}}\nimages: [registry.example.com/a:1]\n"), &vals))
	extra := map[string]any{}
	require.NoError(t, yaml.Unmarshal([]byte(values), &extra))
	vals = chartutil.CoalesceTables(extra, vals)
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = release, namespace
	kv, err := chartutil.ParseKubeVersion("v1.36.3") // the local cluster's
	require.NoError(t, err)
	install.KubeVersion = kv
	rel, err := install.Run(ch, vals)
	require.NoError(t, err)
	for _, m := range releaseutil.SplitManifests(rel.Manifest) {
		var obj struct {
			Kind string         `json:"kind"`
			Spec map[string]any `json:"spec"`
		}
		require.NoError(t, yaml.Unmarshal([]byte(m), &obj))
		if obj.Kind == "PrometheusRule" {
			out, err := yaml.Marshal(obj.Spec)
			require.NoError(t, err)
			return out
		}
	}
	t.Fatal("the chart rendered no PrometheusRule")
	return nil
}

// promServer is a Prometheus server started by a test.
type promServer struct {
	addr string
}

// httpClient bounds every request to Prometheus and the Pushgateway.
var httpClient = &http.Client{Timeout: 5 * time.Second}

// startPrometheus runs prometheus with dir/prometheus.yml on a free port of 127.0.0.1, storing
// its data in dir, and waits until it is ready.
func startPrometheus(t *testing.T, bin, dir string) *promServer {
	t.Helper()
	addr := startLocalServer(t, "prometheus", bin, func(addr string) []string {
		return []string{"--config.file=" + filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path=" + filepath.Join(dir, "data"),
			"--web.listen-address=" + addr, "--log.level=warn"}
	})
	return &promServer{addr: addr}
}

// startLocalServer runs a Prometheus project's server (its flags for listening on addr from
// args) on a free port of 127.0.0.1 until the test ends, waits until its /-/ready answers 200
// and returns the address. The port is free when picked, but another process may take it
// before the server listens: then it tries another.
func startLocalServer(t *testing.T, name, bin string, args func(addr string) []string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addr, inUse := tryLocalServer(t, name, bin, args)
		if addr != "" {
			return addr
		}
		require.True(t, inUse && attempt < 3, "%s started (attempt %d)", name, attempt)
	}
}

// tryLocalServer starts the server once; it returns "" and whether the port was taken when it
// exited before it was ready.
func tryLocalServer(t *testing.T, name, bin string, args func(addr string) []string) (string, bool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	var log tu.LogBuffer
	cmd := exec.Command(bin, args(addr)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	// Killed with the test process, even one that a timeout panics before the cleanups run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := httpClient.Get("http://" + addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr, false
			}
		}
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			if strings.Contains(log.String(), "address already in use") {
				return "", true
			}
			t.Fatalf("%s exited: %v\n%s", name, err, log.String())
		case <-time.After(200 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "%s ready within 30s\n%s", name, log.String())
	}
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

// alerts returns the alerts Prometheus holds (pending and firing).
func (s *promServer) alerts(t *testing.T) []promAlert {
	t.Helper()
	resp, err := httpClient.Get("http://" + s.addr + "/api/v1/alerts")
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Data   struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status)
	return body.Data.Alerts
}

// active reports whether the alert is pending or firing.
func (s *promServer) active(t *testing.T, name string) bool {
	t.Helper()
	for _, a := range s.alerts(t) {
		if a.Labels["alertname"] == name {
			return true
		}
	}
	return false
}

// waitFiring waits until the alert fires and returns it.
func (s *promServer) waitFiring(t *testing.T, ctx context.Context, name string, timeout time.Duration) promAlert {
	t.Helper()
	var got promAlert
	err := framework.Eventually(ctx, timeout, func(context.Context) (bool, error) {
		for _, a := range s.alerts(t) {
			if a.Labels["alertname"] == name && a.State == "firing" {
				got = a
				return true, nil
			}
		}
		return false, nil
	})
	require.NoError(t, err, "%s fires within %s; alerts: %+v", name, timeout, s.alerts(t))
	return got
}
