package framework

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// PollInterval is how often Eventually evaluates its condition.
const PollInterval = 200 * time.Millisecond

// Eventually evaluates cond every PollInterval, at once first, until it returns true (nil error),
// timeout passes or ctx ends. An error from cond does not stop the wait (the API may be briefly
// unavailable, an object not created yet); when the wait fails, the last such error is in the
// returned one.
func Eventually(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(PollInterval)
	defer ticker.Stop()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("condition not met within %s: %w (last error: %w)", timeout, ctx.Err(), lastErr)
			}
			return fmt.Errorf("condition not met within %s: %w", timeout, ctx.Err())
		case <-ticker.C:
		}
	}
}

// Events lists the Events about an object, across namespaces (Events about cluster-scoped
// objects such as nodes are recorded in "default"), oldest first. namespace is the object's
// namespace, "" for cluster-scoped objects. Events written through events.k8s.io/v1 are
// included: the core API shows their "regarding" object as involvedObject.
func (c *Cluster) Events(ctx context.Context, kind, namespace, name string) ([]corev1.Event, error) {
	sel := fields.Set{
		"involvedObject.kind":      kind,
		"involvedObject.namespace": namespace,
		"involvedObject.name":      name,
	}.AsSelector().String()
	list, err := c.Client.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return nil, fmt.Errorf("listing events of %s %s: %w", kind, name, err)
	}
	events := list.Items
	slices.SortStableFunc(events, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	return events, nil
}

// NodeEvents lists the Events about a node, oldest first.
func (c *Cluster) NodeEvents(ctx context.Context, node string) ([]corev1.Event, error) {
	return c.Events(ctx, "Node", "", node)
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	default:
		return e.CreationTimestamp.Time
	}
}
