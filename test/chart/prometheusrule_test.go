package chart_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/metrics"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

const (
	deploymentRule = "orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true}}}"
	cronJobRule    = "orchestrator: {cronJob: {pushgateway: 'http://pushgateway.monitoring:9091'}, metrics: {prometheusRule: {enabled: true}}}"
)

// alertRule is one rule of a rendered PrometheusRule.
type alertRule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type ruleGroup struct {
	Name  string      `json:"name"`
	Rules []alertRule `json:"rules"`
}

// prometheusRule renders the chart and returns its PrometheusRule's groups.
func prometheusRule(t *testing.T, vals map[string]any, opts ...renderOpts) []ruleGroup {
	t.Helper()
	var found []*unstructured.Unstructured
	for _, u := range all[*unstructured.Unstructured](mustRender(t, vals, opts...)) {
		if u.GetKind() == "PrometheusRule" {
			found = append(found, u)
		}
	}
	require.Len(t, found, 1, "one PrometheusRule")
	require.Equal(t, "monitoring.coreos.com/v1", found[0].GetAPIVersion())
	spec, err := yaml.Marshal(found[0].Object["spec"])
	require.NoError(t, err)
	var out struct {
		Groups []ruleGroup `json:"groups"`
	}
	require.NoError(t, yaml.UnmarshalStrict(spec, &out))
	return out.Groups
}

func alertNames(groups []ruleGroup) []string {
	var names []string
	for _, g := range groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	return names
}

func TestPrometheusRule(t *testing.T) {
	t.Run("off by default", func(t *testing.T) {
		for _, u := range all[*unstructured.Unstructured](mustRender(t, minimal(t, "orchestrator: {mode: deployment}"))) {
			assert.NotEqual(t, "PrometheusRule", u.GetKind())
		}
	})

	t.Run("alerts of each mode", func(t *testing.T) {
		dep := prometheusRule(t, minimal(t, deploymentRule))
		assert.Equal(t, []string{"ImagePrewarmerReconcileFailing", "ImagePrewarmerNoLeader", "ImagePrewarmerNodeProblem",
			"ImagePrewarmerNodeReleasedCold"}, alertNames(dep))
		for _, r := range dep[0].Rules {
			assert.Contains(t, r.Expr, `namespace="prewarm-system", service="prewarm-image-prewarmer-metrics"`,
				"%s selects the series the ServiceMonitor scrapes from this release's metrics Service", r.Alert)
			assert.Equal(t, map[string]string{"severity": "warning"}, r.Labels)
			assert.NotEmpty(t, r.Annotations["description"])
		}
		cron := prometheusRule(t, minimal(t, cronJobRule))
		assert.Equal(t, []string{"ImagePrewarmerReconcileFailing", "ImagePrewarmerNodeProblem", "ImagePrewarmerNodeReleasedCold"},
			alertNames(cron), "no leader election in cronjob mode")
		for _, r := range cron[0].Rules {
			assert.Contains(t, r.Expr, `job="image-prewarmer", instance="prewarm-system/prewarm"`,
				"%s selects this release's Pushgateway group", r.Alert)
		}
	})

	t.Run("NOTES", func(t *testing.T) {
		notes := mustRender(t, minimal(t, cronJobRule)).Notes
		assert.Contains(t, notes, "Metrics: pushed after each run to http://pushgateway.monitoring:9091 (job image-prewarmer, instance prewarm-system/prewarm).")
		assert.Contains(t, notes, "Alerts: PrometheusRule prewarm-image-prewarmer")
		assert.NotContains(t, mustRender(t, minimal(t)).Notes, "Alerts:")
	})

	t.Run("needs metrics to alert on", func(t *testing.T) {
		_, err := render(t, minimal(t, "orchestrator: {metrics: {prometheusRule: {enabled: true}}}"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "orchestrator.metrics.prometheusRule.enabled needs metrics to alert on")
		// In deployment mode: the ServiceMonitor's series, or a selector of another scrape's.
		_, err = render(t, minimal(t, "orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true}}}"))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "set orchestrator.metrics.serviceMonitor.enabled=true, or orchestrator.metrics.prometheusRule.selector")
		assert.Len(t, prometheusRule(t, minimal(t, "orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: 'job=\"prewarm\"'}}}")), 1)
	})

	t.Run("values", func(t *testing.T) {
		groups := prometheusRule(t, minimal(t, `orchestrator:
  mode: deployment
  deployment: {resync: 5m}
  metrics:
    prometheusRule:
      enabled: true
      labels: {release: kube-prometheus}
      alertLabels: {severity: page, team: platform}
      disabled: [ImagePrewarmerNoLeader]
      selector: 'job="prewarm"'
      nodeProblemFor: 1h30m`))
		assert.Equal(t, []string{"ImagePrewarmerReconcileFailing", "ImagePrewarmerNodeProblem", "ImagePrewarmerNodeReleasedCold"}, alertNames(groups))
		for _, r := range groups[0].Rules {
			assert.Equal(t, map[string]string{"severity": "page", "team": "platform"}, r.Labels)
			assert.NotContains(t, r.Expr, "namespace=", "the selector replaces the default")
			assert.Contains(t, r.Expr, `job="prewarm"`)
		}
		assert.Contains(t, groups[0].Rules[0].Expr, "> 900", "three resyncs of 5m, more than the 10m floor")
		assert.Equal(t, "1h30m", groups[0].Rules[1].For)
	})

	t.Run("refused values", func(t *testing.T) {
		for _, tc := range []struct{ values, want string }{
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, nodeProblemFor: 15min}}}", "nodeProblemFor"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, disabled: [NoLeader]}}}", "disabled"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, alertLabels: {team-name: x}}}}", "alertLabels"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: '{job=\"x\"}'}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true, labels: {'true': x}}}}", "orchestrator.metrics.prometheusRule.labels: key \"true\""},
			// Prometheus reads units in order, once each.
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, nodeProblemFor: 30m1h}}}", "nodeProblemFor"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, nodeProblemFor: ''}}}", "nodeProblemFor"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: ', job=\"x\"'}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: \"job=\\\"x\\\"\\n\"}}}", "selector"},
			// What YAML also reads as line breaks inside the rules' block scalars.
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: \"job=\\\"x\\\"\\r, a=\\\"b\\\"\"}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: \"job=\\\"x\\\"\\N\"}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: \"job=\\\"x\\\",\\L a=\\\"b\\\"\"}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {prometheusRule: {enabled: true, selector: \"job=\\\"x\\\"\\P\"}}}", "selector"},
			{"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true, alertLabels: {reason: x}}}}",
				`alertLabels: "reason" is a label the alerts set themselves`},
			{"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true}, prometheusRule: {enabled: true, alertLabels: {alertname: x}}}}",
				`alertLabels: "alertname" is a label the alerts set themselves`},
			{"orchestrator: {cronJob: {pushgateway: 'http://p:9091'}, metrics: {prometheusRule: {enabled: true, " +
				"disabled: [ImagePrewarmerReconcileFailing, ImagePrewarmerNodeProblem, ImagePrewarmerNodeReleasedCold]}}}",
				"leaves out every alert of this mode"},
		} {
			_, err := render(t, minimal(t, tc.values))
			if assert.Error(t, err, tc.values) {
				assert.Contains(t, err.Error(), tc.want, tc.values)
			}
		}
	})
}

// Every metric an alert reads is one the orchestrator exports (or the Pushgateway's push time),
// with the label values the alert selects: a renamed metric or reason fails here, not silently
// in Prometheus.
func TestPrometheusRuleReadsExportedMetrics(t *testing.T) {
	families, err := metrics.New().Registry.Gather()
	require.NoError(t, err)
	exported := map[string]map[string][]string{} // name -> label -> values
	for _, f := range families {
		labels := map[string][]string{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = append(labels[l.GetName()], l.GetValue())
			}
		}
		exported[f.GetName()] = labels
	}
	name := regexp.MustCompile(`\b(image_prewarmer_[a-z_]+|push_time_seconds)\{([^}]*)\}`)
	matcher := regexp.MustCompile(`(\w+)="([^"]*)"`)
	for _, vals := range []string{deploymentRule, cronJobRule} {
		for _, r := range prometheusRule(t, minimal(t, vals))[0].Rules {
			uses := name.FindAllStringSubmatch(r.Expr, -1)
			require.NotEmpty(t, uses, "%s reads a metric", r.Alert)
			for _, u := range uses {
				if u[1] == "push_time_seconds" {
					continue // the Pushgateway's own
				}
				labels, ok := exported[u[1]]
				if !assert.True(t, ok, "%s reads %s, which the orchestrator does not export", r.Alert, u[1]) {
					continue
				}
				for _, m := range matcher.FindAllStringSubmatch(u[2], -1) {
					if values, ours := labels[m[1]]; ours {
						assert.Contains(t, values, m[2], "%s: %s{%s} has a series from the start", r.Alert, u[1], m[0])
					}
				}
			}
		}
	}
	assert.Contains(t, exported["image_prewarmer_node_problems"]["reason"], "ImagePull")
	assert.Len(t, exported["image_prewarmer_node_problems"]["reason"], len(plan.ProblemReasons())+1)
}

// promtool checks the rendered rules (syntax, PromQL, templates) and runs the unit tests in
// testdata/alerts against them: alerts fire, and only, when the series say so.
func TestPrometheusRuleWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not on PATH: make chart-lint builds it (hack/tools/install.sh promtool)")
		}
		t.Skip("promtool is not on PATH: run make chart-lint, or hack/tools/install.sh promtool and add its bin directory to PATH")
	}
	for _, tc := range []struct{ name, values string }{
		{"deployment", deploymentRule},
		{"cronjob", cronJobRule},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			rules, err := yaml.Marshal(map[string]any{"groups": prometheusRule(t, minimal(t, tc.values))})
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o600))
			tests, err := os.ReadFile(filepath.Join("testdata", "alerts", tc.name+"_test.yaml"))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, "rules_test.yaml"), tests, 0o600))

			out, err := exec.Command(promtool, "check", "rules", filepath.Join(dir, "rules.yaml")).CombinedOutput()
			require.NoError(t, err, "promtool check rules:\n%s\n%s", out, rules)
			out, err = exec.Command(promtool, "test", "rules", filepath.Join(dir, "rules_test.yaml")).CombinedOutput()
			require.NoError(t, err, "promtool test rules:\n%s\n%s", out, rules)
			tested := regexp.MustCompile(`alertname: (\w+)`).FindAllStringSubmatch(string(tests), -1)
			for _, a := range alertNames(prometheusRule(t, minimal(t, tc.values))) {
				assert.True(t, slices.ContainsFunc(tested, func(m []string) bool { return m[1] == a }), "%s has a unit test", a)
			}
			assert.False(t, strings.Contains(string(out), "WARNING"), string(out))
		})
	}
}

// docs/operations.md lists the reasons of image_prewarmer_node_problems, which Alertmanager routes
// and silences match on: exactly the planner's.
func TestAlertDocsListEveryProblemReason(t *testing.T) {
	doc, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	m := regexp.MustCompile("(?s)The reasons: (.*?)\\. To see the rule").FindSubmatch(doc)
	require.NotNil(t, m, "the sentence listing the reasons in docs/operations.md")
	var listed []string
	for _, r := range regexp.MustCompile("`([A-Za-z]+)`").FindAllSubmatch(m[1], -1) {
		listed = append(listed, string(r[1]))
	}
	want := append(plan.ProblemReasons(), plan.ProblemOther)
	assert.Equal(t, want, listed)
}
