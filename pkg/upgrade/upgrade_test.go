package upgrade_test

import (
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/upgrade"
)

func node(kernel, boot string, labels map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels},
		Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KernelVersion: kernel, BootID: boot, OSImage: "Ubuntu 24.04"}},
	}
}

// docsExample is the upgrade.when example of docs/integrations.md, as its folded YAML string reads.
const docsExample = `{{ and (ne .BootID .Baseline.BootID)
       (eq (index .Labels "example.com/os-image") "2026-11") }}`

func TestRules(t *testing.T) {
	base := upgrade.Baseline{Kernel: "5.15", BootID: "b1"}
	cases := []struct {
		name     string
		versions []string
		label    string
		when     string
		node     *corev1.Node
		want     bool
	}{
		{"change: nothing changed", nil, "", "", node("5.15", "b1", nil), false},
		{"change: new kernel", nil, "", "", node("6.8", "b1", nil), true},
		{"change: reboot, same kernel", nil, "", "", node("5.15", "b2", nil), true},
		{"change: boot ID not reported", nil, "", "", node("5.15", "", nil), false},
		{"change: nothing reported", nil, "", "", node("", "", nil), false},
		{"target: reached", []string{"6.8", "6.9"}, "", "", node("6.9", "b2", nil), true},
		{"target: other kernel", []string{"6.8"}, "", "", node("6.1", "b2", nil), false},
		{"target: label wins over nodeInfo", []string{"6.8"}, "kv", "", node("5.15", "b1", map[string]string{"kv": "6.8"}), true},
		{"target: label absent, nodeInfo used", []string{"6.8"}, "kv", "", node("6.8", "b1", nil), true},
		{"template: OS image", nil, "", `{{ hasPrefix "Ubuntu 24" .Node.Status.NodeInfo.OSImage }}`, node("5.15", "b1", nil), true},
		{"template: sprig and baseline", nil, "", `{{ and (ne .Kernel .Baseline.Kernel) (semverCompare ">=6.0" .Kernel) }}`, node("6.8", "b1", nil), true},
		{"template: false", nil, "", `{{ ne .BootID .Baseline.BootID }}`, node("6.8", "b1", nil), false},
		// The example of docs/integrations.md: a label that may be absent.
		{"template: docs example, label absent", nil, "", docsExample, node("5.15", "b2", nil), false},
		{"template: docs example, label set", nil, "", docsExample, node("5.15", "b2", map[string]string{"example.com/os-image": "2026-11"}), true},
		{"template: docs example, not rebooted", nil, "", docsExample, node("5.15", "b1", map[string]string{"example.com/os-image": "2026-11"}), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := upgrade.NewRule(tc.versions, tc.label, tc.when)
			require.NoError(t, err)
			got, err := r.Upgraded(tc.node, base)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// A baseline field recorded empty (the node reported no nodeInfo when it was tainted) or removed by
// hand is unknown, not a value the node has since left: a node reporting its kernel for the first
// time is not upgraded by that alone (it would warm, and open, before the upgrade wipes its disk).
func TestUnknownBaselineIsNotAChange(t *testing.T) {
	r, err := upgrade.NewRule(nil, "", "")
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		base upgrade.Baseline
		node *corev1.Node
		want bool
	}{
		"nothing recorded":                 {upgrade.Baseline{}, node("5.15", "b1", nil), false},
		"kernel not recorded, same boot":   {upgrade.Baseline{BootID: "b1"}, node("5.15", "b1", nil), false},
		"kernel not recorded, rebooted":    {upgrade.Baseline{BootID: "b1"}, node("5.15", "b2", nil), true},
		"boot ID not recorded, same":       {upgrade.Baseline{Kernel: "5.15"}, node("5.15", "b1", nil), false},
		"boot ID not recorded, new kernel": {upgrade.Baseline{Kernel: "5.15"}, node("6.8", "b1", nil), true},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := r.Upgraded(tc.node, tc.base)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// The change rule compares only values known on both sides: a node that reports neither a
// kernel nor a boot ID when it would be tainted could never be seen upgraded. Target kernels and
// templates decide from what the node reports later.
func TestDetectable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		versions []string
		label    string
		when     string
		node     *corev1.Node
		want     bool
	}{
		{"change: kernel and boot ID", nil, "", "", node("5.15", "b1", nil), true},
		{"change: kernel only", nil, "", "", node("5.15", "", nil), true},
		{"change: boot ID only", nil, "", "", node("", "b1", nil), true},
		{"change: nothing reported", nil, "", "", node("", "", nil), false},
		{"change: kernel label", nil, "kv", "", node("", "", map[string]string{"kv": "5.15"}), true},
		{"change: kernel label empty", nil, "kv", "", node("", "", map[string]string{"kv": ""}), false},
		{"target: nothing reported", []string{"6.8"}, "", "", node("", "", nil), true},
		{"template: nothing reported", nil, "", `{{ ne .BootID .Baseline.BootID }}`, node("", "", nil), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := upgrade.NewRule(tc.versions, tc.label, tc.when)
			require.NoError(t, err)
			assert.Equal(t, tc.want, r.Detectable(tc.node))
		})
	}
}

// Each malformed template is refused at start-up for its own reason, which the message names:
// at parsing, or on the sample node.
func TestTemplateRefused(t *testing.T) {
	const parsing, onSample = "parsing template: ", "template fails on a sample node: "
	for _, tc := range []struct {
		name, when string
		want       []string // parts of the error message, each required
	}{
		{"parse error", `{{ .Kernel `, []string{parsing, "unclosed action"}},
		{"unknown function", `{{ frobnicate .Kernel }}`, []string{parsing, `function "frobnicate" not defined`}},
		{"not a boolean", `{{ .Kernel }}`, []string{onSample, `template rendered "6.8.0-1", want "true" or "false"`}},
		{"unknown field", `{{ .Nope }}`, []string{onSample, "can't evaluate field Nope"}},
		{"endless output", `{{ range 9223372036854775807 }}x{{ end }}`, []string{onSample, "template renders more than 4096 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := upgrade.NewRule(nil, "", tc.when)
			for _, part := range tc.want {
				require.ErrorContains(t, err, part)
			}
		})
	}
}

// A long output that is not a boolean is quoted cut short, at a character's start: the message
// holds no broken character.
func TestLongOutputIsCutAtACharacter(t *testing.T) {
	_, err := upgrade.NewRule(nil, "", strings.Repeat("x", 63)+"é and more")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `template rendered "`+strings.Repeat("x", 63)+`...", want`)
	assert.True(t, utf8.ValidString(err.Error()), err.Error())
	assert.NotContains(t, err.Error(), `\x`)
}

// A template that loops on the sample node for longer than the start-up allows, writing
// nothing, is refused after a bounded wait instead of hanging the start-up. (The loop here is
// short, a fraction of a second, so that it does not spin on in the background of the other
// tests, under -race too; the wait is shorter still.)
func TestEndlessTemplateRefused(t *testing.T) {
	t.Cleanup(upgrade.SetSampleTimeout(time.Millisecond))
	_, err := upgrade.NewRule(nil, "", `{{ range 5000000 }}{{ end }}true`)
	require.ErrorContains(t, err, "did not finish on a sample node within 1ms")

	t.Cleanup(upgrade.SetSampleTimeout(5 * time.Second)) // a loaded machine may be slow to run even this
	_, err = upgrade.NewRule(nil, "", `{{ range 10 }}{{ end }}true`)
	require.NoError(t, err, "a template that finishes in time is accepted")
}

// The sprig functions that build a list or a string of a size given by an argument are bounded:
// refused at start-up when the sample node reaches the bound, a rule error on a node whose data
// does, never an allocation of their own that gets the process killed. (The bound is per call:
// functions that combine values, join or replace, are not bounded; docs/integrations.md says so.)
func TestSizedFunctionsAreBounded(t *testing.T) {
	for name, when := range map[string]string{
		"until":                                 `{{ len (until 100000000) }}`,
		"until, negative":                       `{{ len (until -100000000) }}`,
		"untilStep":                             `{{ len (untilStep 0 100000000 1) }}`,
		"seq":                                   `{{ seq 100000000 }}`,
		"seq with a step":                       `{{ seq 0 1 100000000 }}`,
		"repeat":                                `{{ $_ := repeat 300000000 "x" }}false`,
		"indent":                                `{{ $_ := indent 1000000000 "x" }}false`,
		"nindent":                               `{{ $_ := nindent 100000 "a\nb\nc" }}false`,
		"randAlphaNum":                          `{{ $_ := randAlphaNum 1000000000 }}false`,
		"randBytes":                             `{{ $_ := randBytes 1000000000 }}false`,
		"untilStep, from the bottom to the top": `{{ len (untilStep -9223372036854775808 9223372036854775807 1) }}`,
		"untilStep, down from the top":          `{{ len (untilStep 9223372036854775807 -9223372036854775808 -1) }}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := upgrade.NewRule(nil, "", when)
			require.ErrorContains(t, err, "more than the 65536 a rule may")
		})
	}
	// Ranges whose loop would step past the largest (or smallest) int and wrap around: few
	// elements by their ends, an endless loop in sprig.
	for name, when := range map[string]string{
		"untilStep, a huge step":        `{{ len (untilStep 0 9223372036854775807 4611686018427387904) }}`,
		"untilStep, near the top":       `{{ len (untilStep 9223372036854775800 9223372036854775807 5) }}`,
		"untilStep, near the bottom":    `{{ len (untilStep -9223372036854775800 -9223372036854775808 -5) }}`,
		"seq with a step, near the top": `{{ seq 9223372036854775800 5 9223372036854775806 }}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := upgrade.NewRule(nil, "", when)
			require.ErrorContains(t, err, "overflows")
		})
	}
	for name, when := range map[string]string{
		"until":                        `{{ eq (len (until 10)) 10 }}`,
		"until, down":                  `{{ eq (len (until -10)) 10 }}`,
		"untilStep":                    `{{ eq (len (untilStep 0 10 3)) 4 }}`,
		"untilStep, exactly the bound": `{{ eq (len (untilStep 0 65536 1)) 65536 }}`,
		"untilStep, down":              `{{ eq (len (untilStep 10 0 -3)) 4 }}`,
		"untilStep, away from the end": `{{ eq (len (untilStep 0 -1000000000 1)) 0 }}`,
		// One element: the step from it lands past stop without passing the largest int.
		"untilStep, a huge step":             `{{ eq (len (untilStep 0 10 9223372036854775802)) 1 }}`,
		"untilStep, down, a huge step":       `{{ eq (len (untilStep 0 -10 -9223372036854775803)) 1 }}`,
		"untilStep, down, the smallest step": `{{ eq (len (untilStep 0 -10 -9223372036854775808)) 1 }}`,
		"seq":                                `{{ eq (seq 3) "1 2 3" }}`,
		"seq, down":                          `{{ eq (seq 3 1) "3 2 1" }}`,
		"seq, step":                          `{{ eq (seq 0 5 10) "0 5 10" }}`,
		"repeat":                             `{{ eq (repeat 3 "ab") "ababab" }}`,
		"nindent":                            `{{ eq (nindent 2 "a") "\n  a" }}`,
		"rand":                               `{{ eq (len (randAlpha 8)) 8 }}`,
	} {
		t.Run("within the bound: "+name, func(t *testing.T) {
			r, err := upgrade.NewRule(nil, "", when)
			require.NoError(t, err)
			got, err := r.Upgraded(&corev1.Node{}, upgrade.Baseline{})
			require.NoError(t, err)
			assert.True(t, got)
		})
	}

	t.Run("a count read from the node", func(t *testing.T) {
		r, err := upgrade.NewRule(nil, "", `{{ $n := atoi (index .Labels "example.com/n") }}{{ gt (len (until $n)) 0 }}`)
		require.NoError(t, err)
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"example.com/n": "3"}}}
		got, err := r.Upgraded(node, upgrade.Baseline{})
		require.NoError(t, err)
		assert.True(t, got)
		node.Labels["example.com/n"] = "1000000000"
		_, err = r.Upgraded(node, upgrade.Baseline{})
		require.ErrorContains(t, err, "until: would build 1000000000 elements")
	})
}

// A rule reads the node, not the orchestrator's environment or the network.
func TestEnvironmentAndNetworkFunctionsAreRefused(t *testing.T) {
	for _, when := range []string{`{{ env "HOME" }}`, `{{ expandenv "$HOME" }}`, `{{ getHostByName "localhost" }}`} {
		_, err := upgrade.NewRule(nil, "", when)
		require.ErrorContains(t, err, "not defined", when)
	}
}

// A template may call a sprig function that sorts its argument in place (sortAlpha); the node it
// is given (an informer cache's, in the event-driven mode) and the rule's target kernels stay as
// they were, also when several evaluations run at once (go test -race).
func TestTemplateChangesNothingOutside(t *testing.T) {
	r, err := upgrade.NewRule([]string{"6.9", "6.8"}, "",
		`{{ eq (first .KernelVersions) "6.9" }}{{ $_ := sortAlpha .KernelVersions }}{{ $_ := sortAlpha .Node.Spec.PodCIDRs }}`)
	require.NoError(t, err)
	n := node("6.8", "b2", nil)
	n.Spec.PodCIDRs = []string{"10.2.0.0/24", "10.1.0.0/24"}
	base := upgrade.Baseline{Kernel: "5.15", BootID: "b1"}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				got, err := r.Upgraded(n, base)
				assert.NoError(t, err)
				assert.True(t, got, "each evaluation sees the targets in their configured order")
			}
		})
	}
	wg.Wait()
	assert.Equal(t, []string{"10.2.0.0/24", "10.1.0.0/24"}, n.Spec.PodCIDRs)
}
