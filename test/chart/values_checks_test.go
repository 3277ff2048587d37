package chart_test

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/image-prewarmer/image-prewarmer/pkg/upgrade"
)

// The image-prewarmer.durationNs helper reads what the schema calls a duration exactly as
// time.ParseDuration does: whole nanoseconds (each part truncated, so 0.5ns is 0), "overflow" for
// what it refuses as out of range; durationMs (the leader-election check) is the same in
// milliseconds. The templates refuse out-of-range durations and positive ones that read as 0 with it.
func TestDurationHelperMatchesParseDuration(t *testing.T) {
	durations := []string{
		"0", "0s", "1ns", "1us", "1µs", "1ms", "1s", "1m", "1h", "15s", "10s", "2s", "90s", "1h30m", "1.5h",
		"1.5m", "0.5ms", "0.1s", "1m0.5s", "100ms", "2h45m30.5s", "10.000000001s", "3h2m1s4ms5us6ns",
		"59m59.999s", "1.25us", "1.5µs", "2562047h", "36h", "1m1m", "0.000001s",
		".5h", "1.h", "1.m30.s",
		// Below a nanosecond, per part.
		"0.5ns", "0.9ns", "1.9ns", "0.5ns0.5ns", "0.0000000001s", "0.000000001s", "0.0000000009s", "0.001us",
		"0.0009us", "0.000001ms", "0.0000000000003h", "0.0000000000002h", "0.00000000001m", "0.00000000002m",
		".0000000001s1ns", "000001s", "0.0000000000000000000000001h",
		// Around the end of the range (2562047h47m16.854775807s).
		"2562047h47m16.854775807s", "2562047h47m16.854775808s", "2562048h", "9999999h", "9223372036854775807ns",
		"9223372036854775808ns", "9223372036854775806ns1ns", "9223372036854775806ns2ns", "9223372036854775.807us",
		"9223372036854775.808us", "153722867m", "153722868m", "1281023h1281024h", "1281023h1281024h47m16.854775807s",
		"99999999999999999999ns", "0000000000000000000001ns", "2562047.788015215h", "2562047.7880152156h",
	}
	rng := rand.New(rand.NewPCG(7, 11))
	units := []string{"ns", "us", "µs", "ms", "s", "m", "h"}
	for range 300 {
		var d strings.Builder
		for range 1 + rng.IntN(3) {
			d.WriteString(strconv.FormatUint(rng.Uint64N([]uint64{10, 1000, 1e6, 1e12, 1e19}[rng.IntN(5)]), 10))
			if rng.IntN(2) == 0 {
				d.WriteString("." + strconv.FormatUint(rng.Uint64N(1e12), 10)[:1+rng.IntN(11)])
			}
			d.WriteString(units[rng.IntN(len(units))])
		}
		durations = append(durations, d.String())
	}
	c := loadChart(t)
	var tpl strings.Builder
	tpl.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: durations\ndata:\n")
	for i, d := range durations {
		fmt.Fprintf(&tpl, "  ns%d: {{ include \"image-prewarmer.durationNs\" %q | quote }}\n", i, d)
		fmt.Fprintf(&tpl, "  ms%d: {{ include \"image-prewarmer.durationMs\" %q | quote }}\n", i, d)
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
	overflows := 0
	for i, d := range durations {
		want, err := time.ParseDuration(d)
		if err != nil {
			assert.Equal(t, "overflow", cm.Data[fmt.Sprintf("ns%d", i)], "%s: %v", d, err)
			overflows++
			continue
		}
		assert.Equal(t, strconv.FormatInt(int64(want), 10), cm.Data[fmt.Sprintf("ns%d", i)], "%s", d)
		got, err := strconv.ParseFloat(cm.Data[fmt.Sprintf("ms%d", i)], 64)
		require.NoError(t, err, "%s rendered as %q", d, cm.Data[fmt.Sprintf("ms%d", i)])
		wantMs := float64(want) / float64(time.Millisecond)
		assert.InDelta(t, wantMs, got, 1e-9*wantMs+1e-9, "%s", d)
	}
	require.Greater(t, overflows, 10)
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

// dnsSubdomain returns a DNS subdomain of n characters (labels of at most 63), such as a label
// key's prefix: the API server and the orchestrator refuse one longer than 253.
func dnsSubdomain(n int) string {
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
	prefix := dnsSubdomain
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

// upgrade.kernelVersions without the kernel label: the orchestrator refuses an entry holding any
// rune unicode.IsSpace reports (a kernel version has no whitespace); so does the schema, every one
// of them, not only ASCII spaces.
func TestKernelVersionsRefuseEveryUnicodeSpace(t *testing.T) {
	var versions []any
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if unicode.IsSpace(r) {
			versions = append(versions, "6.8.0"+string(r)+"1")
		}
	}
	require.Len(t, versions, 25)
	vals := minimal(t)
	vals["upgrade"] = map[string]any{"kernelVersions": versions}
	_, err := render(t, vals)
	require.Error(t, err)
	for i, v := range versions {
		assert.Contains(t, err.Error(), fmt.Sprintf("/upgrade/kernelVersions/%d'", i), "%q", v)
	}
}

// upgrade.when: the orchestrator parses it at start-up (pkg/upgrade NewRule), and so does the
// pre-delete cleanup hook; one that does not parse stops both, and helm uninstall with them. The chart
// refuses what the orchestrator cannot parse and accepts what it can, although Helm's functions are
// not the orchestrator's (sprig without env and expandenv, plus include, toYaml...). It checks the
// syntax only: a template that parses but fails on the sample node passes the chart.
func TestUpgradeWhenSyntaxMatchesTheOrchestrator(t *testing.T) {
	cases := []struct {
		when string
		// deviation: the chart accepts a template the orchestrator cannot parse (documented in values.yaml).
		deviation bool
	}{
		// The templates of docs/integrations.md, the tests and the end-to-end tests.
		{when: "{{ and (ne .BootID .Baseline.BootID)\n       (eq (index .Labels \"example.com/os-image\") \"2026-11\") }}"},
		{when: `{{ hasPrefix "Ubuntu 24" .Node.Status.NodeInfo.OSImage }}`},
		{when: `{{ and (ne .Kernel .Baseline.Kernel) (semverCompare ">=6.0" .Kernel) }}`},
		{when: `{{ ne .BootID .Baseline.BootID }}`},
		{when: `{{ ne .Kernel .Baseline.Kernel }}`},
		{when: `{{ ne .Node.Status.NodeInfo.BootID .Baseline.BootID }}`},
		{when: `{{ hasPrefix "Ubuntu" .Node.Status.NodeInfo.OSImage }}`},
		{when: `{{ ne .Node.Status.NodeInfo.OSImage "Old OS" }}`},
		{when: `{{ if eq .Node.Name "sample" }}true{{ else }}{{ .Labels.nope }}{{ end }}`},
		{when: `{{ and (ne .Kernel .Baseline.Kernel) (eq (index .Labels "example.com/os-image") "v2") }}`},
		{when: `{{ range 10 }}{{ end }}true`},
		{when: `{{ .Kernel }}`},
		{when: `{{ .Nope }}`},
		{when: `{{ range 9223372036854775807 }}x{{ end }}`},
		{when: `{{ .Kernel `},
		{when: `{{ .Kernel`},
		{when: `{{ frobnicate .Kernel }}`},
		{when: `{{ nosuchfunc .Kernel }}`},
		// Parsed, never run: fail and a loop pass the chart (the orchestrator refuses them on its sample).
		{when: `{{ fail "never run" }}`},
		{when: `{{ range 50000000 }}{{ end }}true`},
		// Syntax.
		{when: `{{ if .Kernel }}true`},
		{when: `{{ end }}`},
		{when: `true{{ else }}`},
		{when: `{{ $x }}`},
		{when: `{{ break }}`},
		{when: `{{ /* unclosed`},
		{when: `{{- $k := .Kernel -}} {{- ne $k .Baseline.Kernel -}}`},
		{when: `{{ range .KernelVersions }}{{ if eq . "6.8" }}{{ break }}{{ end }}{{ end }}true`},
		{when: "{{/* a comment */}}\n{{ ne .Kernel .Baseline.Kernel }}\n"},
		{when: "   \n"},
		// The orchestrator's functions that Helm lacks, and Helm's that the orchestrator lacks
		// (the sprig functions it leaves out among them).
		{when: `{{ eq (env "PREWARM_UNSET") "" }}`},
		{when: `{{ empty (expandenv "$PREWARM_UNSET") }}`},
		{when: `{{ getHostByName "localhost" | empty }}`},
		{when: `{{ ne (sha512sum .Kernel) "" }}`},
		{when: `{{ toYaml .Labels | empty | not }}`},
		{when: `{{ include "image-prewarmer.name" . | empty }}`},
		{when: `{{ required "kernel" .Kernel | empty | not }}`},
		{when: `{{ lookup "v1" "Node" "" "n" | empty }}`},
		{when: `{{ tpl "true" . }}`},
		// Those names as labels, fields, variables, strings and text are no function calls.
		{when: `{{ eq (index .Labels "include") (index .Labels "env") }}`},
		{when: `{{ $env := .Kernel }}{{ $toYaml := .BootID }}{{ and (ne $env "") (ne $toYaml "") }}`},
		{when: `{{/* include env toYaml */}}{{ printf "%s" "lookup tpl" | ne "" }}`},
		{when: `{{ if eq .Kernel "env" }}false{{ else }}true{{ end }}`},
		// Named templates: not checked by the chart, which parses in a branch where define may not be.
		{when: `{{ define "rule" }}true{{ end }}{{ template "rule" }}`},
		{when: `{{- define "rule" }}{{ frobnicate }}{{ end }}true`, deviation: true},
		{when: `{{ block "rule" . }}{{ ne .Kernel .Baseline.Kernel }}{{ end }}`},
		{when: `{{ block "upgrade.when" . }}true{{ end }}`},
		{when: `{{ block "upgrade.when" . }}{{ end }}true`},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.when), func(t *testing.T) {
			_, ruleErr := upgrade.NewRule(nil, "", tc.when)
			parseErr := ruleErr != nil && strings.HasPrefix(ruleErr.Error(), "parsing template")
			vals := minimal(t)
			vals["upgrade"] = map[string]any{"when": tc.when}
			r, err := render(t, vals)
			if tc.deviation {
				require.True(t, parseErr, "not a deviation: the orchestrator parses it (%v)", ruleErr)
				require.NoError(t, err, "the chart accepts it")
				return
			}
			if parseErr {
				require.Error(t, err, "the orchestrator refuses it: %v", ruleErr)
				assert.Contains(t, err.Error(), "upgrade.when")
				return
			}
			require.NoError(t, err, "the orchestrator parses it")
			if ruleErr == nil {
				assert.Equal(t, tc.when, parsedConfig(t, r).Upgrade.When)
			}
		})
	}

	t.Run("every function of the orchestrator", func(t *testing.T) {
		names := []string{"and", "or", "not", "len", "index", "slice", "print", "printf", "println", "eq", "ne", "lt", "le", "gt", "ge", "call", "html", "js", "urlquery"}
		names = append(names, upgrade.FuncNames()...)
		var when strings.Builder
		for _, name := range names {
			fmt.Fprintf(&when, "{{ if false }}{{ %s }}{{ end }}", name)
		}
		when.WriteString("true")
		_, err := upgrade.NewRule(nil, "", when.String())
		require.NoError(t, err)
		vals := minimal(t)
		vals["upgrade"] = map[string]any{"when": when.String()}
		parsedConfig(t, mustRender(t, vals))
	})
}

// helmValues reads a values file as `helm install -f` does (chartutil.ReadValues, sigs.k8s.io/yaml:
// YAML 1.1 scalars), merged over the minimal values.
func helmValues(t *testing.T, file string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(file))
	require.NoError(t, err)
	return chartutil.CoalesceTables(v.AsMap(), minimal(t))
}

// In a values file, an unquoted on, yes, y (off, no, n), in lower, title or upper case, is a YAML 1.1
// boolean: as a map key, Helm makes it the key "true" ("false") before the chart sees the values,
// and the label key meant is lost (`pool: {nodeSelector: {on: x}}` would make the pool the nodes
// labelled true=x). The chart refuses the keys "true" and "false" in every map of the values whose
// keys become label keys or selectors, naming the map; a quoted key, or one given with --set, is
// kept as written and passes.
func TestYAMLBooleanLabelKeysAreRefused(t *testing.T) {
	const (
		isTrue  = `key "true" is what a values file's YAML makes of an unquoted on, yes, y or true (lower, title or upper case): quote the label key, as in 'on': value`
		isFalse = `key "false" is what a values file's YAML makes of an unquoted off, no, n or false (lower, title or upper case): quote the label key, as in 'off': value`
	)
	refused := []struct{ file, want string }{
		{"pool: {nodeSelector: {on: x}}", "pool.nodeSelector: " + isTrue},
		{"pool:\n  nodeSelector:\n    yes: x\n", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {y: x}}", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {Y: x}}", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {ON: x}}", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {Yes: x}}", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {true: x}}", "pool.nodeSelector: " + isTrue},
		{"pool: {nodeSelector: {off: x}}", "pool.nodeSelector: " + isFalse},
		{"pool: {nodeSelector: {no: x}}", "pool.nodeSelector: " + isFalse},
		{"pool: {nodeSelector: {n: x}}", "pool.nodeSelector: " + isFalse},
		{"pool: {nodeSelector: {NO: x}}", "pool.nodeSelector: " + isFalse},
		{"pool: {nodeSelector: {False: x}}", "pool.nodeSelector: " + isFalse},
		// Quoted, the key is the label key "true": refused too, since the chart cannot tell it from on.
		{`pool: {nodeSelector: {"true": x}}`, "pool.nodeSelector: " + isTrue},
		{"orchestrator: {nodeSelector: {on: system}}", "orchestrator.nodeSelector: " + isTrue},
		{"orchestrator: {mode: deployment, metrics: {serviceMonitor: {enabled: true, labels: {yes: x}}}}",
			"orchestrator.metrics.serviceMonitor.labels: " + isTrue},
	}
	for _, tc := range refused {
		t.Run(tc.file, func(t *testing.T) {
			_, err := render(t, helmValues(t, tc.file))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	accepted := []struct {
		file string
		vals func(t *testing.T) map[string]any // instead of file: values given otherwise
		key  string                            // the pool's label key, as rendered
	}{
		{file: `pool: {nodeSelector: {"on": x}}`, key: "on"},
		{file: "pool: {nodeSelector: {'yes': x}}", key: "yes"},
		{file: "pool: {nodeSelector: {!!str n: x}}", key: "n"},
		// Not a YAML 1.1 boolean.
		{file: "pool: {nodeSelector: {oN: x}}", key: "oN"},
		// --set reads keys as written.
		{vals: func(t *testing.T) map[string]any {
			v := minimal(t)
			require.NoError(t, strvals.ParseInto("pool.nodeSelector.on=x", v))
			return v
		}, key: "on"},
	}
	for _, tc := range accepted {
		t.Run(tc.key, func(t *testing.T) {
			var vals map[string]any
			if tc.vals != nil {
				vals = tc.vals(t)
			} else {
				vals = helmValues(t, tc.file)
			}
			r := mustRender(t, vals)
			assert.Equal(t, map[string]string{"pool": "notebooks", tc.key: "x"}, parsedConfig(t, r).Pool.NodeSelector)
			terms := warmer(t, r).Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			assert.Contains(t, terms[0].MatchExpressions, corev1.NodeSelectorRequirement{Key: tc.key, Operator: corev1.NodeSelectorOpIn, Values: []string{"x"}})
		})
	}

	t.Run("quoted keys in the other maps", func(t *testing.T) {
		r := mustRender(t, helmValues(t, `orchestrator:
  mode: deployment
  nodeSelector: {"on": system}
  metrics: {serviceMonitor: {enabled: true, labels: {"yes": x}}}
`))
		for name, pod := range orchestratorPods(t, r) {
			assert.Equal(t, map[string]string{"on": "system", "kubernetes.io/os": "linux"}, pod.NodeSelector, name)
		}
		sm := find[*unstructured.Unstructured](t, r, "")
		assert.Equal(t, "x", sm.GetLabels()["yes"], "the ServiceMonitor's label")
	})
}

// A refusal by the templates' checks is reported at templates/validate.yaml, whatever the mode,
// not at the object that happened to render first.
func TestTemplateRefusalsNameTheValidateTemplate(t *testing.T) {
	for _, mode := range []string{"cronjob", "deployment"} {
		_, err := render(t, minimal(t, "orchestrator: {mode: "+mode+"}", "maintenance: {nodeMaintenance: {enabled: false}}"))
		require.Error(t, err, mode)
		assert.Contains(t, err.Error(), "templates/validate.yaml:", mode)
		assert.Contains(t, err.Error(), "maintenance: enable at least one of", mode)
	}
}
