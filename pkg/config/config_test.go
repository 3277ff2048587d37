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
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse([]byte(minimal + tc.extra))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
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
