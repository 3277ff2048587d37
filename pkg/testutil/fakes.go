package testutil

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
)

// Faked is what client-go's fake clientsets (typed and dynamic) have in common.
type Faked interface {
	PrependWatchReactor(resource string, reaction k8stesting.WatchReactionFunc)
	Tracker() k8stesting.ObjectTracker
}

// CopyingWatches makes every watch of the fake client f deliver copies of the objects it holds.
// The fake's tracker sends a watch opened after an object was stored that object itself, which an
// informer's transform may then change, as it may change an object decoded from a real API
// server's answer: without copies, the tracker's next read of the object races with it.
// It returns f.
func CopyingWatches[F Faked](f F) F {
	f.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if wa, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		w, err := f.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		return true, watch.Filter(w, func(e watch.Event) (watch.Event, bool) {
			if e.Object != nil {
				e.Object = e.Object.DeepCopyObject()
			}
			return e, true
		}), nil
	})
	return f
}
