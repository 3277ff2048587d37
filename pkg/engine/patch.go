package engine

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
)

const (
	fieldManager    = "image-prewarmer"
	typesMergePatch = types.MergePatchType
)

// mergePatch renders a change to node as a JSON merge patch guarded by the node's
// resourceVersion: the API server answers 409 Conflict if the node changed since it was read,
// so a patch never overwrites a concurrent writer's taints or labels.
//
// Labels and annotations are patched key by key (null removes one). Taints are a list, which a
// merge patch replaces whole: the new list is the observed one minus our taint (matched by key
// and effect) plus our taint, so every other taint is written back exactly as it was read, and
// the resourceVersion guard makes that safe.
func mergePatch(node *corev1.Node, ch plan.Change) ([]byte, error) {
	meta := map[string]any{"resourceVersion": node.ResourceVersion}
	if len(ch.Labels) > 0 {
		meta["labels"] = ch.Labels
	}
	if len(ch.Annotations) > 0 {
		meta["annotations"] = ch.Annotations
	}
	patch := map[string]any{"metadata": meta}
	if taints, changed := newTaints(node.Spec.Taints, ch); changed {
		if len(taints) == 0 {
			patch["spec"] = map[string]any{"taints": nil}
		} else {
			patch["spec"] = map[string]any{"taints": taints}
		}
	}
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("encoding patch for node %s: %w", node.Name, err)
	}
	return b, nil
}

// newTaints applies the change's taint edits and reports whether anything changed.
func newTaints(current []corev1.Taint, ch plan.Change) ([]corev1.Taint, bool) {
	out := make([]corev1.Taint, 0, len(current)+1)
	changed := false
	for _, t := range current {
		if ch.RemoveTaint != nil && t.Key == ch.RemoveTaint.Key && t.Effect == ch.RemoveTaint.Effect {
			changed = true
			continue
		}
		out = append(out, t)
	}
	if add := ch.AddTaint; add != nil {
		present := false
		for _, t := range out {
			if t.Key == add.Key && t.Effect == add.Effect {
				present = true
				break
			}
		}
		if !present {
			out = append(out, corev1.Taint{Key: add.Key, Value: add.Value, Effect: add.Effect})
			changed = true
		}
	}
	return out, changed
}
