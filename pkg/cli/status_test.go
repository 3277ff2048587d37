package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

// -o json and -o yaml have the same keys whatever the pool holds: an empty list, not null, and
// every total, 0 included, so that scripts need no special case for a quiet pool.
func TestRenderStatusMachineShapeIsStable(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for _, output := range []string{"json", "yaml"} {
		t.Run(output, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Instance: "prewarm/nb", Totals: map[string]int{"pool": 3}}, output))
			var got map[string]any
			if output == "json" {
				require.NoError(t, json.Unmarshal(buf.Bytes(), &got))
			} else {
				require.NoError(t, yaml.Unmarshal(buf.Bytes(), &got))
			}
			assert.Equal(t, []any{}, got["nodes"], "nodes is a list even when empty")
			totals, ok := got["totals"].(map[string]any)
			require.True(t, ok)
			for _, k := range []string{"pool", "inMaintenance", "joining", "waiting", "tainted", "warming", "released", "foreign"} {
				assert.Contains(t, totals, k)
			}
			assert.EqualValues(t, 3, totals["pool"])
			assert.EqualValues(t, 0, totals["tainted"])
		})
	}
}

// A managed node that left the pool is about to be released (left-pool), and one whose taint was
// removed by hand is open already (released external at the next cycle): the table says so
// instead of showing either as one more node waiting for its upgrade.
func TestRenderStatusTableMarksNodesOutsideThePool(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := plan.Status{Time: now, Totals: map[string]int{"tainted": 2, "warming": 1}, Nodes: []plan.NodeStatus{
		{Name: "in", Phase: "tainted", Since: now.Add(-time.Minute), Warmer: "none", InPool: true},
		{Name: "out", Phase: "tainted", Since: now.Add(-time.Minute), Warmer: "none"},
		{Name: "open", Phase: "warming", Since: now.Add(-time.Minute), Warmer: "none", InPool: true, TaintRemoved: true},
	}}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st, "table"))
	assert.Regexp(t, `(?m)^in\s+tainted\s+1m0s`, buf.String())
	assert.Regexp(t, `(?m)^out\s+tainted \(left pool\)\s+1m0s`, buf.String())
	assert.Regexp(t, `(?m)^open\s+warming \(taint removed\)\s+1m0s`, buf.String())
}

// A node another installation manages says whose it is: its LAST PROBLEM is that installation's.
func TestRenderStatusTableNamesTheOwnerOfForeignNodes(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := plan.Status{Time: now, Totals: map[string]int{"foreign": 1}, Nodes: []plan.NodeStatus{
		{Name: "theirs", Phase: "foreign", Owner: "gpu/prewarm", Warmer: "none", LastProblem: "ImagePull: x", InPool: true},
	}}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st, "table"))
	assert.Regexp(t, `(?m)^theirs\s+foreign \(gpu/prewarm\)\s+`, buf.String())
	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "json"))
	assert.Contains(t, buf.String(), `"owner": "gpu/prewarm"`)
}

// Text from annotations, labels and the node's status is shown on one line, without control
// characters: a release reason or kernel edited by hand keeps the table's rows and columns, and
// no escape sequence reaches the terminal.
func TestRenderStatusTableKeepsEditedTextOnOneLine(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	st := plan.Status{Time: now, Uninstalling: "now\x1b[2J", Totals: map[string]int{"released": 1}, Nodes: []plan.NodeStatus{
		{Name: "a", Phase: "released", ReleaseReason: "warm\tby\nhand\x1b[2J", Since: now.Add(-time.Minute), Kernel: "6.8\t0",
			BaselineKernel: "5.15\n0", Warmer: "Err\tImagePull", Maintenance: "uid\n1", InPool: true},
	}}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st, "table"))
	out := buf.String()
	assert.NotContains(t, out, "\x1b")
	assert.NotContains(t, out, "\t")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	require.Len(t, lines, 4, "totals, uninstalling, header, one row:\n%s", out)
	assert.Regexp(t, `^a\s+released \(warm by hand \[2J\)\s+1m0s\s+5\.15 0 -> 6\.8 0\s+Err ImagePull\s+uid 1\s+-$`, lines[3])
}

// A missing warmer DaemonSet is said above the table: nothing is tainted for maintenance meanwhile.
func TestRenderStatusTableSaysTheWarmerIsMissing(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Totals: map[string]int{}}, "table"))
	assert.NotContains(t, buf.String(), "WARMER MISSING")
	buf.Reset()
	require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Totals: map[string]int{}, WarmerMissing: "prewarm/nb-warmer"}, "table"))
	assert.Contains(t, buf.String(), "WARMER MISSING: DaemonSet prewarm/nb-warmer not found: no node is tainted for maintenance")
	buf.Reset()
	require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Totals: map[string]int{}, WarmerMissing: "prewarm/nb-warmer", WarmerDeleting: true}, "table"))
	assert.Contains(t, buf.String(), "WARMER MISSING: DaemonSet prewarm/nb-warmer is being deleted: no node is tainted for maintenance")
	assert.NotContains(t, buf.String(), "not found")
}

// A pool selector that matches no node (a typo in the label) is said above the table, naming the
// selector, and in the machine formats.
func TestRenderStatusSaysThePoolIsEmpty(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Totals: map[string]int{"pool": 3}}, "table"))
	assert.NotContains(t, buf.String(), "EMPTY POOL")
	buf.Reset()
	st := plan.Status{Time: now, Totals: map[string]int{}, EmptyPool: "pool=notebooks"}
	require.NoError(t, renderStatus(&buf, st, "table"))
	assert.Contains(t, buf.String(), "\nEMPTY POOL: no node matches the pool selector pool=notebooks: nothing to pre-warm until one does\n")
	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "json"))
	assert.Contains(t, buf.String(), `"emptyPool": "pool=notebooks"`)
}

// The problems recorded on managed nodes are counted by reason above the table, as the
// image_prewarmer_node_problems gauge counts them, and in the machine formats.
func TestRenderStatusCountsProblems(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, plan.Status{Time: now, Totals: map[string]int{}}, "table"))
	assert.NotContains(t, buf.String(), "PROBLEMS")
	st := plan.Status{Time: now, Totals: map[string]int{}, Problems: map[string]int{"WarmTimeout": 1, "ImagePull": 2}}
	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "table"))
	assert.Contains(t, buf.String(), "\nPROBLEMS on managed nodes (LAST PROBLEM below; the image_prewarmer_node_problems gauge): ImagePull=2 WarmTimeout=1\n")
	buf.Reset()
	require.NoError(t, renderStatus(&buf, st, "json"))
	assert.Contains(t, buf.String(), `"problems": {`)
}

// The LAST PROBLEM column is cut at a character, never inside one: a message quoting a
// non-ASCII image name or pod message stays valid UTF-8.
func TestOneLineCutsAtACharacter(t *testing.T) {
	assert.Equal(t, "short", oneLine("short", 10))
	assert.Equal(t, "a b", oneLine("a\nb", 10))
	assert.Equal(t, "a b  [1m", oneLine("a\tb \x1b[1m", 20), "tabs and escapes would break the table or the terminal")
	assert.Equal(t, "abcdefg...", oneLine("abcdefghijk", 10))
	for n := 5; n < 14; n++ {
		got := oneLine("pull: ünïcödé image", n)
		assert.True(t, utf8.ValidString(got), "%d: %q", n, got)
		assert.LessOrEqual(t, len(got), n, "%d: %q", n, got)
	}
}
