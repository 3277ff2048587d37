package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
)

const minimal = `apiVersion: image-prewarmer.io/v1alpha1
kind: OrchestratorConfig
pool:
  nodeSelector:
    pool: notebooks
`

func TestParseMinimalAppliesDefaults(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal))
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"pool": "notebooks"}, cfg.Pool.NodeSelector)
	assert.Equal(t, "os-upgrade", cfg.Taint.Key)
	assert.Equal(t, "os-upgrade/status", cfg.StatusLabel.Key)
	assert.True(t, cfg.Maintenance.NodeMaintenance.Enabled)
	assert.Equal(t, "spec.nodeName", cfg.Maintenance.NodeMaintenance.NodeNameField)
	assert.Equal(t, 2*time.Hour, cfg.MaxWaitForWarm.Duration)
	assert.Equal(t, config.OnWarmTimeoutRelease, cfg.OnWarmTimeout)
	assert.False(t, cfg.Events.Transitions, "routine transitions record no Event by default")
	assert.Equal(t, "image-prewarmer/image-prewarmer-warmer", cfg.Instance, "instance defaults to the warmer's namespace/name")
}

func TestParseFull(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal + `instance: prewarm/notebooks
taint: {key: example.com/prewarm, value: "yes", effect: NoExecute}
statusLabel: {key: example.com/prewarm-status, value: pending, warmingValue: pulling}
upgrade:
  kernelVersions: ["6.8.0-1017-azure"]
  kernelVersionLabel: kernel-version
maintenance:
  nodeMaintenance: {enabled: false}
  nodeLabel: {enabled: true, selector: "upgrade=pending"}
  cordoned: {enabled: true}
warmer: {namespace: prewarm, daemonSetName: notebooks-warmer}
maxConcurrent: 25%
cancelAfter: 0s
maxWaitForUpgrade: 12h
maxWaitForWarm: 90m
onWarmTimeout: keep
events: {namespace: default, transitions: true}
client: {qps: 5, burst: 10, timeout: 10s}
`))
	require.NoError(t, err)
	assert.Equal(t, intstr.FromString("25%"), cfg.MaxConcurrent)
	assert.Equal(t, time.Duration(0), cfg.CancelAfter.Duration)
	assert.Equal(t, 90*time.Minute, cfg.MaxWaitForWarm.Duration)
	assert.Equal(t, config.OnWarmTimeoutKeep, cfg.OnWarmTimeout)
	assert.Equal(t, "upgrade=pending", cfg.NodeLabelSelector().String())
	assert.Equal(t, "prewarm/notebooks", cfg.Instance)
	assert.Equal(t, config.Events{Namespace: "default", Transitions: true}, cfg.Events)
}

func TestClientRateLimitByMode(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal))
	require.NoError(t, err)
	assert.Nil(t, cfg.Client.QPS)
	assert.Equal(t, float32(50), cfg.Client.QPSFor(true), "unset: 50 in the event-driven mode")
	assert.Equal(t, float32(-1), cfg.Client.QPSFor(false), "unset: no limit for one-shot commands")
	assert.Equal(t, 100, cfg.Client.Burst)

	cfg, err = config.Parse([]byte(minimal + "client: {qps: null}\n"))
	require.NoError(t, err)
	assert.Nil(t, cfg.Client.QPS, "null is unset (the chart's default)")

	for _, qps := range []float32{-1, 7.5} {
		cfg, err = config.Parse([]byte(minimal + fmt.Sprintf("client: {qps: %g}\n", qps)))
		require.NoError(t, err)
		assert.Equal(t, qps, cfg.Client.QPSFor(true), "set: the same in both modes")
		assert.Equal(t, qps, cfg.Client.QPSFor(false))
	}
}

func TestParseRefusesNamingTheField(t *testing.T) {
	cases := []struct {
		name, extra, want string
	}{
		{"unknown top-level field", "maxConcurent: 3\n", `unknown field "maxConcurent"`},
		{"unknown nested field", "upgrade:\n  kernelVersion: [x]\n", `unknown field "upgrade.kernelVersion"`},
		{"duplicate field", "onWarmTimeout: keep\nonWarmTimeout: release\n", "onWarmTimeout"},
		{"bad duration", "maxWaitForWarm: 2 hours\n", `maxWaitForWarm: Invalid value: "2 hours"`},
		{"negative duration", "cancelAfter: -5m\n", `cancelAfter: Invalid value: "-5m": must not be negative`},
		{"negative duration, as written", "cancelAfter: -1h30m\n", `cancelAfter: Invalid value: "-1h30m": must not be negative`},
		{"zero duration, as written", "maxWaitForWarm: 0m\n", `maxWaitForWarm: Invalid value: "0m": must be greater than 0`},
		// 0 is no duration out of range: it lacks its unit.
		{"duration written as a number", "maxWaitForWarm: 0\n", "maxWaitForWarm: Invalid value: 0: must be a duration with its unit, such as 90s"},
		{"null duration", "cancelAfter: null\n", "cancelAfter: Required value: a duration such as 90s"},
		{"duration left empty", "maxWaitForWarm:\n", "maxWaitForWarm: Required value"},
		{"duration out of range", "maxWaitForWarm: 2562048h\n", `maxWaitForWarm: Invalid value: "2562048h": out of range: at most 2562047h`},
		{"maintenance version with a space", "maintenance:\n  nodeMaintenance: {version: 'v1beta1 '}\n", `maintenance.nodeMaintenance.version: Invalid value: "v1beta1 "`},
		{"maintenance version in upper case", "maintenance:\n  nodeMaintenance: {version: V1Beta1}\n", `maintenance.nodeMaintenance.version: Invalid value: "V1Beta1"`},
		{"zero warm wait", "maxWaitForWarm: 0s\n", "maxWaitForWarm: Invalid value"},
		{"bad template", "upgrade:\n  when: '{{ .Kernel '\n", "upgrade.when: Invalid value"},
		{"template with unknown function", "upgrade:\n  when: '{{ nosuchfunc .Kernel }}'\n", "upgrade.when"},
		{"template not rendering a bool", "upgrade:\n  when: '{{ .Kernel }}'\n", "upgrade.when"},
		{"bad effect", "taint: {effect: NoSchedul}\n", "taint.effect: Unsupported value"},
		{"bad taint key", "taint: {key: 'bad key'}\n", "taint.key: Invalid value"},
		{"negative budget", "maxConcurrent: -1\n", "maxConcurrent: Invalid value"},
		{"bad percentage", "maxConcurrent: 150%\n", "maxConcurrent: Invalid value"},
		{"bad onWarmTimeout", "onWarmTimeout: ignore\n", "onWarmTimeout: Unsupported value"},
		// The API server refuses an Event about a node in any other namespace.
		{"events in another namespace", "events: {namespace: ops}\n", `events.namespace: Unsupported value: "ops": supported values: "default"`},
		{"no source", "maintenance:\n  nodeMaintenance: {enabled: false}\n", "maintenance: Required value"},
		{"label source without selector", "maintenance:\n  nodeLabel: {enabled: true}\n", "maintenance.nodeLabel.selector: Required value"},
		{"bad label selector", "maintenance:\n  nodeLabel: {enabled: true, selector: 'a=(b'}\n", "maintenance.nodeLabel.selector: Invalid value"},
		{"same label values", "statusLabel: {value: x, warmingValue: x}\n", "statusLabel.warmingValue: Invalid value"},
		{"wrong type", "client: {qps: fast}\n", "client.qps: Invalid value: fast: must be a number, not a string"},
		// The decoder said "taint.value: expected string, got bool", without the value.
		{"boolean for a string", "taint: {value: true}\n", `taint.value: Invalid value: true: must be a string, and YAML reads true unquoted as a boolean: quote it ("true")`},
		{"YAML 1.1 boolean for a string", "statusLabel: {value: no}\n", `statusLabel.value: Invalid value: no: must be a string, and YAML reads no unquoted as a boolean: quote it ("no")`},
		{"number for a string, as written", "upgrade:\n  kernelVersions: [6.10]\n", `upgrade.kernelVersions[0]: Invalid value: 6.10: must be a string, and YAML reads 6.10 unquoted as a number: quote it ("6.10")`},
		{"every wrong type is named", "taint: {key: 2, value: on}\n", `taint.value: Invalid value: on: must be a string`},
		{"list for a map", "taint: [a, b]\n", "taint: Invalid value: [a, b]: must be a map of fields (name: value), not a list"},
		{"map for a list", "upgrade: {kernelVersions: {a: b}}\n", "upgrade.kernelVersions: Invalid value: {a: b}: must be a list, not a map"},
		{"quoted integer", "client: {burst: \"5\"}\n", `client.burst: Invalid value: "5": must be an integer, written without quotes (5)`},
		{"fraction for an integer", "client: {burst: 1.5}\n", "client.burst: Invalid value: 1.5: must be an integer, not a fraction"},
		{"maintenance resource in the core group", "maintenance:\n  nodeMaintenance: {group: '', resource: secrets}\n",
			`maintenance.nodeMaintenance.group: Invalid value: "": must be a custom resource's API group, which has at least one dot`},
		{"maintenance group without a dot", "maintenance:\n  nodeMaintenance: {group: apps, resource: daemonsets}\n",
			`maintenance.nodeMaintenance.group: Invalid value: "apps": must be a custom resource's API group`},
		{"integer out of range", "client: {burst: 10000000000000000000}\n",
			"client.burst: Invalid value: 10000000000000000000: must be an integer, from -9223372036854775808 to 9223372036854775807"},
		{"integer out of range, in exponent form", "client: {burst: 1e21}\n", "client.burst: Invalid value: 1e21: must be an integer, from -9223372036854775808 to 9223372036854775807"},
		{"budget out of range", "maxConcurrent: 3000000000\n",
			"maxConcurrent: Invalid value: 3000000000: must be an integer or a percentage such as 25%, from -2147483648 to 2147483647"},
		{"fractional budget", "maxConcurrent: 2.5\n", "maxConcurrent: Invalid value: 2.5: must be an integer or a percentage such as 25%, not a fraction"},
		{"quoted boolean", "events: {transitions: 'true'}\n", "events.transitions: Invalid value: 'true': must be true or false, written without quotes (true)"},
		{"zero qps", "client: {qps: 0}\n", "client.qps: Invalid value"},
		{"negative qps other than -1", "client: {qps: -2}\n", "client.qps: Invalid value"},
		{"transitions not a bool", "events: {transitions: sometimes}\n", "events.transitions: Invalid value: sometimes: must be true or false, not a string"},
		{"status label in pool selector", "statusLabel: {key: pool}\n", "statusLabel.key: Invalid value"},
		{"kernel version not a label value", "upgrade:\n  kernelVersionLabel: kv\n  kernelVersions: ['5.15.0 #1 SMP']\n", "upgrade.kernelVersions[0]: Invalid value"},
		{"instance without a namespace", "instance: notebooks\n", `instance: Invalid value: "notebooks": must be <namespace>/<release>`},
		{"instance with two slashes", "instance: prewarm/notebooks/x\n", `instance: Invalid value: "prewarm/notebooks/x": must be <namespace>/<release>, with exactly one '/'`},
		{"instance with an empty release", "instance: prewarm/\n", `instance: Invalid value: "prewarm/": must be <namespace>/<release>, both non-empty`},
		{"instance with an empty namespace", "instance: /notebooks\n", `instance: Invalid value: "/notebooks"`},
		{"instance namespace not a DNS label", "instance: Pre_warm/notebooks\n", `instance: Invalid value: "Pre_warm/notebooks": namespace "Pre_warm"`},
		{"instance namespace a subdomain", "instance: pre.warm/notebooks\n", `namespace "pre.warm"`},
		{"instance release not a DNS subdomain", "instance: prewarm/Note books\n", `instance: Invalid value: "prewarm/Note books": release "Note books"`},
		// The chart's values.schema.json pattern for the same value.
		{"node name field with a space", "maintenance:\n  nodeMaintenance: {nodeNameField: 'spec.node name'}\n", `maintenance.nodeMaintenance.nodeNameField: Invalid value: "spec.node name"`},
		{"node name field with brackets", "maintenance:\n  nodeMaintenance: {nodeNameField: 'spec.nodes[0]'}\n", "maintenance.nodeMaintenance.nodeNameField: Invalid value"},
		{"node name field with a slash", "maintenance:\n  nodeMaintenance: {nodeNameField: 'metadata.labels.example.com/node'}\n", "maintenance.nodeMaintenance.nodeNameField: Invalid value"},
		{"node name field ending in a dot", "maintenance:\n  nodeMaintenance: {nodeNameField: 'spec.'}\n", "maintenance.nodeMaintenance.nodeNameField: Invalid value"},
		{"empty node name field", "maintenance:\n  nodeMaintenance: {nodeNameField: ''}\n", "maintenance.nodeMaintenance.nodeNameField: Invalid value"},
		// 0% would read as "no limit" (as 0 does): far more likely meant as "none at once".
		{"zero percent budget", "maxConcurrent: 0%\n", `maxConcurrent: Invalid value: "0%": must be a percentage from 1% to 100%, or 0 (the number) for no limit`},
		{"budget over 100 percent", "maxConcurrent: 101%\n", `maxConcurrent: Invalid value: "101%"`},
		{"padded percentage", "maxConcurrent: 05%\n", `maxConcurrent: Invalid value: "05%"`},
		// The chart's values.schema.json refuses "5" as well: it renders what the schema accepts.
		{"quoted budget", "maxConcurrent: \"5\"\n", `maxConcurrent: Invalid value: "5": a number must be written without quotes (maxConcurrent: 5)`},
		{"budget of the wrong type", "maxConcurrent: true\n", "maxConcurrent: Invalid value: true: must be an integer or a percentage such as 25%, not a boolean"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(minimal + tc.extra))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestParseAcceptsValidValues(t *testing.T) {
	for _, extra := range []string{
		"instance: prewarm/notebooks\n",
		"instance: prewarm/notebooks.v2\n",
		"instance: a/b\n",
		"maxConcurrent: 0\n",
		"maxConcurrent: 1%\n",
		"maxConcurrent: 100%\n",
		"maintenance:\n  nodeMaintenance: {nodeNameField: spec.target.node}\n",
		"maintenance:\n  nodeMaintenance: {nodeNameField: metadata.labels.node_name-1}\n",
		"maintenance:\n  nodeMaintenance: {nodeNameField: nodeName}\n",
		"maintenance:\n  nodeMaintenance: {version: v2alpha1}\n",
		"maxWaitForWarm: .5h\ncancelAfter: 1.h\n",
		"maxWaitForUpgrade: 2562047h\n",
	} {
		t.Run(extra, func(t *testing.T) {
			_, err := config.Parse([]byte(minimal + extra))
			require.NoError(t, err)
		})
	}
}

// A selector label without a value decoded as "": the pool became the nodes whose label value is
// empty, most likely not one node, and nothing said so.
func TestParseRefusesNullSelectorValue(t *testing.T) {
	const head = "apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\n"
	for name, tc := range map[string]struct{ doc, want string }{
		"flow, no value":     {"pool: {nodeSelector: {pool: }}\n", "pool.nodeSelector[pool]: Invalid value: null"},
		"block, no value":    {"pool:\n  nodeSelector:\n    pool:\n", "pool.nodeSelector[pool]: Invalid value: null"},
		"tilde":              {"pool: {nodeSelector: {pool: ~}}\n", "pool.nodeSelector[pool]: Invalid value: null"},
		"null, among others": {"pool: {nodeSelector: {a: b, example.com/pool: null}}\n", "pool.nodeSelector[example.com/pool]: Invalid value: null"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(head + tc.doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), "write '' (quoted)")
		})
	}

	// A value of another type is named by its label, not only by the map.
	for doc, want := range map[string]string{
		"pool: {nodeSelector: {tier: 1}}\n":         `pool.nodeSelector[tier]: Invalid value: 1: must be a string, and YAML reads 1 unquoted as a number: quote it ("1")`,
		"pool: {nodeSelector: {a: b, gpu: true}}\n": `pool.nodeSelector[gpu]: Invalid value: true: must be a string, and YAML reads true unquoted as a boolean: quote it ("true")`,
		"pool: {nodeSelector: {pool: [a]}}\n":       `pool.nodeSelector[pool]: Invalid value: [a]: must be a string, not a list`,
	} {
		_, err := config.Parse([]byte(head + doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}

	// A label key YAML reads as a boolean would select the label true or false.
	for doc, want := range map[string]string{
		"pool: {nodeSelector: {on: x}}\n":        `pool.nodeSelector: Invalid value: key on: YAML reads it unquoted as the boolean true, so the key would be "true": quote it ('on')`,
		"pool:\n  nodeSelector:\n    n: x\n":     `pool.nodeSelector: Invalid value: key n: YAML reads it unquoted as the boolean false`,
		"pool: {nodeSelector: {a: b, Yes: x}}\n": `key Yes: YAML reads it unquoted as the boolean true`,
	} {
		_, err := config.Parse([]byte(head + doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
	for _, doc := range []string{"pool: {nodeSelector: {'on': x}}\n", "pool: {nodeSelector: {\"yes\": x}}\n", "pool: {nodeSelector: {ontology: x}}\n",
		"pool: {nodeSelector: {!!str on: x}}\n"} {
		_, err := config.Parse([]byte(head + doc))
		require.NoError(t, err, doc)
	}

	// An empty label value is legal: written as '' it is meant.
	for doc, want := range map[string]map[string]string{
		"pool: {nodeSelector: {pool: ''}}\n":     {"pool": ""},
		"pool: {nodeSelector: {pool: \"\"}}\n":   {"pool": ""},
		"pool: {nodeSelector: {pool: 'null'}}\n": {"pool": "null"},
	} {
		cfg, err := config.Parse([]byte(head + doc))
		require.NoError(t, err, doc)
		assert.Equal(t, want, cfg.Pool.NodeSelector, doc)
	}
}

func TestParseRefusesEmptyPool(t *testing.T) {
	for name, doc := range map[string]string{
		"missing": "apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\n",
		"empty":   "apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {}}\n",
		"file":    "",
		// A document that is null (only a comment or ---) is not "not a map": it lacks the fields.
		"comment only":   "# nothing yet\n",
		"separator only": "---\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "pool.nodeSelector")
		})
	}
}

// Only the first YAML document of a file was read: a second one, a config appended by mistake or a
// fragment of another file, was ignored without a word.
func TestParseRefusesSeveralDocuments(t *testing.T) {
	for name, doc := range map[string]string{
		"two configurations": minimal + "---\n" + minimal + "maxConcurrent: 150%\n",
		"a second fragment":  minimal + "---\nmaxConcurrent: 3\n",
		"an empty first one": "---\n---\n" + minimal,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(doc))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "YAML documents")
		})
	}
	for name, doc := range map[string]string{
		"leading separator":  "---\n" + minimal,
		"trailing separator": minimal + "---\n",
		"document end":       minimal + "...\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := config.Parse([]byte(doc))
			require.NoError(t, err)
		})
	}
}

func TestParseRefusesWrongKindAndVersion(t *testing.T) {
	_, err := config.Parse([]byte("apiVersion: v1\nkind: ConfigMap\npool: {nodeSelector: {a: b}}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "apiVersion: Unsupported value")
	assert.Contains(t, err.Error(), "kind: Unsupported value")

	// A file that does not say what it is was read as the current version (the defaults filled both in).
	_, err = config.Parse([]byte("pool: {nodeSelector: {a: b}}\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "apiVersion: Required value")
	assert.Contains(t, err.Error(), "kind: Required value")
}

// Several problems are listed one per line under their count; one is said on its own; each stays
// a *field.Error for errors.As.
func TestParseListsSeveralProblems(t *testing.T) {
	_, err := config.Parse([]byte(minimal + "taint: {key: bad key, effect: Sometimes}\n"))
	require.Error(t, err)
	assert.Equal(t, "2 problems:\n"+
		`  - taint.key: Invalid value: "bad key": `+"name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')\n"+
		`  - taint.effect: Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"`, err.Error())
	var fe *field.Error
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "taint.key", fe.Field)

	_, err = config.Parse([]byte(minimal + "taint: {effect: Sometimes}\n"))
	require.Error(t, err)
	assert.Equal(t, `taint.effect: Unsupported value: "Sometimes": supported values: "NoSchedule", "PreferNoSchedule", "NoExecute"`, err.Error())
}

// The chart's values given as --config were refused with only "unknown field" errors.
func TestParseHintsAtChartValues(t *testing.T) {
	// The command docs/operations.md gives.
	const command = `kubectl -n image-prewarmer get configmap prewarm-image-prewarmer -o jsonpath='{.data.config\.yaml}' > config.yaml`
	ops, err := os.ReadFile("../../docs/operations.md")
	require.NoError(t, err)
	require.Contains(t, string(ops), command, "the hint gives the command the docs give")

	files, err := filepath.Glob("../../values-examples/*.yaml")
	require.NoError(t, err)
	for _, path := range append(files, "../../charts/image-prewarmer/values.yaml") {
		t.Run(path, func(t *testing.T) {
			_, err := config.Load(path)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "\nthis looks like the chart's values: the orchestrator reads the config.yaml that the chart renders")
			assert.Contains(t, err.Error(), command)
		})
	}

	// Every top-level value the configuration does not have gets the hint.
	data, err := os.ReadFile("../../charts/image-prewarmer/values.yaml")
	require.NoError(t, err)
	var values map[string]any
	require.NoError(t, yaml.Unmarshal(data, &values))
	for key := range values {
		if key == "pool" {
			continue // in minimal
		}
		_, err := config.Parse([]byte(minimal + key + ": {}\n"))
		if err != nil && strings.Contains(err.Error(), fmt.Sprintf("unknown field %q", key)) {
			assert.Contains(t, err.Error(), "looks like the chart's values", key)
		}
	}

	// Not for a mere typo.
	_, err = config.Parse([]byte(minimal + "maxConcurent: 3\n"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "chart's values")
}

// A file that is not a map was refused with "json: cannot unmarshal array into Go value of type config.Config".
func TestParseRefusesADocumentNotAMap(t *testing.T) {
	for doc, want := range map[string]string{
		"- a\n- b\n": "the configuration must be a map of fields (apiVersion: image-prewarmer.io/v1alpha1, kind: OrchestratorConfig, pool: ...), not a list: [a, b]",
		"hello\n":    "not a string: hello",
	} {
		_, err := config.Parse([]byte(doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(minimal), 0o600))
	_, err := config.Load(path)
	require.NoError(t, err)

	_, err = config.Load(filepath.Join(dir, "missing.yaml"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing.yaml")
}

// LoadWithoutRule, for cleanup, leaves out an upgrade.when that Load refuses and says why, but
// refuses every other problem as Load does.
func TestLoadWithoutRule(t *testing.T) {
	dir := t.TempDir()
	write := func(name, extra string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(minimal+extra), 0o600))
		return path
	}
	broken := write("broken.yaml", "upgrade:\n  when: '{{ eq .Labels.pool \"notebooks\" }}'\n")
	_, err := config.Load(broken)
	require.ErrorContains(t, err, "upgrade.when")

	cfg, dropped, err := config.LoadWithoutRule(broken)
	require.NoError(t, err)
	assert.Empty(t, cfg.Upgrade.When, "left out")
	require.Error(t, dropped)
	assert.Contains(t, dropped.Error(), "upgrade.when")
	assert.Contains(t, dropped.Error(), "sample node")
	assert.Equal(t, map[string]string{"pool": "notebooks"}, cfg.Pool.NodeSelector, "the rest as written")

	good := "{{ ne .Kernel .Baseline.Kernel }}"
	cfg, dropped, err = config.LoadWithoutRule(write("good.yaml", "upgrade:\n  when: '"+good+"'\n"))
	require.NoError(t, err)
	assert.NoError(t, dropped)
	assert.Equal(t, good, cfg.Upgrade.When, "a rule that works is kept")

	_, _, err = config.LoadWithoutRule(write("both.yaml", "maxConcurrent: -1\nupgrade:\n  when: '{{ .Kernel }}'\n"))
	require.ErrorContains(t, err, "maxConcurrent", "any other problem is refused")
}

// Parse never panics, whatever the file holds: bad input is an error.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(minimal + "maxConcurrent: 25%\ncancelAfter: 0s\nupgrade: {when: '{{ ne .Kernel .Baseline.Kernel }}'}\n"))
	f.Add([]byte(minimal + "---\nmaxConcurrent: 3\n"))
	f.Add([]byte("x: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := config.Parse(data)
		if err == nil {
			require.NoError(t, cfg.Validate())
		}
	})
}
