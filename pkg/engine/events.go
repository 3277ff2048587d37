package engine

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

// Component is the source component of the Events this product emits.
const Component = "image-prewarmer"

// emit records the action's Events about node. Events are written synchronously, so a one-shot
// run that exits right after its cycle loses none; a failure to write one is logged, never fatal.
func (e *Engine) emit(ctx context.Context, node *corev1.Node, a plan.Action) {
	now := metav1.NewTime(e.clock.Now())
	for _, ev := range a.Events {
		obj := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: node.Name + ".",
				Namespace:    e.cfg.Events.Namespace,
			},
			InvolvedObject: corev1.ObjectReference{
				Kind: "Node", APIVersion: "v1", Name: node.Name, UID: node.UID,
			},
			Reason:              ev.Reason,
			Message:             ev.Message,
			Type:                ev.Type,
			Action:              string(a.Type),
			Source:              corev1.EventSource{Component: Component},
			ReportingController: "image-prewarmer.io/orchestrator",
			ReportingInstance:   e.reporter,
			FirstTimestamp:      now,
			LastTimestamp:       now,
			Count:               1,
		}
		if _, err := e.client.CoreV1().Events(e.cfg.Events.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			e.log.Error("recording event failed", "node", node.Name, "reason", ev.Reason, "error", err)
		}
	}
}
