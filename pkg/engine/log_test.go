package engine

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// logBuffer collects the engine's log lines (it writes nodes in parallel).
type logBuffer struct{ tu.LogBuffer }

func (l *logBuffer) line(t *testing.T, fragments ...string) string {
	t.Helper()
	var found []string
	for _, ln := range l.Lines() {
		all := true
		for _, f := range fragments {
			all = all && strings.Contains(ln, f)
		}
		if all {
			found = append(found, ln)
		}
	}
	require.Len(t, found, 1, "lines with %q in:\n%s", fragments, strings.Join(l.Lines(), "\n"))
	return found[0]
}

// loggingEngine is testEngine with its log written to the returned buffer (text format, as
// `--log-format text` writes it).
func loggingEngine(t *testing.T, client *fake.Clientset, dryRun bool) (*Engine, *logBuffer) {
	t.Helper()
	buf := &logBuffer{}
	e, err := New(Options{
		Config: testConfig(t), Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(buf, nil)), DryRun: dryRun,
	})
	require.NoError(t, err)
	return e, buf
}

// warmingNode is a node of testConfig's pool in phase warming since t0.
func warmingNode(name string) *corev1.Node {
	return tu.Node(name, tu.WithLabels("pool", "notebooks", "os-upgrade/status", "warming"),
		tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule),
		tu.WithAnnotations(state.Phase, state.PhaseWarming, state.Owner, "prewarm/test",
			state.TaintedAt, state.FormatTime(t0), state.UpgradedAt, state.FormatTime(t0)))
}

// While the warmer DaemonSet is missing a cycle taints no node, real or dry run, and says so at
// WARN, with no empty node attribute; once it exists, the node is entered.
func TestMissingWarmerIsAWarningAndEntersNothing(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		t.Run(map[bool]string{false: "run", true: "dry run"}[dryRun], func(t *testing.T) {
			client := fake.NewClientset(tu.Node("a", tu.WithLabels("pool", "notebooks"), tu.Cordoned()))
			e, log := loggingEngine(t, client, dryRun)
			res, err := e.RunOnce(context.Background())
			require.NoError(t, err)
			assert.Empty(t, res.Plan.Actions)
			assert.Empty(t, patches(client))
			require.Len(t, res.Plan.Notes, 1, "the dry run prints the plan's notes")
			assert.True(t, res.Plan.Notes[0].Warning)

			line := log.line(t, "warmer DaemonSet image-prewarmer/image-prewarmer-warmer not found")
			assert.Contains(t, line, "level=WARN")
			assert.Contains(t, line, "1 node(s) in maintenance are upgraded without pre-warming: a")
			assert.NotContains(t, line, `node=`, "a note about the pool has no node attribute")

			w := config.Default().Warmer
			require.NoError(t, client.Tracker().Add(tu.DaemonSet(w.Namespace, w.DaemonSetName)))
			res, err = e.RunOnce(context.Background())
			require.NoError(t, err)
			require.Len(t, res.Plan.Actions, 1)
			assert.Equal(t, plan.Enter, res.Plan.Actions[0].Type)
			assert.Empty(t, res.Plan.Notes)
		})
	}
}

// A warmer pod that cannot pull is logged at WARN (it is a Warning Event too); routine
// transitions stay at INFO. A dry run logs what it would do at the same levels.
func TestPullProblemIsLoggedAtWarn(t *testing.T) {
	for _, dryRun := range []bool{false, true} {
		t.Run(map[bool]string{false: "run", true: "dry run"}[dryRun], func(t *testing.T) {
			ds := tu.DaemonSet(config.Default().Warmer.Namespace, config.Default().Warmer.DaemonSetName)
			client := fake.NewClientset(
				warmingNode("nb-4"),
				tu.Node("nb-5", tu.WithLabels("pool", "notebooks"), tu.Cordoned()),
				ds, tu.Revision(ds, 1, "r1"),
				tu.Pod(ds, "nb-4", "r1", tu.Waiting("warm-0", "example.com/big:1", "ImagePullBackOff", "Back-off pulling image")),
			)
			e, log := loggingEngine(t, client, dryRun)
			_, err := e.RunOnce(context.Background())
			require.NoError(t, err)

			msg := "msg=record"
			if dryRun {
				msg = `msg="dry run: would record"`
			}
			record := log.line(t, "node=nb-4")
			assert.Contains(t, record, "level=WARN "+msg+" node=nb-4 reason=ImagePull ")
			enter := log.line(t, "node=nb-5")
			assert.Contains(t, enter, "level=INFO", "a routine transition stays at INFO")
			assert.Contains(t, enter, "reason=cordoned")
		})
	}
}

// Log lines about no node in particular, or no object, carry no empty attribute.
func TestLogLinesDropEmptyAttributes(t *testing.T) {
	buf := &logBuffer{}
	log := slog.New(slog.NewTextHandler(buf, nil))
	ctx := context.Background()
	LogNotes(ctx, log, []plan.Note{
		{Message: "about the pool"},
		{Node: "n1", Message: "about a node"},
		{Message: "a warning about the pool", Warning: true},
	})
	LogWarnings(ctx, log, []sources.Warning{
		{Source: plan.SourceNodeMaintenance, Message: "resource not served"},
		{Source: plan.SourceNodeMaintenance, Object: "nm-1", Message: "skipped: no node name"},
	})
	assert.Equal(t, []string{
		`level=INFO msg="about the pool"`,
		`level=INFO msg="about a node" node=n1`,
		`level=WARN msg="a warning about the pool"`,
		`level=WARN msg="maintenance source: resource not served" source=nodeMaintenance`,
		`level=WARN msg="maintenance source: skipped: no node name" source=nodeMaintenance object=nm-1`,
	}, withoutTime(buf.Lines()))

	assert.Equal(t, []any{"node", "a", "n", 0}, attrs("node", "a", "object", "", "n", 0))
}

func withoutTime(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		if _, rest, ok := strings.Cut(l, " "); ok && strings.HasPrefix(l, "time=") {
			l = rest
		}
		out[i] = l
	}
	return out
}

// `cleanup` releases with a message that does not speak of an uninstall, and that says whether
// the installation taints the node again (not once its DaemonSet is gone); `cleanup --uninstall`
// says the installation is being uninstalled.
func TestCleanupMessages(t *testing.T) {
	managed := func() runtime.Object { return taintedNode("a") }
	e, log := loggingEngine(t, withWarmer(managed()), false)
	res, err := e.Cleanup(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 1)
	assert.Contains(t, res.Plan.Actions[0].Message, "released by cleanup; installation prewarm/test stays installed")
	line := log.line(t, "msg=release", "node=a")
	assert.Contains(t, line, "reason=cleanup")
	assert.NotContains(t, line, "being removed")
	assert.NotContains(t, line, "uninstall")

	// After the release was uninstalled (cleanup with its saved configuration), no DaemonSet:
	// nothing taints the node again.
	e, log = loggingEngine(t, fake.NewClientset(managed()), false)
	res, err = e.Cleanup(context.Background())
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 1)
	line = log.line(t, "msg=release", "node=a")
	assert.Contains(t, line, "released by cleanup; installation prewarm/test has no DaemonSet image-prewarmer/image-prewarmer-warmer (uninstalled, or deleted) and taints no node until it exists again")
	assert.NotContains(t, line, "stays installed")

	e, log = loggingEngine(t, withWarmer(managed()), false)
	res, err = e.Uninstall(context.Background(), 0)
	require.NoError(t, err)
	require.Len(t, res.Plan.Actions, 1)
	assert.Contains(t, res.Plan.Actions[0].Message, "installation prewarm/test is being uninstalled")
	assert.Contains(t, log.line(t, "msg=release", "node=a"), "is being uninstalled")
}

// A pool selector that matches no node (a typo in the label) is said at WARN, naming the
// selector, once in each cycle, dry run or not: otherwise the cycle would only report nothing
// done. The first cycle with a pool node says nothing of it.
func TestEmptyPoolIsAWarningInEachCycle(t *testing.T) {
	const warning = `level=WARN msg="no node matches the pool selector pool=notebooks: nothing to pre-warm until one does; check pool.nodeSelector against the nodes' labels"`
	for _, dryRun := range []bool{false, true} {
		t.Run(map[bool]string{false: "run", true: "dry run"}[dryRun], func(t *testing.T) {
			client := withWarmer(tu.Node("a", tu.WithLabels("pool", "notebook"), tu.Cordoned()))
			e, log := loggingEngine(t, client, dryRun)
			for cycle := 1; cycle <= 2; cycle++ {
				res, err := e.RunOnce(context.Background())
				require.NoError(t, err)
				assert.Empty(t, res.Plan.Actions)
				assert.Equal(t, cycle, strings.Count(log.String(), warning), "once per cycle:\n%s", log.String())
			}
			assert.NotContains(t, log.String(), `node=`, "a note about the pool has no node attribute")

			_, err := client.CoreV1().Nodes().Create(context.Background(), tu.Node("b", tu.WithLabels("pool", "notebooks")), metav1.CreateOptions{})
			require.NoError(t, err)
			_, err = e.RunOnce(context.Background())
			require.NoError(t, err)
			assert.Equal(t, 2, strings.Count(log.String(), warning), "not with a pool node")
		})
	}
}
