package chart_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/leaderelection"
)

// The image-prewarmer.durationMs helper converts what the schema calls a duration to milliseconds
// exactly as time.ParseDuration reads it (the leader-election check relies on it).
func TestDurationHelperMatchesParseDuration(t *testing.T) {
	durations := []string{
		"0", "0s", "1ns", "1us", "1µs", "1ms", "1s", "1m", "1h", "15s", "10s", "2s", "90s", "1h30m", "1.5h",
		"1.5m", "0.5ms", "0.1s", "1m0.5s", "100ms", "2h45m30.5s", "10.000000001s", "3h2m1s4ms5us6ns",
		"59m59.999s", "1.25us", "1.5µs", "2562047h", "36h", "1m1m", "0.000001s",
		".5h", "1.h", "1.m30.s",
	}
	c := loadChart(t)
	var tpl strings.Builder
	tpl.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: durations\ndata:\n")
	for i, d := range durations {
		fmt.Fprintf(&tpl, "  d%d: {{ include \"image-prewarmer.durationMs\" %q | quote }}\n", i, d)
	}
	c.Templates = append(c.Templates, &chart.File{Name: "templates/zz-durations.yaml", Data: []byte(tpl.String())})
	r := mustRender(t, minimal(t), renderOpts{chart: c})
	var cm *corev1.ConfigMap
	for _, o := range all[*corev1.ConfigMap](r) {
		if o.Name == "durations" {
			cm = o
		}
	}
	require.NotNil(t, cm)
	for i, d := range durations {
		want, err := time.ParseDuration(d)
		require.NoError(t, err, d)
		got, err := strconv.ParseFloat(cm.Data[fmt.Sprintf("d%d", i)], 64)
		require.NoError(t, err, "%s rendered as %q", d, cm.Data[fmt.Sprintf("d%d", i)])
		wantMs := float64(want) / float64(time.Millisecond)
		assert.InDelta(t, wantMs, got, 1e-9*wantMs+1e-9, "%s", d)
	}
}

// In deployment mode the orchestrator refuses (exit 2) lease timings that are not
// leaseDuration > renewDeadline > 1.2 x retryPeriod; the chart refuses them first, naming the values.
func TestLeaderElectionTimings(t *testing.T) {
	cases := []struct{ lease, renew, retry string }{
		{"15s", "10s", "2s"},                // the defaults
		{"15s", "15s", "2s"},                // renew = lease
		{"15s", "16s", "2s"},                // renew > lease
		{"14.999s", "15s", "2s"},            // by a millisecond
		{"15.001s", "15s", "2s"},            // by a millisecond, the right way
		{"1m", "60s", "10s"},                // equal in other units
		{"1.5m", "1m29s", "10s"},            // fractions
		{"1h", "59m59.999s", "49m59.999s"},  // long, valid
		{"15s", "12s", "10s"},               // renew = exactly 1.2 x retry
		{"15s", "12001ms", "10s"},           // just above
		{"15s", "10s", "9s"},                // renew < 1.2 x retry
		{"15s", "10s", "10s"},               // renew = retry
		{"15s", "1200ms", "1s"},             // 1.2 x retry, in ms
		{"15s", "1.2s", "999999us"},         // 1.2 x retry is 1199998.8us: valid
		{"2s", "1500ms", "1.25s"},           // 1.2 x 1.25s = 1.5s: refused
		{"2s", "1500000001ns", "1.25s"},     // by a nanosecond
		{"1h30m", "1h29m59.5s", "1h14m59s"}, // 1.2 x retry = 1h29m58.8s: valid
		{"1h30m", "1h29m59.5s", "1h15m"},    // 1.2 x retry = 1h30m: refused
		{"30s", "20s", "5s"},                // the deployment test's values
		{"10s", "9s", "8s"},                 // both rules broken: the first is reported
	}
	for _, tc := range cases {
		t.Run(tc.lease+"/"+tc.renew+"/"+tc.retry, func(t *testing.T) {
			lease, renew, retry := mustDuration(t, tc.lease), mustDuration(t, tc.renew), mustDuration(t, tc.retry)
			vals := minimal(t, fmt.Sprintf("orchestrator: {mode: deployment, deployment: {leaderElection: {leaseDuration: %q, renewDeadline: %q, retryPeriod: %q}}}",
				tc.lease, tc.renew, tc.retry))
			_, err := render(t, vals)
			// The orchestrator's rule (pkg/cli validateLeaderElection, client-go's JitterFactor).
			switch {
			case lease <= renew:
				require.Error(t, err)
				assert.Contains(t, err.Error(), fmt.Sprintf("orchestrator.deployment.leaderElection.leaseDuration (%s) must be longer than orchestrator.deployment.leaderElection.renewDeadline (%s)", tc.lease, tc.renew))
			case renew <= time.Duration(leaderelection.JitterFactor*float64(retry)):
				require.Error(t, err)
				assert.Contains(t, err.Error(), fmt.Sprintf("orchestrator.deployment.leaderElection.renewDeadline (%s) must be longer than 1.2 x orchestrator.deployment.leaderElection.retryPeriod (%s)", tc.renew, tc.retry))
			default:
				require.NoError(t, err)
			}
		})
	}
	t.Run("unused in cronjob mode", func(t *testing.T) {
		mustRender(t, minimal(t, "orchestrator: {deployment: {leaderElection: {leaseDuration: 5s, renewDeadline: 10s, retryPeriod: 10s}}}"))
	})
}

func mustDuration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	require.NoError(t, err)
	return d
}

// maintenance.nodeLabel.selector: the chart (schema pattern and templates) accepts exactly the
// selectors the orchestrator accepts: labels.Parse succeeds and selects something.
func TestNodeLabelSelectorMatchesLabelsParse(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	prefix := func(n int) string { // a DNS subdomain of n characters
		var labels []string
		for n > 0 {
			l := min(n, 63)
			if n-l == 1 { // no empty label after the last dot
				l--
			}
			labels = append(labels, strings.Repeat("p", l))
			n -= l + 1
		}
		return strings.Join(labels, ".")
	}
	cases := []struct {
		sel string
		// deviation: the chart refuses what labels.Parse accepts (documented in the value's description).
		deviation bool
	}{
		{sel: "upgrade.example.com/pending=true"},
		{sel: "a"},
		{sel: "!a"},
		{sel: "! a"},
		{sel: "a=b"},
		{sel: "a==b"},
		{sel: "a!=b"},
		{sel: "a = b"},
		{sel: "a=b,c!=d,!e,f"},
		{sel: "  a=b ,  c  "},
		{sel: "a=b,\tc\n"},
		{sel: "a="},
		{sel: "a==,b"},
		{sel: "a!= ,b"},
		{sel: "a in (b)"},
		{sel: "a in (b,c)"},
		{sel: "a notin (b, c)"},
		{sel: "a in(b)"},
		{sel: "a notin(b)"},
		{sel: "a in  (  b  ,  c  )"},
		{sel: "a in ()"},
		{sel: "a in (,)"},
		{sel: "a in (b,,c)"},
		{sel: "a in (b,)"},
		{sel: "x in (foo,,baz),y,z notin ()"},
		{sel: "in in (in)"},
		{sel: "notin notin (notin)"},
		{sel: "a=in"},
		{sel: "a in (notin)"},
		{sel: "example.com/a-b_c.d in (v1.2-3_x, A)"},
		{sel: "a>1"},
		{sel: "a < 10,b>0"},
		{sel: "a>000000000000000001"},
		{sel: "a=" + long(63)},
		{sel: "a=" + long(64)},
		{sel: long(63)},
		{sel: long(64)},
		{sel: prefix(253) + "/a"},
		{sel: "!" + prefix(254) + "/a"},
		{sel: "a in (" + long(64) + ")"},
		// Refused by both.
		{sel: "a in b"},
		{sel: "a in (b"},
		{sel: "a in b)"},
		{sel: "a in (b))"},
		{sel: "a in (b c)"},
		{sel: "a notin b"},
		{sel: "ain(b)"},
		{sel: "a b"},
		{sel: "a=b c"},
		{sel: "a=b=c"},
		{sel: "a===b"},
		{sel: "a = = b"},
		{sel: "a ! = b"},
		{sel: "a=!b"},
		{sel: "!a=b"},
		{sel: "!a in (b)"},
		{sel: "!!a"},
		{sel: "!"},
		{sel: "a!"},
		{sel: "a,"},
		{sel: ",a"},
		{sel: "a,,b"},
		{sel: "a=(b)"},
		{sel: "a(b)"},
		{sel: "a>=1"},
		{sel: "a>"},
		{sel: "a>b"},
		{sel: "a>-1"},
		{sel: "a<1.5"},
		{sel: "a=b/c"},
		{sel: "a/b/c"},
		{sel: "A.com/b"},
		{sel: "/b"},
		{sel: "a/"},
		{sel: "-a"},
		{sel: "a-"},
		{sel: "a=-b"},
		{sel: "a:b"},
		{sel: "a\f"},
		{sel: "a=b;c=d"},
		{sel: "a in (b|c)"},
		{sel: "a=é"},
		// Only spaces: labels.Parse selects everything, which the orchestrator refuses.
		{sel: " \t"},
		// The documented deviation: integers of 19 or more digits after > and <.
		{sel: "a>1000000000000000000", deviation: true},
	}
	require.GreaterOrEqual(t, len(cases), 25)
	for _, tc := range cases {
		name := tc.sel
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(name, func(t *testing.T) {
			sel, perr := labels.Parse(tc.sel)
			orchestratorAccepts := perr == nil && !sel.Empty()
			vals := minimal(t, "maintenance: {nodeLabel: {enabled: true}}")
			vals["maintenance"].(map[string]any)["nodeLabel"].(map[string]any)["selector"] = tc.sel
			r, err := render(t, vals)
			if tc.deviation {
				require.True(t, orchestratorAccepts, "not a deviation: labels.Parse refuses it (%v)", perr)
				require.Error(t, err, "the chart refuses it")
				return
			}
			if orchestratorAccepts {
				require.NoError(t, err)
				cfg := parsedConfig(t, r) // and the orchestrator's own config validation agrees
				assert.Equal(t, tc.sel, cfg.Maintenance.NodeLabel.Selector)
				return
			}
			require.Error(t, err, "labels.Parse: %v", perr)
			assert.Contains(t, err.Error(), "maintenance")
			assert.Contains(t, err.Error(), "selector")
		})
	}

	t.Run("not checked while the source is disabled", func(t *testing.T) {
		mustRender(t, minimal(t, "maintenance: {nodeLabel: {enabled: false, selector: 'a in b'}}"))
	})
}
