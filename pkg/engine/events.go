package engine

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// Component is the source component of the Events this product emits.
const Component = "image-prewarmer"

// emit records the action's Events about node, in the background (a few at a time, on the
// EventClient) so that they never delay the next node's patch. RunOnce and Cleanup wait for them
// before returning (WaitEvents), so a one-shot run that exits right after its cycle loses none.
// A cancelled ctx does not cancel them. A failure to write one is logged, never fatal.
func (e *Engine) emit(ctx context.Context, node *corev1.Node, a plan.Action) {
	if len(a.Events) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	e.pendingEvents.Add(1)
	go func() {
		defer e.pendingEvents.Done()
		e.eventSlots <- struct{}{}
		defer func() { <-e.eventSlots }()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		e.writeEvents(ctx, node, a)
	}()
}

// WaitEvents waits until the Events emitted so far are written (or failed).
func (e *Engine) WaitEvents() { e.pendingEvents.Wait() }

// stoppedEventsWait bounds how long a one-shot command waits for its Events once its context has
// ended (SIGTERM, a Job's deadline): within the pod's grace period (30 s by default), what the
// command must still do comes first: an uninstall's mark removal, the exit message and code.
var stoppedEventsWait = 10 * time.Second

// waitEvents is WaitEvents until ctx ends, and for at most stoppedEventsWait after that; Events
// still pending then are said lost.
func (e *Engine) waitEvents(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		e.pendingEvents.Wait()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	t := time.NewTimer(stoppedEventsWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		e.log.Warn("stopping with Events not yet written: they may be lost", "waited", stoppedEventsWait.String())
	}
}

// WaitEventsFor is WaitEvents for at most d; it reports whether they were all written (or failed)
// by then. Those still pending go on in the background.
func (e *Engine) WaitEventsFor(d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		e.pendingEvents.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func (e *Engine) writeEvents(ctx context.Context, node *corev1.Node, a plan.Action) {
	now := metav1.NewTime(e.clock.Now())
	for _, ev := range a.Events {
		obj := &corev1.Event{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: node.Name + ".",
				Namespace:    e.cfg.Events.Namespace,
				// Installations share the namespace (Events about nodes live in default): this
				// says which one wrote it.
				Annotations: map[string]string{state.Owner: e.cfg.Instance},
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
		if _, err := e.events.CoreV1().Events(e.cfg.Events.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			e.log.Error("recording event failed", "node", node.Name, "reason", ev.Reason, "error", err)
		}
	}
}
