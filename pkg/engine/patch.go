package engine

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

const fieldManager = "image-prewarmer"

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

// releasePatch renders a release as a JSON patch (RFC 6902) guarded by test operations on what
// the decision rests on, instead of the node's resourceVersion: every annotation of ours it
// removes and the maintenance ID, as read (together they pin the node's phase, owner and
// maintenance episode), the status label, and our taint at its index. A concurrent write to
// anything else (status heartbeats, other labels and annotations, taints after ours) no longer
// sends the release back for a re-read, and a release is what a user waits for. A change to any
// of ours, or to the taints before ours, makes the API server refuse the patch (422 Unprocessable
// Entity), and the engine re-reads and re-plans the node as on a conflict.
//
// ok is false when the change is not a release's (it adds a taint), or adds a key to a map the
// node does not have (its labels or annotations): creating the map would replace one another
// writer created since the read, and a JSON patch cannot test that it is still absent. The
// caller then uses mergePatch, guarded by the resourceVersion.
func releasePatch(node *corev1.Node, ch plan.Change) (patch []byte, ok bool, err error) {
	if ch.AddTaint != nil || (node.Annotations == nil && adds(ch.Annotations)) || (node.Labels == nil && adds(ch.Labels)) {
		return nil, false, nil
	}
	var tests, edits []patchOp
	test := func(path string, v any) { tests = append(tests, patchOp{Op: "test", Path: path, Value: raw(v)}) }

	if id, has := node.Annotations[state.MaintenanceID]; has {
		if _, changed := ch.Annotations[state.MaintenanceID]; !changed {
			test(annotationPath(state.MaintenanceID), id)
		}
	}
	for _, m := range []struct {
		parent  string
		current map[string]string
		changes map[string]*string
	}{
		{"/metadata/annotations", node.Annotations, ch.Annotations},
		{"/metadata/labels", node.Labels, ch.Labels},
	} {
		t, e := mapOps(m.parent, m.current, m.changes)
		tests, edits = append(tests, t...), append(edits, e...)
	}
	if rm := ch.RemoveTaint; rm != nil {
		for i, t := range node.Spec.Taints {
			if t.Key == rm.Key && t.Effect == rm.Effect {
				path := fmt.Sprintf("/spec/taints/%d", i)
				test(path, t)
				edits = append(edits, patchOp{Op: "remove", Path: path})
				break // key and effect are unique among a node's taints
			}
		}
	}
	if len(edits) == 0 {
		return nil, true, nil
	}
	b, err := json.Marshal(append(tests, edits...))
	if err != nil {
		return nil, true, fmt.Errorf("encoding patch for node %s: %w", node.Name, err)
	}
	return b, true, nil
}

func annotationPath(key string) string { return "/metadata/annotations/" + jsonPointerEscape(key) }

// adds reports whether changes set a key.
func adds(changes map[string]*string) bool {
	for _, v := range changes {
		if v != nil {
			return true
		}
	}
	return false
}

// mapOps renders changes to one string map of the node (labels or annotations, at parent), which
// exists when a key is added: a test of every key it removes or overwrites, as read, then the
// edits.
func mapOps(parent string, current map[string]string, changes map[string]*string) (tests, edits []patchOp) {
	keys := make([]string, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		path := parent + "/" + jsonPointerEscape(k)
		old, has := current[k]
		if has {
			tests = append(tests, patchOp{Op: "test", Path: path, Value: raw(old)})
		}
		switch v := changes[k]; {
		case v == nil && has:
			edits = append(edits, patchOp{Op: "remove", Path: path})
		case v != nil:
			edits = append(edits, patchOp{Op: "add", Path: path, Value: raw(*v)})
		}
	}
	return tests, edits
}

// jsonPointerEscape escapes a map key for a JSON pointer (RFC 6901).
func jsonPointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// patchOp is one operation of a JSON patch. Value is pre-encoded so that an empty string is
// still a value (remove has none).
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value,omitempty"`
}

func raw(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encoding a patch value: %v", err)) // strings, maps of strings and taints always encode
	}
	return b
}

// carries reports whether node holds everything ch writes: its labels and annotations with the
// values written (absent for a removal), the taint it adds (with its value) and none it removes.
// Annotations written by a transition include its timestamp, so a node carries a transition's
// change only once that transition (not another writer) wrote it; a record (a configuration swap)
// has none, and writing it twice changes nothing.
func carries(node *corev1.Node, ch plan.Change) bool {
	for _, m := range []struct {
		current map[string]string
		changes map[string]*string
	}{{node.Labels, ch.Labels}, {node.Annotations, ch.Annotations}} {
		for k, v := range m.changes {
			cur, has := m.current[k]
			if (v == nil && has) || (v != nil && (!has || cur != *v)) {
				return false
			}
		}
	}
	add, remove := ch.AddTaint, ch.RemoveTaint
	// A swap of the taint's value removes the taint and adds it back with its new value; an entry
	// adds none where one of the key and effect is present, whatever its value (newTaints).
	swap := add != nil && remove != nil && add.Key == remove.Key && add.Effect == remove.Effect
	added := add == nil
	for _, t := range node.Spec.Taints {
		switch {
		case add != nil && t.Key == add.Key && t.Effect == add.Effect:
			if swap && t.Value != add.Value {
				return false
			}
			added = true
		case remove != nil && t.Key == remove.Key && t.Effect == remove.Effect:
			return false
		}
	}
	return added
}
