package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/klog/v2"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/ratelimit"
)

func execute(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := NewRootCommand(&out, &errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestExitCodes(t *testing.T) {
	_, _, err := execute(t, "run", "--once", "--no-such-flag")
	assert.Equal(t, ExitConfig, ExitCode(err), "an unknown flag is a usage error")

	_, _, err = execute(t, "run", "--once", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	require.Error(t, err)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), "missing.yaml")

	bad := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	_, _, err = execute(t, "status", "-o", "xml", "--config", bad)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), `"xml"`)

	for _, c := range []struct{ args, want string }{
		{"--interval 5s", "--interval: only with --watch"},
		{"-w --interval 100ms", "--interval: must be at least 1s (each refresh reads the whole pool), got 100ms"},
		{"-w --interval 0s", "--interval: must be at least 1s"},
	} {
		_, _, err = execute(t, append([]string{"status", "--config", bad}, strings.Fields(c.args)...)...)
		assert.Equal(t, ExitConfig, ExitCode(err), c.args)
		assert.ErrorContains(t, err, c.want, c.args)
	}

	_, _, err = execute(t, "run", "--once", "--config", bad, "--log-format", "yaml", "--kubeconfig", filepath.Join(t.TempDir(), "none"))
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), "--log-format", "refused before the missing kubeconfig")

	_, _, err = execute(t, "cleanup", "--uninstall", "--settle", "-1s", "--config", bad)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), "--settle -1s")

	assert.Equal(t, ExitFailure, ExitCode(errors.New("listing pool nodes: connection refused")))
	assert.Equal(t, 0, ExitCode(nil))
}

// Flags that are checked before anything connects, and the credentials' errors, name what is
// wrong: the flag, the path, or where credentials are looked for.
func TestFlagAndCredentialErrors(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	missing := filepath.Join(t.TempDir(), "missing")
	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	noContext := filepath.Join(t.TempDir(), "no-context")
	require.NoError(t, os.WriteFile(noContext, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
`), 0o600))
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--once", "--pushgateway", "not a url"}, `--pushgateway "not a url": not a URL`},
		{[]string{"run", "--once", "--pushgateway", "ftp://gateway:9091"}, `--pushgateway "ftp://gateway:9091": must be an http or https URL`},
		{[]string{"run", "--once", "--pushgateway", "http://"}, `--pushgateway "http://": has no host`},
		{[]string{"run", "--once", "--pushgateway", ":9091"}, `--pushgateway ":9091": has no host`},
		{[]string{"run", "--once", "--pushgateway", "http://:9091/"}, `--pushgateway "http://:9091/": has no host`},
		{[]string{"run", "--once", "--pushgateway", "http://gw:9091/?x=1"}, `--pushgateway "http://gw:9091/?x=1": must not have a query or fragment`},
		{[]string{"run", "--once", "--pushgateway", "http://gw:9091/#"}, `--pushgateway "http://gw:9091/#": must not have a query or fragment`},
		{[]string{"cleanup", "--settle", "5s"}, "--settle: only with --uninstall"},
		{[]string{"status", "--kubeconfig", missing}, "--kubeconfig: no such file: " + missing},
		{[]string{"cleanup", "--kubeconfig", ""}, "--kubeconfig: needs a path, got an empty one"},
		{[]string{"status", "--kubeconfig", empty}, "--kubeconfig " + empty + ": no cluster, user or context in it"},
		{[]string{"status", "--kubeconfig", noContext}, "--kubeconfig " + noContext + ": no current-context, or its cluster has no server"},
		{[]string{"status"}, "none found: not running in a cluster, and no --kubeconfig, $KUBECONFIG or ~/.kube/config"},
		// Accepted: the command goes on, and stops at the credentials.
		{[]string{"run", "--once", "--pushgateway", "gateway:9091", "--kubeconfig", missing}, "loading cluster credentials"},
		{[]string{"cleanup", "--uninstall", "--settle", "5s", "--kubeconfig", missing}, "loading cluster credentials"},
	} {
		if len(tc.args) == 1 && fileExists(clientcmd.RecommendedHomeFile) {
			// client-go fixes the home directory's kubeconfig path at start-up, whatever $HOME
			// says now: with one on this machine, credentials would be found (and used).
			t.Logf("skipped %v: %s exists", tc.args, clientcmd.RecommendedHomeFile)
			continue
		}
		_, _, err := execute(t, append(tc.args, "--config", cfg)...)
		require.Error(t, err, tc.args)
		assert.Equal(t, ExitConfig, ExitCode(err), tc.args)
		assert.Contains(t, err.Error(), tc.want, tc.args)
	}
}

// A flag that takes a path, given empty (a script's unset variable), is refused, naming the flag:
// not read as absent, and not left to fail with a bare "open :".
func TestEmptyPathsAreRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		flag string
	}{
		{[]string{"status", "--config", ""}, "--config"},
		{[]string{"cleanup", "--config="}, "--config"},
		{[]string{"hold", "--copy-to", ""}, "--copy-to"},
	} {
		_, _, err := execute(t, tc.args...)
		require.Error(t, err, tc.args)
		assert.Equal(t, ExitConfig, ExitCode(err), tc.args)
		assert.Contains(t, err.Error(), tc.flag+": needs a path, got an empty one", tc.args)
	}
}

// With --log-format json, the error that ends the process is a JSON log line too, carrying the
// exit code; in text, one plain line.
func TestMainReportsTheErrorInTheLogFormat(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"status", "--config", missing, "--log-format", "json"}, &out, &errOut)
	assert.Equal(t, ExitConfig, code)
	var line struct {
		Level, Msg, Error string
		ExitCode          int
	}
	require.NoError(t, json.Unmarshal(errOut.Bytes(), &line), errOut.String())
	assert.Equal(t, "ERROR", line.Level)
	assert.Contains(t, line.Error, missing)
	assert.Equal(t, ExitConfig, line.ExitCode)

	errOut.Reset()
	code = Main(context.Background(), []string{"status", "--config", missing}, &out, &errOut)
	assert.Equal(t, ExitConfig, code)
	assert.Equal(t, "prewarm-orchestrator: reading config: open "+missing+": no such file or directory\n", errOut.String())
	assert.Zero(t, Main(context.Background(), []string{"version"}, &out, &errOut))

	// A bad flag stops parsing; a --log-format json after it still applies to the error.
	for _, args := range [][]string{
		{"status", "--bogus", "--log-format", "json"},
		{"run", "--once", "--bogus", "--log-format=json"},
		{"--log-format", "json", "status", "--bogus"},
	} {
		errOut.Reset()
		assert.Equal(t, ExitConfig, Main(context.Background(), args, &out, &errOut), args)
		require.NoError(t, json.Unmarshal(errOut.Bytes(), &line), "%v: %s", args, errOut.String())
		assert.Equal(t, "unknown flag: --bogus", line.Error, args)
	}
	errOut.Reset()
	assert.Equal(t, ExitConfig, Main(context.Background(), []string{"status", "--bogus", "--", "--log-format", "json"}, &out, &errOut))
	assert.Equal(t, "prewarm-orchestrator: unknown flag: --bogus\n", errOut.String(), "nothing after -- is a flag")
}

// Without --config, a missing file at the default path (a run outside the chart's pods) says to
// pass --config and how to save the installation's file; a missing file given with --config,
// even the default path, is reported as it is.
func TestMissingDefaultConfigSaysToPassConfig(t *testing.T) {
	if _, err := os.Stat(config.DefaultPath); !errors.Is(err, fs.ErrNotExist) {
		t.Skipf("%s exists on this machine", config.DefaultPath)
	}
	var out, errOut bytes.Buffer
	for _, command := range [][]string{{"status"}, {"run", "--once"}, {"cleanup"}} {
		errOut.Reset()
		assert.Equal(t, ExitConfig, Main(context.Background(), command, &out, &errOut), command)
		assert.Equal(t, "prewarm-orchestrator: reading config: open "+config.DefaultPath+": no such file or directory\n"+
			"no --config given: "+config.DefaultPath+" is where the chart's pods mount the configuration; "+
			"elsewhere, pass the installation's config.yaml with --config, saved from the chart's ConfigMap (before an uninstall, which deletes it): "+
			`kubectl -n image-prewarmer get configmap prewarm-image-prewarmer -o jsonpath='{.data.config\.yaml}' > config.yaml `+
			"(release prewarm in namespace image-prewarmer: substitute yours)\n", errOut.String(), command)
	}

	// Given, even as the default path and before the command: no hint.
	for _, args := range [][]string{{"status", "--config", config.DefaultPath}, {"--config", config.DefaultPath, "status"}} {
		errOut.Reset()
		assert.Equal(t, ExitConfig, Main(context.Background(), args, &out, &errOut))
		assert.Equal(t, "prewarm-orchestrator: reading config: open "+config.DefaultPath+": no such file or directory\n", errOut.String(), args)
	}
}

func TestVersion(t *testing.T) {
	out, _, err := execute(t, "version")
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(out, "prewarm-orchestrator dev (commit unknown, go1."), out)
}

func TestRenderStatusTable(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := plan.Status{
		Time: now, Instance: "prewarm/notebooks",
		Totals: map[string]int{"pool": 20, "inMaintenance": 3, "tainted": 1, "warming": 1, "released": 4},
		Nodes: []plan.NodeStatus{
			{Name: "nb-1", Phase: "warming", Since: now.Add(-90 * time.Second), Kernel: "6.8.0-100", BaselineKernel: "5.15.0-100",
				Warmer: "ImagePull", LastProblem: "ImagePull: pod w container warm-0 (image x): ErrImagePull: not found", InPool: true},
			{Name: "nb-2", Phase: "released", ReleaseReason: "warm", Since: now.Add(-time.Hour), Kernel: "6.8.0-100", Warmer: "none", InPool: true},
		},
	}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st, "table"))
	out := buf.String()
	assert.Contains(t, out, "pool=20 inMaintenance=3 joining=0 waiting=0 tainted=1 warming=1 released=4")
	assert.Regexp(t, `nb-1\s+warming\s+1m30s\s+5\.15\.0-100 -> 6\.8\.0-100\s+ImagePull\s+-\s+ImagePull: pod w`, out)
	assert.Regexp(t, `nb-2\s+released \(warm\)\s+1h0m0s`, out)
	assert.NotContains(t, out, "UNINSTALLING")

	st.Uninstalling = "2026-11-25T11:59:00Z"
	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "table"))
	assert.Contains(t, buf.String(), "UNINSTALLING since 2026-11-25T11:59:00Z: no node is tainted or adopted")

	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "json"))
	assert.Contains(t, buf.String(), `"releaseReason": "warm"`)
}

func TestPrintPlan(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, printPlan(&buf, plan.Plan{
		Actions: []plan.Action{{Node: "nb-1", Type: plan.Enter, Reason: "nodeMaintenance", Message: "in maintenance"}},
		Notes:   []plan.Note{{Message: "warmer DaemonSet x/y not found"}},
	}))
	assert.Contains(t, buf.String(), "# dry run: 1 action(s), nothing written")
	assert.Regexp(t, `nb-1\s+enter\s+nodeMaintenance\s+in maintenance`, buf.String())
	assert.Regexp(t, `-\s+note\s+warmer DaemonSet x/y not found`, buf.String())
}

func TestCopySelf(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "copy")
	// What a copy killed before its rename left behind.
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".copy-123"), []byte("partial"), 0o600))
	require.NoError(t, copySelf(dst))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "only the copy is left in the directory")
	assert.Equal(t, "copy", entries[0].Name())
	info, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), info.Mode().Perm())
	self, err := os.Executable()
	require.NoError(t, err)
	selfInfo, err := os.Stat(self)
	require.NoError(t, err)
	assert.Equal(t, selfInfo.Size(), info.Size())

	require.Error(t, copySelf(filepath.Join(t.TempDir(), "no", "such", "dir", "copy")))
}

// The event-driven mode refuses flags that make no sense for it before touching the cluster.
func TestRunWatchUsageErrors(t *testing.T) {
	good := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(good, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"pushgateway without --once", []string{"run", "--pushgateway", "http://127.0.0.1:9091"}, "--pushgateway"},
		{"zero resync", []string{"run", "--resync", "0s"}, "--resync"},
		{"bad resync", []string{"run", "--resync", "soon"}, "resync"},
		// client-go's rules: lease duration > renew deadline > 1.2 x retry period, all positive.
		{"lease not longer than renew deadline", []string{"run", "--leader-elect-lease-duration", "10s"}, "--leader-elect-lease-duration (10s) must be longer than --leader-elect-renew-deadline (10s)"},
		{"renew deadline within the retry jitter", []string{"run", "--leader-elect-retry-period", "9s"}, "--leader-elect-renew-deadline (10s) must be longer than 1.2 x --leader-elect-retry-period (9s)"},
		{"zero retry period", []string{"run", "--leader-elect-retry-period", "0s"}, "--leader-elect-retry-period: must be positive"},
		{"negative lease duration", []string{"run", "--leader-elect-lease-duration", "-1s"}, "--leader-elect-lease-duration: must be positive"},
		// Refused before anything connects, not by the HTTP server after the caches synced.
		{"listen not host:port", []string{"run", "--listen", "bogus"}, `--listen "bogus": must be host:port`},
		{"listen port not a number", []string{"run", "--listen", ":http"}, `--listen ":http"`},
		{"listen port out of range", []string{"run", "--listen", "127.0.0.1:65536"}, `--listen "127.0.0.1:65536"`},
		{"listen without a port", []string{"run", "--listen", "127.0.0.1:"}, `--listen "127.0.0.1:"`},
		{"profiling with nothing to serve it", []string{"run", "--listen", "", "--profiling"}, `--profiling: needs --listen`},
		// The API server would refuse to create the Lease: the process would run, answer /healthz
		// and /readyz, and never lead.
		{"lease name not a DNS subdomain", []string{"run", "--leader-elect-name", "Bad_Name"}, `--leader-elect-name "Bad_Name": not a valid Lease name`},
		{"lease name too long", []string{"run", "--leader-elect-name", strings.Repeat("a", 254)}, `--leader-elect-name "` + strings.Repeat("a", 254) + `": not a valid Lease name: must be no more than 253 characters`},
		{"lease name ends with a dash", []string{"run", "--leader-elect-name=orchestrator-"}, `--leader-elect-name "orchestrator-"`},
		{"lease namespace not a DNS label", []string{"run", "--leader-elect-namespace", "ops.team"}, `--leader-elect-namespace "ops.team": not a valid namespace name`},
		{"lease namespace in upper case", []string{"run", "--leader-elect-namespace", "Ops"}, `--leader-elect-namespace "Ops"`},
		{"lease namespace too long", []string{"run", "--leader-elect-namespace", strings.Repeat("n", 64)}, "must be no more than 63 characters"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := execute(t, append(tc.args, "--config", good, "--kubeconfig", filepath.Join(t.TempDir(), "none"))...)
			require.Error(t, err)
			assert.Equal(t, ExitConfig, ExitCode(err))
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	// The default Lease name is the warmer's DaemonSet name and -orchestrator: from a name of
	// more than 240 characters, one the API server would refuse.
	long := filepath.Join(t.TempDir(), "config.yaml")
	ds := strings.Repeat("w", 241)
	require.NoError(t, os.WriteFile(long, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\nwarmer: {daemonSetName: "+ds+"}\n"), 0o600))
	none := filepath.Join(t.TempDir(), "none")
	_, _, err := execute(t, "run", "--config", long, "--kubeconfig", none)
	require.Error(t, err)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), `the default Lease name "`+ds+`-orchestrator"`)
	assert.Contains(t, err.Error(), "set --leader-elect-name")
	for _, args := range [][]string{{"--leader-elect-name", "prewarm"}, {"--leader-elect=false"}, {"--dry-run"}} {
		_, _, err := execute(t, append([]string{"run", "--config", long, "--kubeconfig", none}, args...)...)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), none, "%v: no Lease of that name is used; the error is the missing kubeconfig", args)
	}
}

// Valid Lease names and namespaces pass the flag checks: the error is the missing kubeconfig.
func TestRunWatchAcceptsLeaseNames(t *testing.T) {
	good := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(good, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	none := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{
		{"--leader-elect-name", "image-prewarmer-orchestrator", "--leader-elect-namespace", "image-prewarmer"},
		{"--leader-elect-name", "orchestrator.v2", "--leader-elect-namespace", "a"},
		{"--leader-elect-name", strings.Repeat("a", 253), "--leader-elect-namespace", strings.Repeat("n", 63)},
		// Without leader election the Lease flags are not used.
		{"--leader-elect=false", "--leader-elect-name", "Bad_Name"},
	} {
		_, _, err := execute(t, append(append([]string{"run"}, args...), "--config", good, "--kubeconfig", none)...)
		require.Error(t, err, args)
		assert.NotContains(t, err.Error(), "--leader-elect", args)
		assert.Contains(t, err.Error(), none, args)
	}
}

func TestValidateListen(t *testing.T) {
	for _, addr := range []string{"", ":8080", "127.0.0.1:0", "[::1]:9090", "localhost:65535", "0.0.0.0:80"} {
		assert.NoError(t, validateListen(addr), addr)
	}
	for _, addr := range []string{"bogus", "8080", ":", ":-1", ":65536", ":http", "::1:8080", "host:80:80"} {
		err := validateListen(addr)
		require.Error(t, err, addr)
		assert.Contains(t, err.Error(), "--listen", addr)
	}
}

// run --once ignored the event-driven mode's flags without a word, even invalid values; it
// refuses them, as run without --once refuses --pushgateway.
func TestRunOnceRefusesEventDrivenFlags(t *testing.T) {
	good := filepath.Join(t.TempDir(), "config.yaml")
	require.NoError(t, os.WriteFile(good, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	none := filepath.Join(t.TempDir(), "none")
	cases := [][]string{
		{"--listen", "bogus"},
		{"--listen", ":8080"},
		{"--listen="},
		{"--resync", "0s"},
		{"--resync", "1m"},
		{"--profiling"},
	}
	for _, flag := range cases {
		t.Run(strings.Join(flag, " "), func(t *testing.T) {
			args := append(append([]string{"run", "--once"}, flag...), "--config", good, "--kubeconfig", none)
			_, _, err := execute(t, args...)
			require.Error(t, err)
			assert.Equal(t, ExitConfig, ExitCode(err))
			name, _, _ := strings.Cut(flag[0], "=")
			assert.Contains(t, err.Error(), name+": for the event-driven mode (run without --once)")
		})
	}

	_, _, err := execute(t, "run", "--once", "--listen", ":9090", "--profiling", "--config", good, "--kubeconfig", none)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--listen, --profiling: for the event-driven mode", "every flag given is named")

	// The one-shot flags (and the defaults of the others) are fine: the error is the missing kubeconfig.
	_, _, err = execute(t, "run", "--once", "--dry-run", "--pushgateway", "http://127.0.0.1:9091", "--config", good, "--kubeconfig", none)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "event-driven")
	assert.Contains(t, err.Error(), none)

	// The Lease flags serve both modes (run --once holds the Lease for its cycle), and are
	// checked in both.
	for _, c := range []struct{ args, want string }{
		{"--leader-elect=false", none},
		{"--leader-elect-namespace ops --leader-elect-name x", none},
		{"--leader-elect-name Bad_Name", `--leader-elect-name "Bad_Name": not a valid Lease name`},
		{"--leader-elect-lease-duration 1s", "--leader-elect-lease-duration (1s) must be longer than --leader-elect-renew-deadline (10s)"},
	} {
		_, _, err = execute(t, append(append([]string{"run", "--once"}, strings.Fields(c.args)...), "--config", good, "--kubeconfig", none)...)
		assert.ErrorContains(t, err, c.want, c.args)
	}
}

// Every flag of run is either known to be of the event-driven mode only, or used by run --once:
// a new flag cannot be silently ignored by one of the modes.
func TestRunFlagsAreSortedByMode(t *testing.T) {
	oneShot := map[string]bool{"once": true, "pushgateway": true, "leader-elect": true, "leader-elect-namespace": true,
		"leader-elect-name": true, "leader-elect-lease-duration": true, "leader-elect-renew-deadline": true, "leader-elect-retry-period": true}
	eventDriven := map[string]bool{}
	for _, name := range eventDrivenFlags {
		eventDriven[name] = true
	}
	// The flag names from the usage text: pflag is no direct dependency of the module.
	names := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(newRunCommand(&globalOptions{}).Flags().FlagUsages(), -1)
	require.Len(t, names, len(oneShot)+len(eventDriven))
	for _, m := range names {
		assert.True(t, oneShot[m[1]] != eventDriven[m[1]], "flag --%s must be either one-shot or event-driven", m[1])
	}
}

// $KUBECONFIG naming only files that do not exist said "no configuration has been provided, try
// setting KUBERNETES_MASTER environment variable", without the path that is wrong.
func TestKubeconfigEnvNamesMissingFiles(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	typo, other := filepath.Join(dir, "typo"), filepath.Join(dir, "other")

	t.Setenv("KUBECONFIG", typo)
	_, _, err := execute(t, "status", "--config", cfg)
	require.Error(t, err)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), "loading cluster credentials: $KUBECONFIG: no such file: "+typo)

	t.Setenv("KUBECONFIG", typo+string(os.PathListSeparator)+other)
	_, _, err = execute(t, "status", "--config", cfg)
	require.Error(t, err)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), "$KUBECONFIG: none of these files exists: "+typo+", "+other)

	// --kubeconfig wins over $KUBECONFIG, and names its own path.
	_, _, err = execute(t, "status", "--config", cfg, "--kubeconfig", other)
	require.Error(t, err)
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.Contains(t, err.Error(), other)
	assert.NotContains(t, err.Error(), "$KUBECONFIG")

	// One file of the list that exists is enough: client-go merges those that do.
	assert.NoError(t, kubeconfigEnvExists(typo+string(os.PathListSeparator)+unreachableKubeconfig(t, dir)))
	assert.ErrorContains(t, kubeconfigEnvExists(string(os.PathListSeparator)), "names no file")
}

// The commands' long help is wrapped like the rest of the help (the flags' lines aside).
func TestLongHelpIsWrapped(t *testing.T) {
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		for i, line := range strings.Split(c.Long, "\n") {
			assert.LessOrEqual(t, len(line), 100, "%s --help, line %d of the long text: %q", c.CommandPath(), i+1, line)
		}
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(NewRootCommand(io.Discard, io.Discard))
}

// Clients built from equal configurations share one transport (one HTTP/2 connection); each
// ownConnection copy gets a transport of its own.
func TestOwnConnection(t *testing.T) {
	rc := &rest.Config{Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	shared1, err := rest.TransportFor(rest.CopyConfig(rc))
	require.NoError(t, err)
	shared2, err := rest.TransportFor(rest.CopyConfig(rc))
	require.NoError(t, err)
	require.Same(t, shared1, shared2, "client-go caches transports by configuration")

	own1, err := rest.TransportFor(ownConnection(rc))
	require.NoError(t, err)
	own2, err := rest.TransportFor(ownConnection(rc))
	require.NoError(t, err)
	assert.NotSame(t, own1, own2)
	assert.NotSame(t, shared1, own1)
}

func TestClientRateLimit(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := unreachableKubeconfig(t, dir)
	// limiters wires the clients from a config whose client section is client ("" for none).
	limiters := func(t *testing.T, client string, eventDriven bool) (main, watches flowcontrol.RateLimiter) {
		t.Helper()
		cfg := filepath.Join(dir, "config.yaml")
		require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\n"+
			"pool: {nodeSelector: {a: b}}\n"+client), 0o600))
		o := &globalOptions{configPath: cfg, kubeconfig: kubeconfig, logFormat: "text", stdout: io.Discard, stderr: io.Discard}
		w, err := o.wire(false, nil, eventDriven)
		require.NoError(t, err)
		return w.client.CoreV1().RESTClient().GetRateLimiter(), w.watches.CoreV1().RESTClient().GetRateLimiter()
	}

	for _, eventDriven := range []bool{true, false} {
		main, watches := limiters(t, "client: {qps: 5, burst: 10}\n", eventDriven)
		assert.IsType(t, &ratelimit.Limiter{}, main, "node writes go through the urgent-first limiter")
		assert.InDelta(t, 5, main.QPS(), 1e-9)
		assert.NotNil(t, watches, "the informers' client has a limiter of its own")

		main, watches = limiters(t, "client: {qps: -1}\n", eventDriven)
		assert.Nil(t, main, "qps -1: no client-side limit on node writes")
		assert.Nil(t, watches, "nor on the informers' lists")
	}

	main, watches := limiters(t, "", true)
	assert.IsType(t, &ratelimit.Limiter{}, main, "unset, event-driven: 50 QPS, releases first")
	assert.InDelta(t, 50, main.QPS(), 1e-9)
	assert.NotNil(t, watches)

	main, watches = limiters(t, "", false)
	assert.Nil(t, main, "unset, one-shot: no client-side limit")
	assert.Nil(t, watches)
}

// A stray argument or an unknown command is a usage error (exit 2), like an unknown flag.
func TestUnknownCommandIsUsageError(t *testing.T) {
	for _, args := range [][]string{{"run", "--once", "extra"}, {"status", "extra"}, {"cleanup", "extra"}, {"hold", "extra"}, {"version", "extra"}, {"rn"}} {
		_, _, err := execute(t, args...)
		require.Error(t, err, args)
		assert.Equal(t, ExitConfig, ExitCode(err), args)
		assert.Contains(t, err.Error(), "unknown command", args)
	}
	_, _, err := execute(t, "rn")
	assert.Contains(t, err.Error(), "Did you mean this?\n\trun")

	_, _, err = execute(t, "run", "once")
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.ErrorContains(t, err, `unknown command "once" for "prewarm-orchestrator run" (did you mean --once?)`)
	_, _, err = execute(t, "status", "extra")
	assert.NotContains(t, err.Error(), "did you mean", "no flag of that name")

	out, _, err := execute(t)
	require.NoError(t, err, "no command prints the help")
	assert.Contains(t, out, "Available Commands:")

	// Flags without a command: a container whose arguments lost "run" fails rather than
	// printing the help and exiting 0 at every run.
	out, _, err = execute(t, "--config", "/etc/image-prewarmer/config.yaml")
	assert.Equal(t, ExitConfig, ExitCode(err))
	assert.ErrorContains(t, err, "no command given")
	assert.Empty(t, out)
}

// --log-format and -v are checked by every command, also those that log nothing of their own.
func TestLogFlagsCheckedByEveryCommand(t *testing.T) {
	for _, cmd := range []string{"hold", "version"} {
		_, _, err := execute(t, cmd, "--log-format", "xml")
		assert.Equal(t, ExitConfig, ExitCode(err), cmd)
		assert.ErrorContains(t, err, `--log-format: "xml" is not text or json`, cmd)
		_, _, err = execute(t, cmd, "-v", "-1")
		assert.Equal(t, ExitConfig, ExitCode(err), cmd)
		assert.ErrorContains(t, err, "-v: must be 0 or more, got -1", cmd)
	}
	out, _, err := execute(t, "version", "--log-format", "json", "-v", "2")
	require.NoError(t, err)
	assert.NotEmpty(t, out)
}

// A dry run whose cycle failed prints no plan: "0 action(s)" would read as "nothing to do".
func TestDryRunFailedCyclePrintsNoPlan(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := unreachableKubeconfig(t, dir)
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	for _, args := range [][]string{{"run", "--once"}, {"cleanup"}} {
		out, _, err := execute(t, append(args, "--dry-run", "--config", cfg, "--kubeconfig", kubeconfig)...)
		require.Error(t, err, args)
		assert.Equal(t, ExitFailure, ExitCode(err), args)
		assert.NotContains(t, out, "dry run", args)
	}
}

// status that cannot read the pool fails (exit 1) and prints nothing on stdout, in every format:
// an empty table or an empty JSON list would read as "nothing to show".
func TestStatusFailedReadPrintsNothing(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := unreachableKubeconfig(t, dir)
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\npool: {nodeSelector: {a: b}}\n"), 0o600))
	for _, format := range []string{"table", "json", "yaml"} {
		out, _, err := execute(t, "status", "-o", format, "--config", cfg, "--kubeconfig", kubeconfig)
		require.Error(t, err, format)
		assert.Equal(t, ExitFailure, ExitCode(err), format)
		assert.Empty(t, out, format)
	}
}

// unreachableKubeconfig writes a kubeconfig in dir for a server nothing listens on.
func unreachableKubeconfig(t *testing.T, dir string) string {
	return kubeconfigFor(t, dir, "https://127.0.0.1:1")
}

// kubeconfigFor writes a kubeconfig in dir for the API server at server, with a token.
func kubeconfigFor(t *testing.T, dir, server string) string {
	t.Helper()
	path := filepath.Join(dir, "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "`+server+`"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600))
	return path
}

// hold and version read no configuration, cluster or logging flag: their help leaves the root's
// flags out (the others' help lists them), and they still accept them.
func TestGlobalFlagsInHelp(t *testing.T) {
	global := []string{"--config", "--kubeconfig", "--dry-run", "--log-format"}
	for _, tc := range []struct {
		cmd    string
		listed []string
	}{
		{"hold", nil}, {"version", nil}, {"run", global}, {"cleanup", global},
		{"status", []string{"--config", "--kubeconfig", "--log-format"}}, // status writes nothing
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			var out bytes.Buffer
			root := NewRootCommand(&out, io.Discard)
			root.SetOut(&out)
			root.SetArgs([]string{tc.cmd, "--help"})
			require.NoError(t, root.Execute())
			assert.Contains(t, out.String(), "--help")
			for _, flag := range global {
				if slices.Contains(tc.listed, flag) {
					assert.Contains(t, out.String(), flag)
				} else {
					assert.NotContains(t, out.String(), flag)
				}
			}
		})
	}
	var out bytes.Buffer
	root := NewRootCommand(&out, io.Discard)
	root.SetArgs([]string{"version", "--kubeconfig", "/nope", "-v", "1"})
	require.NoError(t, root.Execute())
	assert.Contains(t, out.String(), "prewarm-orchestrator ")
}

// client.timeout bounds each API request but not the informers' watches (as an http.Client
// timeout it would end every watch after client.timeout, and the informers re-open them that
// often). A stand-in API server holds each watch open for several timeouts and each list until the
// client goes away, and records whether the client cut the request.
func TestClientTimeoutSparesWatches(t *testing.T) {
	const timeout = 200 * time.Millisecond
	const watchFor = 5 * timeout // the server ends each watch after this
	type served struct {
		path  string
		watch bool
		cut   bool // the client went away before the server answered in full
	}
	results := make(chan served, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		watch := r.URL.Query().Get("watch") == "true"
		hold := 25 * timeout // a list: until the client gives up
		if watch {
			hold = watchFor
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
		}
		select {
		case <-r.Context().Done():
			results <- served{r.URL.Path, watch, true}
		case <-time.After(hold):
			results <- served{r.URL.Path, watch, false}
		}
	}))
	defer srv.Close()

	dir := t.TempDir()
	kubeconfig := kubeconfigFor(t, dir, srv.URL)
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte("apiVersion: image-prewarmer.io/v1alpha1\nkind: OrchestratorConfig\n"+
		"pool: {nodeSelector: {a: b}}\nclient: {timeout: "+timeout.String()+"}\n"), 0o600))
	wire := func(t *testing.T, eventDriven bool) *wiring {
		t.Helper()
		o := &globalOptions{configPath: cfg, kubeconfig: kubeconfig, logFormat: "text", stdout: io.Discard, stderr: io.Discard}
		w, err := o.wire(false, nil, eventDriven)
		require.NoError(t, err)
		return w
	}
	gvr := schema.GroupVersionResource{Group: "nodemaintenance.medik8s.io", Version: "v1beta1", Resource: "nodemaintenances"}
	next := func(t *testing.T) served {
		t.Helper()
		select {
		case s := <-results:
			return s
		case <-time.After(15 * time.Second):
			t.Fatal("the server saw no request end")
			return served{}
		}
	}
	// watched opens a watch and returns how it ended on the server.
	watched := func(t *testing.T, open func(context.Context) (watch.Interface, error)) served {
		t.Helper()
		wi, err := open(context.Background())
		require.NoError(t, err)
		defer wi.Stop()
		return next(t)
	}
	// listed makes a list call, which the server never answers, and returns how it ended there.
	listed := func(t *testing.T, list func(context.Context) error) served {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		require.Error(t, list(ctx), "cut by client.timeout")
		require.NoError(t, ctx.Err(), "by client.timeout, not by the test's deadline")
		return next(t)
	}

	t.Run("event-driven", func(t *testing.T) {
		w := wire(t, true)
		require.NotNil(t, w.watchDynamic)
		s := watched(t, func(ctx context.Context) (watch.Interface, error) {
			return w.watches.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{})
		})
		assert.Equal(t, served{"/api/v1/nodes", true, false}, s, "the informers' watches outlive client.timeout")
		s = watched(t, func(ctx context.Context) (watch.Interface, error) {
			return w.watchDynamic.Resource(gvr).Watch(ctx, metav1.ListOptions{})
		})
		assert.Equal(t, served{"/apis/nodemaintenance.medik8s.io/v1beta1/nodemaintenances", true, false}, s,
			"so does the nodeMaintenance informer's")

		// Every other request keeps client.timeout, the informers' lists included.
		for name, list := range map[string]func(context.Context) error{
			"informers' list": func(ctx context.Context) error {
				_, err := w.watches.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
				return err
			},
			"nodeMaintenance informer's list": func(ctx context.Context) error {
				_, err := w.watchDynamic.Resource(gvr).List(ctx, metav1.ListOptions{Limit: 1})
				return err
			},
			"engine's list": func(ctx context.Context) error {
				_, err := w.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
				return err
			},
			"engine's nodeMaintenance list": func(ctx context.Context) error {
				_, err := w.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
				return err
			},
		} {
			s := listed(t, list)
			assert.True(t, s.cut && !s.watch, "%s: %+v", name, s)
		}
	})

	t.Run("one-shot", func(t *testing.T) {
		w := wire(t, false)
		assert.Nil(t, w.watchDynamic, "no informer")
		s := listed(t, func(ctx context.Context) error {
			_, err := w.dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
			return err
		})
		assert.True(t, s.cut, "run --once's nodeMaintenance list keeps client.timeout: %+v", s)
		s = listed(t, func(ctx context.Context) error {
			_, err := w.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
			return err
		})
		assert.True(t, s.cut, "so do its node lists: %+v", s)
	})
}

func TestIsWatch(t *testing.T) {
	for q, want := range map[string]bool{
		"": false, "watch=false": false, "watch=0": false, "watch=FALSE": false, "limit=500": false,
		"watch=true": true, "watch=1": true, "watch=True&resourceVersion=5": true, "watch=": true,
	} {
		req := httptest.NewRequest(http.MethodGet, "/api/v1/nodes?"+q, nil)
		assert.Equal(t, want, isWatch(req), q)
	}
}

// -v 1 is the orchestrator's own debug log; client-go's V(n) messages (logged through klog)
// come in only from -v n+1, so that -v 1 is not drowned in client-go's start-up and reflector
// details. client-go's infos and errors are always logged.
func TestVerbosityLevelsClientGoApart(t *testing.T) {
	defer func() { // klog's logger and verbosity are global: back to the defaults
		_, _ = (&globalOptions{logFormat: "text", stderr: io.Discard}).logger()
		klog.ClearLogger()
	}()
	for _, tc := range []struct {
		v                    int
		ours, clientGoV1, v3 bool
	}{
		{v: 0},
		{v: 1, ours: true},
		{v: 2, ours: true, clientGoV1: true},
		{v: 4, ours: true, clientGoV1: true, v3: true},
	} {
		var out bytes.Buffer
		o := &globalOptions{logFormat: "text", verbosity: tc.v, stderr: &out}
		log, err := o.logger()
		require.NoError(t, err)
		log.Debug("ours")
		// client-go logs both ways: through a contextual logger, and through klog's global V.
		klog.Background().V(1).Info("contextual V1")
		klog.Background().V(3).Info("contextual V3")
		klog.V(1).Info("global V1")
		klog.V(3).Info("global V3")
		klog.Background().Info("client-go info")
		assert.Equal(t, tc.ours, strings.Contains(out.String(), "msg=ours"), "-v %d: our debug", tc.v)
		for _, how := range []string{"contextual", "global"} {
			assert.Equal(t, tc.clientGoV1, strings.Contains(out.String(), how+" V1"), "-v %d: client-go's %s V(1)", tc.v, how)
			assert.Equal(t, tc.v3, strings.Contains(out.String(), how+" V3"), "-v %d: client-go's %s V(3)", tc.v, how)
		}
		assert.Contains(t, out.String(), `"client-go info"`, "-v %d", tc.v)
	}
}
