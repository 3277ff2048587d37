package framework

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
)

// WarmerOptions describes a warmer DaemonSet fixture. Empty fields take the product defaults
// (see WarmerDaemonSet).
type WarmerOptions struct {
	// Namespace defaults to "default".
	Namespace string
	// Name defaults to "image-prewarmer-warmer".
	Name string
	// PoolSelector is the label selector of the node pool (ANDed into every affinity term).
	PoolSelector map[string]string
	// StatusLabelKey defaults to "os-upgrade/status".
	StatusLabelKey string
	// StatusValue, the value while a node waits for its upgrade, defaults to "upgrading".
	StatusValue string
	// WarmingValue, the value once the upgrade is seen, defaults to "warming".
	WarmingValue string
	// KernelLabel is the node label holding the kernel version, used with KernelVersions.
	KernelLabel string
	// KernelVersions, when set, adds the second affinity term (status=StatusValue and
	// KernelLabel In KernelVersions).
	KernelVersions []string
	// Taint is the one taint the pods tolerate; defaults to os-upgrade=true:NoSchedule.
	Taint corev1.Taint
	// Images become one container each; at least one is needed.
	Images []string
	// KeepAfterRelease adds the chart's third term: pool selector and no status label, which keeps
	// warmer pods on released pool nodes (their images stay referenced, safe from image GC).
	KeepAfterRelease bool
	// AnyPoolNode makes the affinity the pool selector alone, so a warmer pod stays on its node
	// through the taint and the reboot: a hand-written warmer, and the case the orchestrator's
	// "pod already there before the reboot" rule exists for.
	AnyPoolNode bool
}

func (o WarmerOptions) withDefaults() WarmerOptions {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&o.Namespace, metav1.NamespaceDefault)
	def(&o.Name, "image-prewarmer-warmer")
	def(&o.StatusLabelKey, "os-upgrade/status")
	def(&o.StatusValue, "upgrading")
	def(&o.WarmingValue, "warming")
	if o.Taint.Key == "" {
		o.Taint = corev1.Taint{Key: "os-upgrade", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	}
	return o
}

// WarmerDaemonSet builds (without creating) a warmer DaemonSet as design.md "Warmer DaemonSet"
// describes it: node affinity with two ORed terms (pool selector + status label = WarmingValue;
// and, only when KernelVersions are given, pool selector + status label = StatusValue + kernel
// label In KernelVersions), plus pool selector + no status label with KeepAfterRelease, or just
// the pool selector with AnyPoolNode; a toleration of
// exactly the given taint; one container per image; rolling updates with maxUnavailable 100%.
// Containers are never run under kwok, so they have no command; images containing "fail-pull" or
// "slow-pull-<duration>" trigger the simulated pulls of hack/kwok/stages.yaml.
func WarmerDaemonSet(opts WarmerOptions) *appsv1.DaemonSet {
	o := opts.withDefaults()
	selector := map[string]string{
		"app.kubernetes.io/name":     "image-prewarmer-warmer",
		"app.kubernetes.io/instance": o.Name,
	}
	pool := poolRequirements(o.PoolSelector)
	var terms []corev1.NodeSelectorTerm
	if o.AnyPoolNode {
		if len(pool) > 0 {
			terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: pool})
		}
	} else {
		terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: append(slices.Clone(pool),
			in(o.StatusLabelKey, o.WarmingValue))})
		if len(o.KernelVersions) > 0 {
			terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: append(slices.Clone(pool),
				in(o.StatusLabelKey, o.StatusValue), in(o.KernelLabel, o.KernelVersions...))})
		}
		if o.KeepAfterRelease {
			terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: append(slices.Clone(pool),
				corev1.NodeSelectorRequirement{Key: o.StatusLabelKey, Operator: corev1.NodeSelectorOpDoesNotExist})})
		}
	}
	var affinity *corev1.Affinity
	if len(terms) > 0 {
		affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms},
		}}
	}

	containers := make([]corev1.Container, 0, len(o.Images))
	for i, image := range o.Images {
		containers = append(containers, corev1.Container{
			Name:            fmt.Sprintf("warm-%d", i),
			Image:           image,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("16Mi")},
			},
		})
	}
	maxUnavailable := intstr.FromString("100%")
	noToken := false
	grace := int64(1)
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, Labels: selector},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &maxUnavailable},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: selector},
				Spec: corev1.PodSpec{
					Affinity:                      affinity,
					Tolerations:                   []corev1.Toleration{{Key: o.Taint.Key, Operator: corev1.TolerationOpExists, Effect: o.Taint.Effect}},
					Containers:                    containers,
					AutomountServiceAccountToken:  &noToken,
					TerminationGracePeriodSeconds: &grace,
				},
			},
		},
	}
}

// poolRequirements turns a label map into In requirements, sorted by key for a stable pod template.
func poolRequirements(pool map[string]string) []corev1.NodeSelectorRequirement {
	keys := make([]string, 0, len(pool))
	for k := range pool {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	reqs := make([]corev1.NodeSelectorRequirement, 0, len(keys))
	for _, k := range keys {
		reqs = append(reqs, in(k, pool[k]))
	}
	return reqs
}

func in(key string, values ...string) corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
}

// DaemonSetPods lists the pods owned (by controller owner reference) by the DaemonSet.
func (c *Cluster) DaemonSetPods(ctx context.Context, ds *appsv1.DaemonSet) ([]corev1.Pod, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("parsing selector of DaemonSet %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	list, err := c.Client.CoreV1().Pods(ds.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("listing pods of DaemonSet %s/%s: %w", ds.Namespace, ds.Name, err)
	}
	var pods []corev1.Pod
	for _, p := range list.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.Kind == "DaemonSet" && ref.Name == ds.Name {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// PodsOnNode lists the pods in namespace (all namespaces when empty) bound to a node, optionally
// filtered by a label selector (nil: all).
func (c *Cluster) PodsOnNode(ctx context.Context, namespace, node string, selector labels.Selector) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{FieldSelector: "spec.nodeName=" + node}
	if selector != nil {
		opts.LabelSelector = selector.String()
	}
	list, err := c.Client.CoreV1().Pods(namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("listing pods on node %s: %w", node, err)
	}
	return list.Items, nil
}

// WaitingReasons returns the waiting reasons of the pod's containers (init containers first),
// e.g. ErrImagePull, ImagePullBackOff.
func WaitingReasons(p *corev1.Pod) []string {
	var reasons []string
	for _, s := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if s.State.Waiting != nil && s.State.Waiting.Reason != "" {
			reasons = append(reasons, s.State.Waiting.Reason)
		}
	}
	return reasons
}

// Markers understood by the kwok Stages in hack/kwok/stages.yaml.
const (
	// FailPullMarker in a container image makes that container's pull fail: it waits in
	// ErrImagePull, then ImagePullBackOff, and the pod never becomes Ready.
	FailPullMarker = "fail-pull"
	// PullDelayAnnotation on a pod, with a Go duration ("20s"), delays its Ready by that much.
	PullDelayAnnotation = "e2e.image-prewarmer.io/pull-delay"
)

// FailPullImage returns image with the FailPullMarker inserted as the first path component after
// the registry host ("registry.example.com/notebook:1" -> "registry.example.com/fail-pull/notebook:1"),
// so the kwok Stages fail its pull. An image that already carries the marker is returned as is.
func FailPullImage(image string) string {
	if strings.Contains(image, FailPullMarker) {
		return image
	}
	return withPathPrefix(image, FailPullMarker)
}

// SlowPullImage returns image with a "slow-pull-<d>" path component after the registry host
// ("registry.example.com/notebook:1" -> "registry.example.com/slow-pull-20s/notebook:1"): a pod
// with it becomes Ready d (rounded down to a whole millisecond) after kwok first sees it on its node.
func SlowPullImage(image string, d time.Duration) string {
	var s string
	switch {
	case d%time.Hour == 0:
		s = fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		s = fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		s = fmt.Sprintf("%ds", d/time.Second)
	default:
		s = fmt.Sprintf("%dms", d/time.Millisecond)
	}
	return withPathPrefix(image, "slow-pull-"+s)
}

// withPathPrefix inserts component after the registry host of image, or in front when the image
// has no host (a first component with a "." or ":", or "localhost", is a host, as for Docker).
func withPathPrefix(image, component string) string {
	host, rest, found := strings.Cut(image, "/")
	if found && (strings.ContainsAny(host, ".:") || host == "localhost") {
		return host + "/" + component + "/" + rest
	}
	return component + "/" + image
}

// WarmerOptionsFor returns the options of a warmer DaemonSet that matches an orchestrator
// configuration (namespace and name, pool, status label, kernel targets, taint), as the chart
// renders it, with one container per image.
func WarmerOptionsFor(cfg *config.Config, images []string) WarmerOptions {
	return WarmerOptions{
		Namespace:      cfg.Warmer.Namespace,
		Name:           cfg.Warmer.DaemonSetName,
		PoolSelector:   cfg.Pool.NodeSelector,
		StatusLabelKey: cfg.StatusLabel.Key,
		StatusValue:    cfg.StatusLabel.Value,
		WarmingValue:   cfg.StatusLabel.WarmingValue,
		KernelLabel:    cfg.Upgrade.KernelVersionLabel,
		KernelVersions: cfg.Upgrade.KernelVersions,
		Taint:          corev1.Taint{Key: cfg.Taint.Key, Value: cfg.Taint.Value, Effect: cfg.Taint.Effect},
		Images:         images,
	}
}
