// Package upgrade decides whether a node has been upgraded since it was tainted.
//
// Three rules, chosen by configuration:
//   - target kernels: the node's kernel is one of the configured versions;
//   - change (default): the kernel or the boot ID differs from the baseline recorded at taint time;
//   - template: a Go template with sprig functions renders "true" or "false" over TemplateData.
package upgrade

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Baseline is what the node looked like when it was tainted.
type Baseline struct {
	Kernel string
	// KernelSource is where Kernel was read (KernelSource): the change rule reads the node's
	// kernel from there again. Empty (a baseline recorded without one): wherever Kernel reads now.
	KernelSource string
	BootID       string
	TaintedAt    time.Time
}

// Where a kernel version was read, with a kernel label configured.
const (
	SourceLabel    = "label"
	SourceNodeInfo = "nodeInfo"
)

// TemplateData is what an upgrade.when template sees.
//
//	.Node            the Node object (e.g. .Node.Status.NodeInfo.OSImage, .Node.Labels)
//	.Labels          the node's labels
//	.Kernel          the node's kernel (kernel label if configured and present, else nodeInfo)
//	.BootID          the node's boot ID
//	.Baseline        .Kernel, .BootID and .TaintedAt recorded when the node was tainted
//	.KernelVersions  the configured target kernels (may be empty)
type TemplateData struct {
	Node           *corev1.Node
	Labels         map[string]string
	Kernel         string
	BootID         string
	Baseline       Baseline
	KernelVersions []string
}

// Rule is a compiled upgrade rule. It is safe for concurrent use.
type Rule struct {
	kernelVersions []string
	kernelLabel    string
	when           *template.Template
}

// sampleTimeout bounds the evaluation of a template on the sample node at start-up. A template
// cannot be interrupted once it runs, so one that loops without end (`{{range 9999999999}}`)
// would otherwise hang the start-up. Evaluations on real nodes are not bounded: a loop whose
// length comes from a node's data passes this check (docs/integrations.md says so).
var sampleTimeout = 5 * time.Second

// maxOutput bounds what a template may render; "true" or "false" is all it should. Rendering
// stops with an error beyond it, so a loop that writes on every pass ends at once.
const maxOutput = 4096

// NewRule compiles a rule. A template that does not parse, that fails or renders something
// other than "true"/"false" on a sample node, or that does not finish on it within a few
// seconds, is refused.
func NewRule(kernelVersions []string, kernelLabel, when string) (*Rule, error) {
	r := &Rule{kernelVersions: slices.Clone(kernelVersions), kernelLabel: kernelLabel}
	if strings.TrimSpace(when) == "" {
		return r, nil
	}
	t, err := template.New("upgrade.when").Funcs(funcMap()).Option("missingkey=error").Parse(when)
	if err != nil {
		return nil, fmt.Errorf("parsing template: %w", err)
	}
	r.when = t
	done := make(chan error, 1)
	go func() {
		_, err := r.evaluate(sampleData(kernelVersions))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			return nil, fmt.Errorf("template fails on a sample node: %w", err)
		}
	case <-time.After(sampleTimeout):
		// The evaluation goes on in the background; the caller refuses the configuration and exits.
		return nil, fmt.Errorf("template did not finish on a sample node within %s (an endless loop?)", sampleTimeout)
	}
	return r, nil
}

// Kernel returns the node's kernel version: the configured label when the node has it,
// otherwise status.nodeInfo.kernelVersion.
func (r *Rule) Kernel(node *corev1.Node) string {
	if r.kernelLabel != "" {
		if v, ok := node.Labels[r.kernelLabel]; ok && v != "" {
			return v
		}
	}
	return node.Status.NodeInfo.KernelVersion
}

// KernelSource returns where Kernel reads node's kernel: SourceLabel or SourceNodeInfo when a
// kernel label is configured, "" when not (status.nodeInfo always).
func (r *Rule) KernelSource(node *corev1.Node) string {
	if r.kernelLabel == "" {
		return ""
	}
	if v, ok := node.Labels[r.kernelLabel]; ok && v != "" {
		return SourceLabel
	}
	return SourceNodeInfo
}

// KernelFrom reads node's kernel from source (KernelSource), or as Kernel does when source is
// empty or unknown: a label that appeared or went since the baseline was read is not compared
// with a value read elsewhere, which may be written differently. From a label no longer
// configured, the kernel is unknown ("").
func (r *Rule) KernelFrom(node *corev1.Node, source string) string {
	switch {
	case source == SourceLabel:
		return node.Labels[r.kernelLabel] // "" when no label is configured any more
	case source == SourceNodeInfo || r.kernelLabel == "":
		return node.Status.NodeInfo.KernelVersion
	}
	return r.Kernel(node)
}

// KernelAgainst returns the node's kernel as the rule compares it with baseline: read from the
// baseline's source by the change rule, as Kernel reads it by the others.
func (r *Rule) KernelAgainst(node *corev1.Node, baseline Baseline) string {
	if r.when != nil || len(r.kernelVersions) > 0 {
		return r.Kernel(node)
	}
	return r.KernelFrom(node, baseline.KernelSource)
}

// kernelChanged reports whether the node's kernel differs from the baseline's, both known. A
// baseline recorded without its source (an older version), with a kernel label configured, is
// compared with both the label and status.nodeInfo: changed only when it matches neither.
func (r *Rule) kernelChanged(node *corev1.Node, baseline Baseline) bool {
	if baseline.KernelSource == "" && r.kernelLabel != "" {
		label, info := node.Labels[r.kernelLabel], node.Status.NodeInfo.KernelVersion
		if baseline.Kernel == "" || (label == "" && info == "") {
			return false
		}
		return (label == "" || label != baseline.Kernel) && (info == "" || info != baseline.Kernel)
	}
	return changed(r.KernelFrom(node, baseline.KernelSource), baseline.Kernel)
}

// HasKernelTargets reports whether target kernel versions are configured.
func (r *Rule) HasKernelTargets() bool { return len(r.kernelVersions) > 0 }

// Detectable reports whether the rule can ever see the upgrade of node against a baseline taken
// now. Target kernels and a template decide from what the node reports later; the change rule
// compares only values known on both sides, so a node that reports neither a kernel (no kernel
// label, no status.nodeInfo.kernelVersion) nor a boot ID now is never seen upgraded.
func (r *Rule) Detectable(node *corev1.Node) bool {
	if r.when != nil || len(r.kernelVersions) > 0 {
		return true
	}
	return r.Kernel(node) != "" || node.Status.NodeInfo.BootID != ""
}

// OnTarget returns the node's kernel when the rule is target kernels (no template) and the node
// already runs one of them: taken as the baseline at entry, it makes the node upgraded at once.
func (r *Rule) OnTarget(node *corev1.Node) (string, bool) {
	if r.when != nil || len(r.kernelVersions) == 0 {
		return "", false
	}
	k := r.Kernel(node)
	return k, slices.Contains(r.kernelVersions, k)
}

// OffTarget returns the node's kernel when the rule is target kernels (no template), the node
// runs none of them, and its kernel or boot ID differs from the baseline: it rebooted, onto a
// kernel the rule does not wait for (a list behind the rollout), and may have lost its images.
func (r *Rule) OffTarget(node *corev1.Node, baseline Baseline) (string, bool) {
	if r.when != nil || len(r.kernelVersions) == 0 {
		return "", false
	}
	k := r.Kernel(node)
	if slices.Contains(r.kernelVersions, k) {
		return "", false
	}
	return k, r.kernelChanged(node, baseline) || changed(node.Status.NodeInfo.BootID, baseline.BootID)
}

// Upgraded reports whether node has been upgraded relative to baseline. The change rule compares
// only what is known on both sides: a baseline recorded empty never makes a node upgraded.
func (r *Rule) Upgraded(node *corev1.Node, baseline Baseline) (bool, error) {
	kernel := r.Kernel(node)
	if r.when != nil {
		// The template gets copies: sprig has functions that change their argument in place
		// (sortAlpha, set, unset, merge), node may be an informer cache's, and the rule is
		// evaluated from several goroutines at once.
		n := node.DeepCopy()
		return r.evaluate(TemplateData{
			Node:           n,
			Labels:         n.Labels,
			Kernel:         kernel,
			BootID:         n.Status.NodeInfo.BootID,
			Baseline:       baseline,
			KernelVersions: append([]string{}, r.kernelVersions...), // never nil, as on the sample
		})
	}
	if len(r.kernelVersions) > 0 {
		return slices.Contains(r.kernelVersions, kernel), nil
	}
	// An empty value, on the node or in the baseline (nothing reported when the node was tainted,
	// or an annotation removed by hand), is unknown: no change is seen in it.
	if r.kernelChanged(node, baseline) {
		return true, nil
	}
	return changed(node.Status.NodeInfo.BootID, baseline.BootID), nil
}

func changed(now, before string) bool { return now != "" && before != "" && now != before }

func (r *Rule) evaluate(data TemplateData) (bool, error) {
	buf := limitedBuffer{max: maxOutput}
	if err := r.when.Execute(&buf, data); err != nil {
		return false, err
	}
	switch out := strings.TrimSpace(buf.String()); out {
	case "true":
		return true, nil
	case "false":
		return false, nil
	default:
		return false, fmt.Errorf("template rendered %q, want \"true\" or \"false\"", truncate(out, 64))
	}
}

func sampleData(kernelVersions []string) TemplateData {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "sample", Labels: map[string]string{"kubernetes.io/hostname": "sample"}},
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{
			KernelVersion: "6.8.0-1", BootID: "00000000-0000-0000-0000-000000000002",
			OSImage: "Sample OS", KubeletVersion: "v1.36.0",
		}},
	}
	return TemplateData{
		Node:     node,
		Labels:   node.Labels,
		Kernel:   "6.8.0-1",
		BootID:   node.Status.NodeInfo.BootID,
		Baseline: Baseline{Kernel: "6.8.0-0", BootID: "00000000-0000-0000-0000-000000000001", TaintedAt: time.Unix(0, 0).UTC()},
		// Never nil, so templates may index or range over it.
		KernelVersions: append([]string{}, kernelVersions...),
	}
}

// limitedBuffer is a bytes.Buffer that refuses to grow beyond max bytes.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("template renders more than %d bytes, want \"true\" or \"false\"", b.max)
	}
	return b.Buffer.Write(p)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n-- // not inside a character
	}
	return s[:n] + "..."
}
