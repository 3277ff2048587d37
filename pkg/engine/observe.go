package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
)

// Observation is one snapshot plus what was skipped while taking it.
type Observation struct {
	Snapshot plan.Snapshot
	Warnings []sources.Warning
	// WarmerReadAt is when the observation began, at or before the warmer DaemonSet's read: an
	// uninstall mark set after it may be unknown to the snapshot, however long the rest of the
	// observation took. Zero when unknown (ObserveFrom).
	WarmerReadAt time.Time
	// MaintenanceErr is why the nodeMaintenance objects could not be read (nil when they were,
	// or when the source is off). The snapshot then has that source unknown
	// (plan.Snapshot.MaintenanceUnknown), and a warning says why: the cycle still releases warm
	// nodes and applies the timeouts, and fails once it has.
	MaintenanceErr error
}

// notServedConfirm is how long a nodeMaintenance resource must keep being answered as not served
// (404) before a cycle takes its source for empty, when a node this installation manages records
// one of its objects: an API server that restarts answers 404 for a while for custom resources
// it serves, and with the source empty such a node would be taken out of maintenance (released
// cancelled before its upgrade, with a short cancelAfter). The event-driven mode confirms as long.
var notServedConfirm = sources.NotServedConfirm

// notServedRetry is the pause between two reads that confirm a 404.
var notServedRetry = time.Second

// Observe takes one snapshot with a constant number of API calls: two node lists (pool, status
// label; one request each when streamed, one per page otherwise), one list per object source,
// one DaemonSet get and two namespaced lists (its revisions and pods). No per-node reads. The
// nodes, the maintenance objects and the warmer are read concurrently: the snapshot is no more
// atomic for being read in sequence, and at 5,000 nodes the node lists alone take a few hundred
// milliseconds. When reads fail, the error reported is the first in that order (nodes, warmer),
// whichever failed first. A maintenance read that fails is no error here: it is in
// MaintenanceErr, with the source unknown in the snapshot.
func (e *Engine) Observe(ctx context.Context) (Observation, error) {
	return e.observe(ctx, observeOptions{})
}

type observeOptions struct {
	// everyNode reads every node of the cluster in one list, and no maintenance object (cleanup).
	everyNode bool
	// confirm reads a nodeMaintenance resource answered as not served again, for up to
	// notServedConfirm, while a node this installation manages records one of its objects
	// (a cycle that writes; status only shows what it read).
	confirm bool
}

// observe is Observe; with o.everyNode, the snapshot holds every node of the cluster, read in one
// list, rather than the pool and the nodes carrying the status label: cleanup must also find a
// managed node that has lost both its pool labels and its status label (edited away by hand),
// which only its annotations still mark as this installation's. Cleanup releases regardless of
// maintenance, so everyNode reads no maintenance object either: an uninstall does not depend on
// the maintenance resource being readable. The source is then unknown to the snapshot, so that
// a release keeps the objects recorded on the node (read as empty, they would be dropped from
// maintenance-id, and the node tainted again for the same object).
func (e *Engine) observe(ctx context.Context, o observeOptions) (Observation, error) {
	var (
		wg        sync.WaitGroup
		errs      [3]error
		nodes     []*corev1.Node
		objects   []*unstructured.Unstructured
		served    bool
		ds        *appsv1.DaemonSet
		revisions []*appsv1.ControllerRevision
		pods      []*corev1.Pod
	)
	started := e.clock.Now()
	wg.Go(func() {
		if o.everyNode {
			nodes, errs[0] = e.readNodes(ctx, "")
			if errs[0] != nil {
				errs[0] = fmt.Errorf("listing nodes: %w", errs[0])
			}
			return
		}
		nodes, errs[0] = e.listNodes(ctx)
	})
	served = true
	if !o.everyNode {
		wg.Go(func() { objects, served, errs[1] = e.sources.List(ctx) })
	}
	wg.Go(func() { ds, revisions, pods, errs[2] = e.observeWarmer(ctx) })
	wg.Wait()
	if err := cmp.Or(errs[0], errs[2]); err != nil {
		return Observation{}, err
	}
	if o.confirm && errs[1] == nil && !served && e.planner.RecordsNodeMaintenance(nodes) {
		objects, served, errs[1] = e.confirmNotServed(ctx)
	}
	var unknown string
	if errs[1] != nil || (o.everyNode && e.cfg.Maintenance.NodeMaintenance.Enabled) {
		unknown, objects, served = sources.ResourceName(e.cfg), nil, true
	}
	src := e.sources.CollectFrom(nodes, objects, served)
	if errs[1] != nil {
		src.Warnings = append(src.Warnings, sources.Warning{Source: plan.SourceNodeMaintenance, Message: fmt.Sprintf(
			"%v; no node is entered, and no node tainted for maintenance leaves it, until the resource can be read", errs[1])})
	}
	e.uninstall.seen(ds)
	return Observation{
		Snapshot: plan.Snapshot{
			Nodes: nodes, Maintenance: src.Maintenance, Now: e.clock.Now(),
			DaemonSet: ds, Revisions: revisions, Pods: pods, MaintenanceUnknown: unknown,
		},
		Warnings:       src.Warnings,
		WarmerReadAt:   started,
		MaintenanceErr: errs[1],
	}, nil
}

// confirmNotServed reads the nodeMaintenance objects again, every notServedRetry, until the
// resource is served, a read fails, or it has been answered as not served for notServedConfirm.
func (e *Engine) confirmNotServed(ctx context.Context) (objects []*unstructured.Unstructured, served bool, err error) {
	e.log.Info("maintenance resource answered as not served while a node managed here records one of its objects; confirming before its source counts as empty",
		"resource", sources.ResourceName(e.cfg), "within", notServedConfirm.String())
	deadline := time.Now().Add(notServedConfirm)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("listing %s: %w", sources.ResourceName(e.cfg), ctx.Err())
		case <-time.After(min(notServedRetry, time.Until(deadline))):
		}
		if objects, served, err = e.sources.List(ctx); served || err != nil {
			return objects, served, err
		}
	}
	return nil, false, nil
}

// nodePageSize is the default page size of paginated node lists (Options.NodePageSize): a
// 5,000-node list in one response would need the whole response body and every decoded node in
// memory at once. At 5,000 nodes, pages of 250 keep run --once's peak RSS about 6 MiB below pages
// of 500, for ten more list requests and no measurable difference in wall time.
const nodePageSize = 250

// streamTimeout bounds a streamed node list (the watch's timeoutSeconds): an API server that
// neither sends every node nor ends the stream within it has the list read in pages instead.
const streamTimeout = 60 * time.Second

// listNodes lists pool nodes and nodes carrying the status label (a node that left the pool
// still has to be released), each once, sorted by name. The two lists are read concurrently,
// each streamed (streamNodes) or, where the API server does not stream lists, paginated (one
// request per nodePageSize nodes); each node is trimmed of what nothing reads as soon as it is
// decoded.
func (e *Engine) listNodes(ctx context.Context) ([]*corev1.Node, error) {
	req, err := labels.NewRequirement(e.cfg.StatusLabel.Key, selection.Exists, nil)
	if err != nil {
		return nil, fmt.Errorf("status label %s: %w", e.cfg.StatusLabel.Key, err)
	}
	var (
		wg      sync.WaitGroup
		lists   [2][]*corev1.Node
		errs    [2]error
		selects = [2]string{e.cfg.PoolSelector().String(), labels.NewSelector().Add(*req).String()}
	)
	for i, sel := range selects {
		wg.Go(func() { lists[i], errs[i] = e.readNodes(ctx, sel) })
	}
	wg.Wait()
	if errs[0] != nil {
		return nil, fmt.Errorf("listing pool nodes (%s): %w", selects[0], errs[0])
	}
	if errs[1] != nil {
		return nil, fmt.Errorf("listing nodes labelled %s: %w", e.cfg.StatusLabel.Key, errs[1])
	}
	byName := make(map[string]*corev1.Node, len(lists[0])+len(lists[1]))
	for _, list := range lists {
		for _, n := range list {
			// A node in both lists: the two reads are not one snapshot, keep the later copy.
			if old, ok := byName[n.Name]; !ok || Newer(n, old) {
				byName[n.Name] = n
			}
		}
	}
	nodes := make([]*corev1.Node, 0, len(byName))
	for _, n := range byName {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	return nodes, nil
}

// readNodes reads the nodes matching selector: streamed when the API server streams lists, else
// in pages. The first stream the server refuses (a server without the WatchList feature, a
// proxy, RBAC without watch) is logged and makes this engine read in pages from then on. A
// stream that got no answer at all (connection refused or lost, no route, a TLS failure; not a
// timeout, which a server holding streams without answering gives) is read in pages this once,
// without a word: that says nothing about streamed lists, and the pages fail the same way when
// the server is unreachable.
func (e *Engine) readNodes(ctx context.Context, selector string) ([]*corev1.Node, error) {
	if !e.pagedNodeLists.Load() {
		// Not with a client without a REST client of its own (the fake clientsets of unit tests).
		if rc, ok := e.client.CoreV1().RESTClient().(*rest.RESTClient); ok && rc != nil {
			// The client's own timeout (client.timeout) ends the stream too, when it is shorter.
			limit := streamTimeout
			if t := rc.Client.Timeout; t > 0 && t < limit {
				limit = t
			}
			nodes, err := e.streamNodes(ctx, selector, limit)
			if err == nil || ctx.Err() != nil {
				return nodes, err
			}
			var noAnswer *url.Error
			lost := errors.Is(err, errStreamLost) || (errors.As(err, &noAnswer) && !noAnswer.Timeout())
			if !lost && !e.pagedNodeLists.Swap(true) {
				e.log.Info("the API server did not stream a node list; reading node lists in pages", "error", err)
			}
		}
	}
	return e.pageNodes(ctx, selector)
}

// streamNodes reads the nodes matching selector as one watch that sends them all, then a
// bookmark marking the end of the list (a streaming list: sendInitialEvents, Kubernetes'
// WatchList feature), and closes it there. It is one request whatever the pool's size, served from
// the API server's watch cache, as recent as a list (resourceVersionMatch NotOlderThan with no
// resourceVersion: a consistent read), and each node is decoded and trimmed as it arrives: no
// page of nodes is held at once on either side. Any error, or a stream that ends before its
// bookmark, fails the whole read: the caller then reads in pages. limit bounds the stream: the
// smaller of streamTimeout and the client's own timeout, which would cut it anyway.
func (e *Engine) streamNodes(ctx context.Context, selector string, limit time.Duration) ([]*corev1.Node, error) {
	// The API server ends the watch at timeoutSeconds; this deadline is for one that does not.
	ctx, cancel := context.WithTimeout(ctx, limit+5*time.Second)
	defer cancel()
	start := time.Now()
	initialEvents, timeout := true, max(int64(limit/time.Second), 1)
	w, err := e.client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
		LabelSelector:        selector,
		SendInitialEvents:    &initialEvents,
		ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan,
		AllowWatchBookmarks:  true,
		TimeoutSeconds:       &timeout,
	})
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	var nodes []*corev1.Node
	for ev := range w.ResultChan() {
		switch ev.Type {
		case watch.Added:
			n, ok := ev.Object.(*corev1.Node)
			if !ok {
				return nil, fmt.Errorf("streamed node list: unexpected %T", ev.Object)
			}
			e.TrimNode(n)
			nodes = append(nodes, n)
		case watch.Bookmark:
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetAnnotations()[metav1.InitialEventsAnnotationKey] == "true" {
				return nodes, nil
			}
		case watch.Error:
			return nil, fmt.Errorf("streamed node list: %w", apierrors.FromObject(ev.Object))
		default:
			// Modified or Deleted before the end of the list: not a streamed list.
			return nil, fmt.Errorf("streamed node list: %s event before the end of the list", ev.Type)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(nodes) == 0 && time.Since(start) < limit/2 {
		// Not one event, and well before timeoutSeconds: the connection was lost (client-go
		// answers a dropped one with a watch that ends at once), not a server that ignored
		// sendInitialEvents, which would have held the stream open without events until then.
		return nil, errStreamLost
	}
	return nil, errors.New("streamed node list: the stream ended before the end of the list")
}

// errStreamLost is a streamed list that ended before its first event: it got no answer.
var errStreamLost = errors.New("streamed node list: the stream ended before its first event")

// pageNodes reads the nodes matching selector in pages.
func (e *Engine) pageNodes(ctx context.Context, selector string) ([]*corev1.Node, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var nodes []*corev1.Node
	complete := false
	for p := range e.nodePages(ctx, selector) {
		switch {
		case p.err != nil:
			return nil, p.err
		case p.restart:
			nodes = nodes[:0] // the list starts over
			continue
		}
		list := p.list
		if list == nil {
			list = &corev1.NodeList{}
			if err := runtime.DecodeInto(protobufDecoder, p.body, list); err != nil {
				return nil, fmt.Errorf("decoding a page of nodes: %w", err)
			}
		}
		for i := range list.Items {
			n := &list.Items[i]
			e.TrimNode(n)
			nodes = append(nodes, n)
		}
		complete = p.last
	}
	if !complete {
		// The pages stopped before the last one: the caller's context ended.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return nil, errors.New("node list ended before its last page")
	}
	return nodes, nil
}

// nodePage is one page of a node list: the response body when it is protobuf (decoded by the
// receiver), else the decoded list, and whether it is the last page; or an error; or, with
// restart, word that the list starts over.
type nodePage struct {
	body    []byte
	list    *corev1.NodeList
	last    bool
	err     error
	restart bool
}

// protobufDecoder decodes protobuf responses; jsonDecoder the others (it recognizes any encoding).
var (
	protobufDecoder = protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	jsonDecoder     = scheme.Codecs.UniversalDeserializer()
)

// nodePages reads a paginated node list one page ahead of its receiver: the request for the
// next page goes out as soon as a page has arrived, while the receiver decodes that page. A
// page's continue token is read from the protobuf response without decoding the nodes, so at
// 5,000 nodes the API server encodes one page while the orchestrator decodes the previous one,
// instead of each waiting for the other (about a quarter of a cycle's node read, on two cores). A JSON
// response (a client without protobuf, a proxy) is decoded here, one page after the other.
// The channel is closed after the last page or the first error, or early when ctx ends (the
// receiver then has not seen a last page); cancel ctx to stop early.
func (e *Engine) nodePages(ctx context.Context, selector string) <-chan nodePage {
	out := make(chan nodePage) // unbuffered: at most one page read ahead of the one decoded
	send := func(p nodePage) bool {
		select {
		case out <- p:
			return true
		case <-ctx.Done():
			return false
		}
	}
	go func() {
		defer close(out)
		opts := metav1.ListOptions{LabelSelector: selector, Limit: e.nodePageSize}
		for {
			p, cont, err := e.nodePage(ctx, opts)
			if apierrors.IsResourceExpired(err) && opts.Continue != "" {
				// The continue token expired (a very slow cycle): start over in one request.
				opts.Continue, opts.Limit = "", 0
				if !send(nodePage{restart: true}) {
					return
				}
				continue
			}
			if err != nil {
				send(nodePage{err: err})
				return
			}
			p.last = cont == ""
			if !send(p) || p.last {
				return
			}
			opts.Continue = cont
		}
	}()
	return out
}

// nodePage requests one page and returns it with its continue token.
func (e *Engine) nodePage(ctx context.Context, opts metav1.ListOptions) (nodePage, string, error) {
	rc, ok := e.client.CoreV1().RESTClient().(*rest.RESTClient)
	if !ok || rc == nil {
		// A client without a REST client of its own (the fake clientsets of unit tests).
		list, err := e.client.CoreV1().Nodes().List(ctx, opts)
		if err != nil {
			return nodePage{}, "", err
		}
		return nodePage{list: list}, list.Continue, nil
	}
	res := rc.Get().Resource("nodes").VersionedParams(&opts, scheme.ParameterCodec).Do(ctx)
	if err := res.Error(); err != nil { // Error, not Raw: it decodes a Status answer (410 Expired)
		return nodePage{}, "", err
	}
	body, err := res.Raw()
	if err != nil {
		return nodePage{}, "", err
	}
	if cont, ok := protobufListContinue(body); ok {
		return nodePage{body: body}, cont, nil
	}
	list := &corev1.NodeList{}
	if err := runtime.DecodeInto(jsonDecoder, body, list); err != nil {
		return nodePage{}, "", fmt.Errorf("decoding a page of nodes: %w", err)
	}
	return nodePage{list: list}, list.Continue, nil
}

// protobufMagic starts every protobuf-encoded response of the API server, followed by a
// runtime.Unknown whose raw field holds the object.
var protobufMagic = []byte("k8s\x00")

// protobufListContinue reads the continue token of a protobuf-encoded list (ListMeta.continue)
// without decoding its items: runtime.Unknown field 2 (raw) -> the list's field 1 (metadata) ->
// ListMeta field 3 (continue). ok is false when body is not a protobuf list.
func protobufListContinue(body []byte) (cont string, ok bool) {
	if !bytes.HasPrefix(body, protobufMagic) {
		return "", false
	}
	raw, ok := protobufField(body[len(protobufMagic):], 2)
	if !ok {
		return "", false
	}
	meta, ok := protobufField(raw, 1)
	if !ok {
		return "", false
	}
	c, _ := protobufField(meta, 3) // absent on the last page
	return string(c), true
}

// protobufField returns the first length-delimited field numbered num of message b. It reads
// the fields before it, and never the ones after (a list's items follow its metadata).
func protobufField(b []byte, num protowire.Number) ([]byte, bool) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil, false
			}
			return v, true
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return nil, false
		}
		b = b[l:]
	}
	return nil, false
}

// TrimNode drops what neither the planner nor the status command reads from a node, to keep a
// large pool's memory small: managed fields always; and, unless an upgrade.when template (which
// may read any field) is configured, the labels no selector or setting of the configuration
// names, other owners' annotations (on real nodes these two are most of a node's metadata:
// cloud, topology and node-feature-discovery labels, CNI and CSI annotations), images, volumes,
// capacity, addresses, pod CIDRs, the provider ID, conditions other than Ready, and nodeInfo
// other than the kernel version and boot ID. The pool's, the maintenance label's, the kernel
// label's and the status label's keys, the status label key recorded on the node (its
// image-prewarmer.io/status-label annotation: the label a release or a changed key's swap removes),
// this product's annotations, taints, spec.unschedulable, the Ready condition, the kernel and the
// boot ID stay. A node with labels or annotations keeps a (possibly empty) map of them, so a patch
// built from it never takes the node for one without any.
func (e *Engine) TrimNode(n *corev1.Node) {
	n.ManagedFields = nil
	if e.cfg.Upgrade.When != "" {
		return
	}
	recorded := n.Annotations[state.StatusLabel]
	for k := range n.Labels {
		if !e.readLabels[k] && k != recorded {
			delete(n.Labels, k)
		}
	}
	for k := range n.Annotations {
		if !strings.HasPrefix(k, state.Prefix) {
			delete(n.Annotations, k)
		}
	}
	n.Labels, n.Annotations = compact(n.Labels), compact(n.Annotations)
	n.OwnerReferences = nil
	n.Spec.PodCIDR, n.Spec.PodCIDRs, n.Spec.ProviderID, n.Spec.ConfigSource = "", nil, "", nil
	st := &n.Status
	st.Images, st.VolumesInUse, st.VolumesAttached = nil, nil, nil
	st.Capacity, st.Allocatable, st.Addresses = nil, nil, nil
	st.Config, st.Features, st.RuntimeHandlers = nil, nil, nil
	st.DaemonEndpoints = corev1.NodeDaemonEndpoints{}
	st.NodeInfo = corev1.NodeSystemInfo{KernelVersion: st.NodeInfo.KernelVersion, BootID: st.NodeInfo.BootID}
	// Only the Ready condition's status is read.
	var ready []corev1.NodeCondition
	for _, c := range st.Conditions {
		if c.Type == corev1.NodeReady {
			c.Reason, c.Message = "", ""
			ready = append(ready, c)
		}
	}
	st.Conditions = ready
}

// compact returns m in a map of its size: a map does not shrink when keys are deleted from it.
func compact(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// observeWarmer reads the warmer DaemonSet, its ControllerRevisions and its pods. A missing
// DaemonSet is not an error: nodes simply cannot become warm (and the planner says so).
func (e *Engine) observeWarmer(ctx context.Context) (*appsv1.DaemonSet, []*appsv1.ControllerRevision, []*corev1.Pod, error) {
	ns, name := e.cfg.Warmer.Namespace, e.cfg.Warmer.DaemonSetName
	ds, err := e.client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("getting warmer DaemonSet %s/%s: %w", ns, name, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("warmer DaemonSet %s/%s selector: %w", ns, name, err)
	}
	opts := metav1.ListOptions{LabelSelector: sel.String()}
	revList, err := e.client.AppsV1().ControllerRevisions(ns).List(ctx, opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing revisions of DaemonSet %s/%s: %w", ns, name, err)
	}
	podList, err := e.client.CoreV1().Pods(ns).List(ctx, opts)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("listing pods of DaemonSet %s/%s: %w", ns, name, err)
	}
	revisions := make([]*appsv1.ControllerRevision, len(revList.Items))
	for i := range revList.Items {
		revisions[i] = &revList.Items[i]
	}
	pods := make([]*corev1.Pod, len(podList.Items))
	for i := range podList.Items {
		pods[i] = &podList.Items[i]
	}
	return ds, revisions, pods, nil
}

// Cached is what an informer-based observer holds: the objects Observe would list, read from
// caches instead. Revisions and Pods may include objects of other controllers; ObserveFrom keeps
// those the DaemonSet's selector matches, as Observe's label-selected lists do.
type Cached struct {
	// Nodes are the pool nodes and the nodes carrying the status label, each once.
	Nodes []*corev1.Node
	// Maintenance are the nodeMaintenance objects; MaintenanceServed is false when the resource
	// is not served (the source is then empty, with a warning).
	Maintenance       []*unstructured.Unstructured
	MaintenanceServed bool
	// MaintenanceUnknown names the maintenance resource when its objects could not be read
	// (plan.Snapshot.MaintenanceUnknown); Maintenance and MaintenanceServed are then ignored.
	MaintenanceUnknown string
	DaemonSet          *appsv1.DaemonSet
	Revisions          []*appsv1.ControllerRevision
	Pods               []*corev1.Pod
}

// ObserveFrom builds the Observation of one cycle from cached objects, with no API call, at the
// engine clock's now. The objects are read, never modified.
func (e *Engine) ObserveFrom(c Cached) (Observation, error) {
	nodes := slices.Clone(c.Nodes)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	objects, served := c.Maintenance, c.MaintenanceServed
	if c.MaintenanceUnknown != "" {
		objects, served = nil, true // no "not served" warning: whether it is, is what is unknown
	}
	src := e.sources.CollectFrom(nodes, objects, served)
	// WarmerReadAt is left zero: a cache proves nothing about when its DaemonSet was read (a
	// watch broken by an API server restart may hold it for minutes), so the first entry or
	// adoption written re-reads the uninstall mark, once per uninstallCheckInterval across plans.
	obs := Observation{
		Snapshot: plan.Snapshot{Nodes: nodes, Maintenance: src.Maintenance, Now: e.clock.Now(), MaintenanceUnknown: c.MaintenanceUnknown},
		Warnings: src.Warnings,
	}
	ds := c.DaemonSet
	if ds == nil {
		return obs, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return Observation{}, fmt.Errorf("warmer DaemonSet %s/%s selector: %w", ds.Namespace, ds.Name, err)
	}
	obs.Snapshot.DaemonSet = ds
	e.uninstall.seen(ds)
	for _, r := range c.Revisions {
		if r.Namespace == ds.Namespace && sel.Matches(labels.Set(r.Labels)) {
			obs.Snapshot.Revisions = append(obs.Snapshot.Revisions, r)
		}
	}
	for _, p := range c.Pods {
		if p.Namespace == ds.Namespace && sel.Matches(labels.Set(p.Labels)) {
			obs.Snapshot.Pods = append(obs.Snapshot.Pods, p)
		}
	}
	return obs, nil
}
