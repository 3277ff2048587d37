// Package testutil has small builders for the Kubernetes objects the planner's tests need.
package testutil

import (
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NodeOption changes a node under construction.
type NodeOption func(*corev1.Node)

// Node returns a Ready node named name with the given options applied.
func Node(name string, opts ...NodeOption) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
			Labels: map[string]string{}, Annotations: map[string]string{},
		},
		Status: corev1.NodeStatus{
			NodeInfo:   corev1.NodeSystemInfo{KernelVersion: "5.15.0-1", BootID: "boot-1"},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

// WithLabels adds labels.
func WithLabels(kv ...string) NodeOption {
	return func(n *corev1.Node) {
		for i := 0; i+1 < len(kv); i += 2 {
			n.Labels[kv[i]] = kv[i+1]
		}
	}
}

// WithAnnotations adds annotations.
func WithAnnotations(kv ...string) NodeOption {
	return func(n *corev1.Node) {
		for i := 0; i+1 < len(kv); i += 2 {
			n.Annotations[kv[i]] = kv[i+1]
		}
	}
}

// WithKernel sets status.nodeInfo.kernelVersion.
func WithKernel(v string) NodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo.KernelVersion = v }
}

// WithBootID sets status.nodeInfo.bootID.
func WithBootID(v string) NodeOption {
	return func(n *corev1.Node) { n.Status.NodeInfo.BootID = v }
}

// WithTaint adds a taint.
func WithTaint(key, value string, effect corev1.TaintEffect) NodeOption {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: key, Value: value, Effect: effect})
	}
}

// Cordoned sets spec.unschedulable.
func Cordoned() NodeOption { return func(n *corev1.Node) { n.Spec.Unschedulable = true } }

// NotReady sets the Ready condition to False.
func NotReady() NodeOption {
	return func(n *corev1.Node) {
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse}}
	}
}

// DaemonSet returns a DaemonSet whose controller has observed its spec.
func DaemonSet(ns, name string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-ds-" + name), Generation: 1},
		Spec:       appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
		Status:     appsv1.DaemonSetStatus{ObservedGeneration: 1},
	}
}

// Revision returns a ControllerRevision of ds with the given number and hash.
func Revision(ds *appsv1.DaemonSet, number int64, hash string) *appsv1.ControllerRevision {
	return &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ds.Namespace, Name: ds.Name + "-" + hash,
			Labels:          map[string]string{appsv1.DefaultDaemonSetUniqueLabelKey: hash},
			OwnerReferences: []metav1.OwnerReference{controllerRef(ds)},
		},
		Revision: number,
	}
}

// PodOption changes a pod under construction.
type PodOption func(*corev1.Pod)

// Pod returns a pending pod of ds on node with revision hash.
func Pod(ds *appsv1.DaemonSet, node, hash string, opts ...PodOption) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ds.Namespace, Name: ds.Name + "-" + node, UID: types.UID("uid-pod-" + node + "-" + hash),
			Labels:          map[string]string{"app": ds.Name, appsv1.DefaultDaemonSetUniqueLabelKey: hash},
			OwnerReferences: []metav1.OwnerReference{controllerRef(ds)},
		},
		Spec:   corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodPending},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Ready marks the pod Running with PodReady=True.
func Ready() PodOption {
	return func(p *corev1.Pod) {
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
	}
}

// WithUID sets the pod's UID.
func WithUID(uid string) PodOption { return func(p *corev1.Pod) { p.UID = types.UID(uid) } }

// Restarts sets one container's restart count.
func Restarts(n int32) PodOption {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "warm-0", RestartCount: n})
	}
}

// Waiting adds a container waiting with reason.
func Waiting(container, image, reason, message string) PodOption {
	return func(p *corev1.Pod) {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: container, Image: image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
		})
	}
}

// Unbound makes the pod one the scheduler has not bound yet, as the DaemonSet controller creates
// it: no spec.nodeName, and its node named in a required node affinity term on metadata.name.
func Unbound() PodOption {
	return func(p *corev1.Pod) {
		node := p.Spec.NodeName
		p.Spec.NodeName = ""
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
			}}},
		}}
	}
}

// Unschedulable adds the condition the scheduler sets on a pod it cannot place.
func Unschedulable(message string) PodOption {
	return func(p *corev1.Pod) {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
			Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable, Message: message,
		})
	}
}

// Terminating sets a deletion timestamp.
func Terminating() PodOption {
	return func(p *corev1.Pod) { now := metav1.Now(); p.DeletionTimestamp = &now }
}

// OwnedBy replaces the pod's owner with another DaemonSet.
func OwnedBy(ds *appsv1.DaemonSet) PodOption {
	return func(p *corev1.Pod) { p.OwnerReferences = []metav1.OwnerReference{controllerRef(ds)} }
}

func controllerRef(ds *appsv1.DaemonSet) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: &t}
}
