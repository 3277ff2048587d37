// Package state names what image-prewarmer records on a Node and reads it back.
//
// All state lives on the Node, so any run, or a new replica, picks up where the last one stopped.
package state

import (
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Prefix of every annotation this product writes.
const Prefix = "image-prewarmer.io/"

// Annotations on managed and released nodes.
const (
	Phase          = Prefix + "phase"
	Owner          = Prefix + "owner"
	BaselineKernel = Prefix + "baseline-kernel"
	BaselineBootID = Prefix + "baseline-boot-id"
	// BaselineKernelSource says where baseline-kernel was read, when upgrade.kernelVersionLabel
	// is set: "label" or "nodeInfo" (status.nodeInfo.kernelVersion, the node lacking the label).
	BaselineKernelSource = Prefix + "baseline-kernel-source"
	TaintedAt            = Prefix + "tainted-at"
	UpgradedAt           = Prefix + "upgraded-at"
	// UpgradedBootID is the node's boot ID when it went warming (its upgrade seen, or adopted): a
	// maintenance that begins after that, on a node that has not rebooted since, has its upgrade
	// still to come.
	UpgradedBootID = Prefix + "upgraded-boot-id"
	// UpgradedUnread names the maintenance resource that could not be read when the node went
	// warming: maintenance-id may then lack one of its objects that joined since the entry,
	// which the release tells by its creation time.
	UpgradedUnread    = Prefix + "upgraded-unread"
	LeftMaintenanceAt = Prefix + "left-maintenance-at"
	WarmerPodUID      = Prefix + "warmer-pod-uid"
	WarmerPodRestarts = Prefix + "warmer-pod-restarts"
	LastError         = Prefix + "last-error"
	MaintenanceID     = Prefix + "maintenance-id"
	MaintenanceEnded  = Prefix + "maintenance-ended-at"
	ReleasedAt        = Prefix + "released-at"
	ReleaseReason     = Prefix + "release-reason"
	// Taint records the taint this installation put on (or adopted with) a managed node, as
	// key=value:effect: the one its release removes, even after the configured taint changed.
	Taint = Prefix + "taint"
	// StatusLabel records the key of the status label this installation put on (or adopted with)
	// a managed node: the one its release removes, even after the configured key changed.
	StatusLabel = Prefix + "status-label"
	// StatusValues records the status label values the node was managed with, as
	// value,warmingValue (a label value cannot hold a comma): a changed value in the
	// configuration is told from a value edited by hand.
	StatusValues = Prefix + "status-values"
)

// Uninstalling, on the warmer DaemonSet, marks the installation as being removed (`cleanup
// --uninstall` sets it, with the time, before it releases the nodes): from then on no orchestrator
// of the installation taints or adopts a node, so none is tainted behind the uninstall's back.
const Uninstalling = Prefix + "uninstalling"

// Phases of a managed node. A released node has no phase.
const (
	PhaseTainted = "tainted"
	PhaseWarming = "warming"
)

// Release reasons recorded in the release-reason annotation.
const (
	ReasonWarm      = "warm"
	ReasonCancelled = "cancelled"
	ReasonTimeout   = "timeout"
	ReasonExternal  = "external"
	ReasonLeftPool  = "left-pool"
	ReasonCleanup   = "cleanup"
)

// ManagedAnnotations are removed when a node is released. MaintenanceID, ReleasedAt,
// ReleaseReason, MaintenanceEnded and LastError stay for the record.
var ManagedAnnotations = []string{
	Phase, Owner, BaselineKernel, BaselineBootID, BaselineKernelSource, TaintedAt, UpgradedAt,
	UpgradedBootID, UpgradedUnread, LeftMaintenanceAt, WarmerPodUID, WarmerPodRestarts, Taint, StatusLabel, StatusValues,
}

// RecordAnnotations are what a released node keeps; a new maintenance clears them.
var RecordAnnotations = []string{ReleasedAt, ReleaseReason, LastError, MaintenanceEnded}

// FormatTime is the one time format on nodes: RFC 3339 in UTC, to the second.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Time reads a time annotation; ok is false when it is absent or malformed.
func Time(node *corev1.Node, key string) (time.Time, bool) {
	v, found := node.Annotations[key]
	if !found {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// Int reads an integer annotation; ok is false when it is absent or malformed.
func Int(node *corev1.Node, key string) (int64, bool) {
	v, found := node.Annotations[key]
	if !found {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// PhaseOf returns the node's phase ("" when it is not managed).
func PhaseOf(node *corev1.Node) string { return node.Annotations[Phase] }

// FormatTaint renders a taint as the Taint annotation records it: key=value:effect, or
// key:effect without a value.
func FormatTaint(t corev1.Taint) string {
	if t.Value == "" {
		return t.Key + ":" + string(t.Effect)
	}
	return t.Key + "=" + t.Value + ":" + string(t.Effect)
}

// RecordedTaint reads the node's Taint annotation; ok is false when it is absent or malformed
// (not a taint the API server would accept), and the caller then uses the configured taint.
// (Neither a taint key nor its value may contain '=' or ':'.)
func RecordedTaint(node *corev1.Node) (corev1.Taint, bool) {
	v, found := node.Annotations[Taint]
	if !found {
		return corev1.Taint{}, false
	}
	i := strings.LastIndexByte(v, ':')
	if i <= 0 || i == len(v)-1 {
		return corev1.Taint{}, false
	}
	key, value, _ := strings.Cut(v[:i], "=")
	effect := corev1.TaintEffect(v[i+1:])
	switch effect {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
	default:
		return corev1.Taint{}, false
	}
	if len(validation.IsQualifiedName(key)) > 0 || len(validation.IsValidLabelValue(value)) > 0 {
		return corev1.Taint{}, false
	}
	return corev1.Taint{Key: key, Value: value, Effect: effect}, true
}

// RecordedStatusLabel reads the node's StatusLabel annotation; ok is false when it is absent or
// not a valid label key (edited by hand), and the caller then uses the configured key.
func RecordedStatusLabel(node *corev1.Node) (string, bool) {
	key, found := node.Annotations[StatusLabel]
	if !found || len(validation.IsQualifiedName(key)) > 0 {
		return "", false
	}
	return key, true
}

// FormatStatusValues renders the StatusValues annotation.
func FormatStatusValues(value, warmingValue string) string { return value + "," + warmingValue }

// RecordedStatusValues reads the node's StatusValues annotation; ok is false when it is absent
// or malformed (not two label values).
func RecordedStatusValues(node *corev1.Node) (value, warmingValue string, ok bool) {
	v, found := node.Annotations[StatusValues]
	if !found {
		return "", "", false
	}
	value, warmingValue, found = strings.Cut(v, ",")
	if !found || value == "" || warmingValue == "" ||
		len(validation.IsValidLabelValue(value)) > 0 || len(validation.IsValidLabelValue(warmingValue)) > 0 {
		return "", "", false
	}
	return value, warmingValue, true
}

// HasTaint reports whether node carries a taint with key and effect (any value).
func HasTaint(node *corev1.Node, key string, effect corev1.TaintEffect) bool {
	for _, t := range node.Spec.Taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodReady reports whether the pod's Ready condition is True.
func PodReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodRestarts sums the restart counts of the pod's init and app containers.
func PodRestarts(pod *corev1.Pod) int64 {
	var n int64
	for _, s := range pod.Status.InitContainerStatuses {
		n += int64(s.RestartCount)
	}
	for _, s := range pod.Status.ContainerStatuses {
		n += int64(s.RestartCount)
	}
	return n
}

// NodeControllerTaint reports whether a taint key belongs to Kubernetes' node controllers (the
// node lifecycle controller's condition and unschedulable taints, the cloud node controller's):
// they keep such taints in step with the node, so this product never configures, swaps or removes
// one.
func NodeControllerTaint(key string) bool {
	return strings.HasPrefix(key, "node.kubernetes.io/") || strings.HasPrefix(key, "node.cloudprovider.kubernetes.io/")
}

// KubernetesLabel reports whether a label key is in a namespace Kubernetes keeps for its own
// components (kubernetes.io, k8s.io and their subdomains: the kubelet's hostname, os and
// topology labels, node roles): this product's status label is never one of them.
func KubernetesLabel(key string) bool {
	prefix, _, ok := strings.Cut(key, "/")
	if !ok {
		return false
	}
	for _, d := range []string{"kubernetes.io", "k8s.io"} {
		if prefix == d || strings.HasSuffix(prefix, "."+d) {
			return true
		}
	}
	return false
}
