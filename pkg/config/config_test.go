package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/util/intstr"

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
events: {namespace: ops, transitions: true}
client: {qps: 5, burst: 10, timeout: 10s}
`))
	require.NoError(t, err)
	assert.Equal(t, intstr.FromString("25%"), cfg.MaxConcurrent)
	assert.Equal(t, time.Duration(0), cfg.CancelAfter.Duration)
	assert.Equal(t, 90*time.Minute, cfg.MaxWaitForWarm.Duration)
	assert.Equal(t, config.OnWarmTimeoutKeep, cfg.OnWarmTimeout)
	assert.Equal(t, "upgrade=pending", cfg.NodeLabelSelector().String())
	assert.Equal(t, "prewarm/notebooks", cfg.Instance)
	assert.Equal(t, config.Events{Namespace: "ops", Transitions: true}, cfg.Events)
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
		{"negative duration", "cancelAfter: -5m\n", "cancelAfter: Invalid value"},
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
		{"no source", "maintenance:\n  nodeMaintenance: {enabled: false}\n", "maintenance: Required value"},
		{"label source without selector", "maintenance:\n  nodeLabel: {enabled: true}\n", "maintenance.nodeLabel.selector: Required value"},
		{"bad label selector", "maintenance:\n  nodeLabel: {enabled: true, selector: 'a=(b'}\n", "maintenance.nodeLabel.selector: Invalid value"},
		{"same label values", "statusLabel: {value: x, warmingValue: x}\n", "statusLabel.warmingValue: Invalid value"},
		{"wrong type", "client: {qps: fast}\n", "client.qps"},
		{"zero qps", "client: {qps: 0}\n", "client.qps: Invalid value"},
		{"negative qps other than -1", "client: {qps: -2}\n", "client.qps: Invalid value"},
		{"transitions not a bool", "events: {transitions: sometimes}\n", "events.transitions"},
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
		"pool: {nodeSelector: {tier: 1}}\n":         `pool.nodeSelector[tier]: Invalid value: "1": must be a string`,
		"pool: {nodeSelector: {a: b, gpu: true}}\n": `pool.nodeSelector[gpu]: Invalid value: "true": must be a string`,
		"pool: {nodeSelector: {pool: [a]}}\n":       `pool.nodeSelector[pool]: Invalid value: "[\"a\"]": must be a string`,
	} {
		_, err := config.Parse([]byte(head + doc))
		require.Error(t, err, doc)
		assert.Contains(t, err.Error(), want, doc)
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
