package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/cache"
)

// maintenanceReads follows whether the nodeMaintenance informer's cache holds what the API server
// does. Once synced, an informer whose reads fail (RBAC taken away, a conversion webhook that is
// down) keeps serving what it last read while it retries, and plans must not take that for the
// cluster: from a failed list, a watch that fails to start, or an error a watch delivers, the
// cache counts as stale until a read of the whole resource is complete again: a list whose last
// page arrived, or a watch list whose initial events have all arrived. A watch that would resume
// from the cache's version meanwhile is answered as expired instead, so that the informer reads
// the whole resource (changes made while the reads failed would come after a resume's first
// events, and the API server may answer an old version as expired only once the watch has
// started). A 404 is maintenanceGone's, an expired resource version is routine (the informer
// reads the whole resource again), and an error once the informer is stopped is none.
//
// A read is complete once the informer has applied it to its cache, not when the API server's
// answer arrives: the informer applies it later, in its own goroutine. So each complete read that
// ends a failure is followed by a read mark, an object the ListWatch adds after it (the last item
// of the list, or an event after the watch list's initial events); the informer applies objects
// in order, and once its handlers see that mark, the read is in the cache. The mark, whose name
// no object can have, is kept out of every plan.
type maintenanceReads struct {
	log      *slog.Logger
	resource string
	// changed is called when the cache starts or stops counting as stale (a re-plan).
	changed func()
	// hasSynced reports whether the informer has synced: a failure before that is said at
	// DEBUG, the source being unknown until then anyway.
	hasSynced func() bool

	mu sync.Mutex
	// err is the first failure since the last complete read; nil when there was none. warned
	// says it was logged at WARN (so is its end, at INFO).
	err    error
	warned bool
	// marks counts the read marks made; awaited is the one that ends the failure (0: none).
	marks, awaited uint64
}

// readMarkName is the read mark's name: not a valid object name, so no object has it.
const readMarkName = "image-prewarmer.io:read-mark"

// isReadMark reports whether obj is a read mark.
func isReadMark(obj any) bool {
	a, err := meta.Accessor(obj)
	return err == nil && a.GetName() == readMarkName
}

// stale reports whether the cache may lag behind the API server.
func (r *maintenanceReads) stale() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err != nil
}

// listWatch returns the informer's ListWatch on res, recording how each read goes.
func (r *maintenanceReads) listWatch(res dynamic.ResourceInterface) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			list, err := res.List(ctx, opts)
			switch {
			case err != nil:
				r.failed(ctx, err)
			case list.GetContinue() == "":
				if mark := r.complete(list.GetResourceVersion()); mark != nil {
					list.Items = append(list.Items, *mark)
				}
			}
			return list, err
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			initial := opts.SendInitialEvents != nil && *opts.SendInitialEvents
			if !initial && r.stale() {
				return nil, apierrors.NewResourceExpired("the maintenance resource is read whole again after a failed read")
			}
			w, err := res.Watch(ctx, opts)
			if err != nil {
				r.failed(ctx, err)
				return nil, err
			}
			return r.follow(ctx, w, initial), nil
		},
	}
}

// follow returns a watch that passes w's events on, recording the errors it delivers and, for a
// watch list (initial), completing the read with the bookmark that ends the initial events,
// followed by its read mark. What comes once the watch is stopped (or ctx ended) is not recorded.
func (r *maintenanceReads) follow(ctx context.Context, w watch.Interface, initial bool) watch.Interface {
	f := &followedWatch{source: w, out: make(chan watch.Event), done: make(chan struct{})}
	go func() {
		defer close(f.out)
		defer w.Stop()
		for e := range w.ResultChan() {
			if f.stopped() {
				return
			}
			var mark *unstructured.Unstructured
			switch {
			case e.Type == watch.Error:
				r.failed(ctx, apierrors.FromObject(e.Object))
			case e.Type == watch.Bookmark && initial:
				if a, err := meta.Accessor(e.Object); err == nil && a.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
					mark = r.complete(a.GetResourceVersion())
				}
			}
			if !f.send(e) || (mark != nil && !f.send(watch.Event{Type: watch.Added, Object: mark})) {
				return
			}
		}
	}()
	return f
}

// followedWatch is the watch follow returns.
type followedWatch struct {
	source watch.Interface
	out    chan watch.Event
	done   chan struct{}
	once   sync.Once
}

func (f *followedWatch) Stop() {
	f.once.Do(func() {
		close(f.done)
		f.source.Stop()
	})
}

func (f *followedWatch) ResultChan() <-chan watch.Event { return f.out }

// stopped reports whether the watch was stopped.
func (f *followedWatch) stopped() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

// send passes e on, unless the watch is stopped first.
func (f *followedWatch) send(e watch.Event) bool {
	select {
	case f.out <- e:
		return true
	case <-f.done:
		return false
	}
}

// failed records a read that failed, made under ctx (the informer's).
func (r *maintenanceReads) failed(ctx context.Context, err error) {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || notServed(err) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return
	}
	r.mu.Lock()
	first := r.err == nil
	if first {
		r.err, r.warned = err, r.hasSynced()
	}
	r.awaited = 0 // a mark made before this failure ends nothing
	warn := r.warned
	r.mu.Unlock()
	if !first {
		return
	}
	level := slog.LevelDebug
	if warn {
		level = slog.LevelWarn
	}
	r.log.Log(ctx, level, "reading the maintenance resource failed; no node is entered or leaves maintenance until it reads again",
		"resource", r.resource, "error", err)
	r.changed()
}

// complete records a complete read of the whole resource at resource version rv, and returns the
// read mark to follow it when it ends a failure (nil otherwise).
func (r *maintenanceReads) complete(rv string) *unstructured.Unstructured {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil {
		return nil
	}
	r.marks++
	r.awaited = r.marks
	mark := &unstructured.Unstructured{}
	mark.SetName(readMarkName)
	mark.SetUID(types.UID(fmt.Sprintf("read-%d", r.marks)))
	mark.SetResourceVersion(rv)
	return mark
}

// seen is called with each object the informer's handlers see: a read mark that ends a failure
// ends it, the read being in the cache.
func (r *maintenanceReads) seen(obj any) {
	a, err := meta.Accessor(obj)
	if err != nil || a.GetName() != readMarkName {
		return
	}
	r.mu.Lock()
	lastErr, warned := r.err, r.warned
	ends := lastErr != nil && r.awaited != 0 && string(a.GetUID()) == fmt.Sprintf("read-%d", r.awaited)
	if ends {
		r.err, r.awaited = nil, 0
	}
	r.mu.Unlock()
	if !ends {
		return
	}
	level := slog.LevelDebug
	if warned {
		level = slog.LevelInfo
	}
	r.log.Log(context.Background(), level, "maintenance resource reads again", "resource", r.resource, "lastError", strings.TrimSpace(lastErr.Error()))
	r.changed()
}
