package framework

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// KwokNodeAnnotation marks a Node as a fake node that kwok manages (heartbeats, pod status).
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// NodeOption customises a node built by CreateNode.
type NodeOption func(*corev1.Node)

// WithLabels adds labels to the node.
func WithLabels(labels map[string]string) NodeOption {
	return func(n *corev1.Node) {
		for k, v := range labels {
			n.Labels[k] = v
		}
	}
}

// WithAnnotations adds annotations to the node.
func WithAnnotations(annotations map[string]string) NodeOption {
	return func(n *corev1.Node) {
		for k, v := range annotations {
			n.Annotations[k] = v
		}
	}
}

// WithKernel sets status.nodeInfo.kernelVersion (default "5.15.0-1").
func WithKernel(version string) NodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = version }
}

// WithBootID sets status.nodeInfo.bootID (default: a random UUID).
func WithBootID(id string) NodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo.BootID = id }
}

// WithTaints adds taints to the node.
func WithTaints(taints ...corev1.Taint) NodeOption {
	return func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, taints...) }
}

// Unschedulable creates the node cordoned (spec.unschedulable: true).
func Unschedulable() NodeOption {
	return func(n *corev1.Node) { n.Spec.Unschedulable = true }
}

// NewNode builds (without creating) a kwok fake node: the kwok annotation, the usual well-known
// labels, capacity for many pods, and status.nodeInfo with a kernel version and a random boot ID.
func NewNode(name string, opts ...NodeOption) *corev1.Node {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/arch":     "amd64",
				"kubernetes.io/os":       "linux",
				"kubernetes.io/hostname": name,
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity.DeepCopy(),
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    "amd64",
				OperatingSystem: "linux",
				KernelVersion:   "5.15.0-1",
				BootID:          uuid.NewString(),
				KubeletVersion:  "v1.36.3-kwok",
				OSImage:         "kwok fake node",
			},
		},
	}
	for _, opt := range opts {
		opt(n)
	}
	return n
}

// CreateNode creates a kwok fake node (see NewNode) and waits until it is settled: kwok reports
// it Ready, the node lifecycle controller has removed its not-ready taint and, for an
// unschedulable node, added its unschedulable taint. The status set at creation (nodeInfo) is
// kept by the API server and by kwok.
func (c *Cluster) CreateNode(ctx context.Context, name string, opts ...NodeOption) (*corev1.Node, error) {
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, NewNode(name, opts...), metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating node %s: %w", name, err)
	}
	return c.waitNodeSettled(ctx, name)
}

// DeleteNode deletes a node; a node that is already gone is not an error.
func (c *Cluster) DeleteNode(ctx context.Context, name string) error {
	err := c.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting node %s: %w", name, err)
	}
	return nil
}

// Reboot simulates an OS upgrade of a node: a status patch sets status.nodeInfo.kernelVersion to
// newKernel and a new random bootID (as the kubelet reports after the reboot), then a metadata
// patch sets labels (e.g. a kernel-version label); a nil or empty map changes no label.
// It returns the node after both patches.
func (c *Cluster) Reboot(ctx context.Context, name, newKernel string, labels map[string]string) (*corev1.Node, error) {
	status, err := json.Marshal(map[string]any{"status": map[string]any{"nodeInfo": map[string]string{
		"kernelVersion": newKernel,
		"bootID":        uuid.NewString(),
	}}})
	if err != nil {
		return nil, fmt.Errorf("encoding status patch of node %s: %w", name, err)
	}
	node, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, status, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, fmt.Errorf("patching nodeInfo of node %s: %w", name, err)
	}
	if len(labels) == 0 {
		return node, nil
	}
	meta, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	if err != nil {
		return nil, fmt.Errorf("encoding label patch of node %s: %w", name, err)
	}
	node, err = c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, meta, metav1.PatchOptions{})
	if err != nil {
		return nil, fmt.Errorf("patching labels of node %s: %w", name, err)
	}
	return node, nil
}

// Cordon marks the node unschedulable, as kubectl cordon does, and waits for the node lifecycle
// controller's node.kubernetes.io/unschedulable taint.
func (c *Cluster) Cordon(ctx context.Context, name string) (*corev1.Node, error) {
	return c.setUnschedulable(ctx, name, `{"spec":{"unschedulable":true}}`)
}

// Uncordon makes the node schedulable again, as kubectl uncordon does, and waits until the
// node.kubernetes.io/unschedulable taint is gone.
func (c *Cluster) Uncordon(ctx context.Context, name string) (*corev1.Node, error) {
	return c.setUnschedulable(ctx, name, `{"spec":{"unschedulable":null}}`)
}

func (c *Cluster) setUnschedulable(ctx context.Context, name, patch string) (*corev1.Node, error) {
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return nil, fmt.Errorf("patching spec.unschedulable of node %s: %w", name, err)
	}
	return c.waitNodeSettled(ctx, name)
}

// waitNodeSettled waits until the node is Ready and the taints the node lifecycle controller
// manages from its state are in place, so that tests compare stable taint lists.
func (c *Cluster) waitNodeSettled(ctx context.Context, name string) (*corev1.Node, error) {
	var node *corev1.Node
	err := Eventually(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		node = n
		return nodeSettled(n), nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for node %s to be Ready with settled taints: %w", name, err)
	}
	return node, nil
}

func nodeSettled(n *corev1.Node) bool {
	ready := false
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	notReadyTaint, unschedulableTaint := false, false
	for _, t := range n.Spec.Taints {
		switch t.Key {
		case corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable:
			notReadyTaint = true
		case corev1.TaintNodeUnschedulable:
			unschedulableTaint = true
		}
	}
	return ready && !notReadyTaint && unschedulableTaint == n.Spec.Unschedulable
}
