package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

const protobufType = "application/vnd.kubernetes.protobuf"

func encodeNodeList(t *testing.T, mediaType string, list *corev1.NodeList) []byte {
	t.Helper()
	info, ok := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType)
	require.True(t, ok, mediaType)
	b, err := runtime.Encode(scheme.Codecs.EncoderForVersion(info.Serializer, corev1.SchemeGroupVersion), list)
	require.NoError(t, err)
	return b
}

// The continue token is read from a protobuf list without decoding it, and only from one.
func TestProtobufListContinue(t *testing.T) {
	items := []corev1.Node{*tu.Node("a"), *tu.Node("b")}
	withToken := encodeNodeList(t, protobufType, &corev1.NodeList{ListMeta: metav1.ListMeta{Continue: "tok-1", ResourceVersion: "42"}, Items: items})
	cont, ok := protobufListContinue(withToken)
	assert.True(t, ok)
	assert.Equal(t, "tok-1", cont)

	last := encodeNodeList(t, protobufType, &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "42"}, Items: items})
	cont, ok = protobufListContinue(last)
	assert.True(t, ok, "the last page")
	assert.Empty(t, cont)

	_, ok = protobufListContinue(encodeNodeList(t, "application/json", &corev1.NodeList{ListMeta: metav1.ListMeta{Continue: "tok-1"}}))
	assert.False(t, ok, "JSON is not read here")
	for i := len(protobufMagic); i < 24 && i < len(withToken); i++ {
		cont, ok := protobufListContinue(withToken[:i])
		assert.False(t, ok && cont == "tok-1", "a body cut at %d bytes", i)
	}
}

// fakeNodesServer serves GET /api/v1/nodes in pages of ?limit, encoded as the client accepts
// (protobuf or JSON), with continue tokens "<selector>|<offset>". expire names continue tokens
// answered 410 Expired once.
type fakeNodesServer struct {
	t      *testing.T
	nodes  map[string][]corev1.Node // by label selector
	mu     sync.Mutex
	expire map[string]bool
	served []string // "selector limit continue -> status"
	// stall, when set, is called with every request's continue token before it is answered.
	stall func(r *http.Request, cont string)
	// stream answers node watches: "" refuses them as an API server without the WatchList
	// feature does (422), "list" streams every node then the bookmark that ends the list (JSON),
	// "cut" streams the first node only and ends the stream, "lost" ends it before any event,
	// "held" sends nothing and holds it open (a proxy that ignores sendInitialEvents).
	stream string
}

// servedFor returns what was served for one selector, in order.
func (s *fakeNodesServer) servedFor(selector string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, line := range s.served {
		if strings.HasPrefix(line, selector+" ") || strings.HasPrefix(line, "watch "+selector+" ") {
			out = append(out, line)
		}
	}
	return out
}

// serveStream answers a node watch (see stream).
func (s *fakeNodesServer) serveStream(w http.ResponseWriter, r *http.Request, sel string) {
	q := r.URL.Query()
	s.mu.Lock()
	s.served = append(s.served, fmt.Sprintf("watch %s %s", sel, s.stream))
	s.mu.Unlock()
	if s.stream == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Invalid","code":422,`+
			`"message":"ListOptions.meta.k8s.io \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"}`)
		return
	}
	assert.Equal(s.t, "true", q.Get("sendInitialEvents"))
	assert.Equal(s.t, "NotOlderThan", q.Get("resourceVersionMatch"))
	assert.Equal(s.t, "true", q.Get("allowWatchBookmarks"))
	w.Header().Set("Content-Type", "application/json")
	switch s.stream {
	case "lost":
		return
	case "held":
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	enc := json.NewEncoder(w)
	for i, n := range s.nodes[sel] {
		if s.stream == "cut" && i > 0 {
			return
		}
		n.APIVersion, n.Kind = "v1", "Node"
		require.NoError(s.t, enc.Encode(map[string]any{"type": "ADDED", "object": n}))
	}
	end := corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: metav1.ObjectMeta{
		ResourceVersion: "7", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"}}}
	require.NoError(s.t, enc.Encode(map[string]any{"type": "BOOKMARK", "object": end}))
	w.(http.Flusher).Flush()
	<-r.Context().Done() // a watch stays open after its bookmark; the client closes it
}

func (s *fakeNodesServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/nodes" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	sel, cont := q.Get("labelSelector"), q.Get("continue")
	if q.Get("watch") == "true" {
		s.serveStream(w, r, sel)
		return
	}
	if s.stall != nil {
		s.stall(r, cont)
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	s.mu.Lock()
	expired := s.expire[cont]
	delete(s.expire, cont)
	s.served = append(s.served, fmt.Sprintf("%s %d %q", sel, limit, cont))
	s.mu.Unlock()
	if expired {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGone)
		_, _ = io.WriteString(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"continue token expired"}`)
		return
	}
	all := s.nodes[sel]
	from := 0
	if cont != "" {
		of, off, _ := strings.Cut(cont, "|")
		if of != sel {
			http.Error(w, "continue token of another list", http.StatusBadRequest)
			return
		}
		from, _ = strconv.Atoi(off)
	}
	to := len(all)
	if limit > 0 && from+limit < to {
		to = from + limit
	}
	list := &corev1.NodeList{ListMeta: metav1.ListMeta{ResourceVersion: "7"}, Items: all[from:to]}
	if to < len(all) {
		list.Continue = fmt.Sprintf("%s|%d", sel, to)
	}
	mediaType := "application/json"
	if strings.Contains(r.Header.Get("Accept"), protobufType) {
		mediaType = protobufType
	}
	w.Header().Set("Content-Type", mediaType)
	_, _ = w.Write(encodeNodeList(s.t, mediaType, list))
}

// serve starts srv on 127.0.0.1 and returns an engine reading nodes from it in pages of 2.
func serve(t *testing.T, srv http.Handler, mediaType string, opts ...func(*Options)) *Engine {
	t.Helper()
	hs := httptest.NewUnstartedServer(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	hs.Listener = l
	hs.Start()
	t.Cleanup(hs.Close)
	client, err := kubernetes.NewForConfig(&rest.Config{Host: hs.URL, ContentConfig: rest.ContentConfig{
		ContentType: mediaType, AcceptContentTypes: mediaType,
	}})
	require.NoError(t, err)
	o := Options{Config: testConfig(t), Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), NodePageSize: 2}
	for _, f := range opts {
		f(&o)
	}
	e, err := New(o)
	require.NoError(t, err)
	return e
}

func namedNodes(prefix string, n int, labels ...string) []corev1.Node {
	out := make([]corev1.Node, n)
	for i := range out {
		out[i] = *tu.Node(fmt.Sprintf("%s%03d", prefix, i), tu.WithLabels(labels...))
		out[i].ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	}
	return out
}

// Paginated node lists read through a REST client, in protobuf (pages read one ahead) and in
// JSON: every node once, trimmed; an expired continue token starts that list over and keeps
// the other list's nodes.
func TestListNodePagesFromAServer(t *testing.T) {
	for _, mediaType := range []string{protobufType, "application/json"} {
		t.Run(mediaType, func(t *testing.T) {
			pool := namedNodes("p", 7, "pool", "notebooks")
			labelled := append(namedNodes("l", 4, "os-upgrade/status", "upgrading"), pool[0])
			srv := &fakeNodesServer{t: t, nodes: map[string][]corev1.Node{
				"pool=notebooks": pool, "os-upgrade/status": labelled,
			}, expire: map[string]bool{"os-upgrade/status|2": true}}
			e := serve(t, srv, mediaType)

			assert.Equal(t, []string{"l000", "l001", "l002", "l003", "p000", "p001", "p002", "p003", "p004", "p005", "p006"}, listedNames(t, e))
			// The server refused to stream (422): one watch per list at most (they run at once), then pages.
			assert.LessOrEqual(t, len(onlyWatches(srv.served)), 2, "%q", srv.served)
			assert.Equal(t, []string{
				`pool=notebooks 2 ""`, `pool=notebooks 2 "pool=notebooks|2"`, `pool=notebooks 2 "pool=notebooks|4"`, `pool=notebooks 2 "pool=notebooks|6"`,
			}, withoutWatches(srv.servedFor("pool=notebooks")))
			assert.Equal(t, []string{
				`os-upgrade/status 2 ""`, `os-upgrade/status 2 "os-upgrade/status|2"`, `os-upgrade/status 0 ""`,
			}, withoutWatches(srv.servedFor("os-upgrade/status")))
			assert.True(t, e.pagedNodeLists.Load())

			// The next read goes straight to pages.
			srv.served = nil
			listedNames(t, e)
			assert.Empty(t, onlyWatches(srv.served))
		})
	}
}

// listedNames lists the nodes through e and returns their names, each node checked trimmed.
func listedNames(t *testing.T, e *Engine) []string {
	t.Helper()
	nodes, err := e.listNodes(context.Background())
	require.NoError(t, err)
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
		assert.Nil(t, n.ManagedFields, "trimmed")
	}
	return out
}

func withoutWatches(lines []string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return strings.HasPrefix(l, "watch ") })
}

func onlyWatches(lines []string) []string {
	return slices.DeleteFunc(slices.Clone(lines), func(l string) bool { return !strings.HasPrefix(l, "watch ") })
}

// Where the API server streams lists, each node list is one watch that ends at the bookmark
// marking the end of the list; a stream that ends before it is read again in pages, and a
// refused stream makes the engine read in pages from then on.
func TestStreamedNodeLists(t *testing.T) {
	pool := namedNodes("p", 7, "pool", "notebooks")
	labelled := append(namedNodes("l", 4, "os-upgrade/status", "upgrading"), pool[0])
	nodes := map[string][]corev1.Node{"pool=notebooks": pool, "os-upgrade/status": labelled}
	all := []string{"l000", "l001", "l002", "l003", "p000", "p001", "p002", "p003", "p004", "p005", "p006"}
	names := listedNames

	srv := &fakeNodesServer{t: t, nodes: nodes, stream: "list"}
	e := serve(t, srv, protobufType)
	for range 2 {
		srv.served = nil
		assert.Equal(t, all, names(t, e))
		assert.ElementsMatch(t, []string{"watch pool=notebooks list", "watch os-upgrade/status list"}, srv.served, "one request per list, no pages")
	}
	assert.False(t, e.pagedNodeLists.Load())

	// A stream that ends before the end of the list is not a list: read in pages.
	srv = &fakeNodesServer{t: t, nodes: nodes, stream: "cut"}
	e = serve(t, srv, protobufType)
	assert.Equal(t, all, names(t, e))
	assert.Equal(t, []string{"watch pool=notebooks cut", `pool=notebooks 2 ""`, `pool=notebooks 2 "pool=notebooks|2"`,
		`pool=notebooks 2 "pool=notebooks|4"`, `pool=notebooks 2 "pool=notebooks|6"`}, srv.servedFor("pool=notebooks"))

	// Paged from the start.
	srv = &fakeNodesServer{t: t, nodes: nodes, stream: "list"}
	e = serve(t, srv, protobufType, func(o *Options) { o.PagedNodeLists = true })
	assert.Equal(t, all, names(t, e))
	assert.Empty(t, onlyWatches(srv.served))
}

// A node list cut short by the end of its context is an error, never a shorter list: a cycle
// stopped by SIGTERM while it reads must not plan, or clean up, with part of the pool.
func TestListNodesCancelledMidway(t *testing.T) {
	for range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		srv := &fakeNodesServer{t: t, nodes: map[string][]corev1.Node{"pool=notebooks": namedNodes("p", 7, "pool", "notebooks")}}
		srv.stall = func(r *http.Request, cont string) {
			if cont != "" {
				cancel() // after the first page, while the second is being read
				<-r.Context().Done()
			}
		}
		e := serve(t, srv, protobufType)
		nodes, err := e.listNodes(ctx)
		require.ErrorIs(t, err, context.Canceled, "got %d nodes", len(nodes))
	}
}

// TrimNode keeps what the planner, the patches and the status command read, and drops the rest;
// with an upgrade.when template, which may read any field, it drops only managed fields.
func TestTrimNode(t *testing.T) {
	full := func() *corev1.Node {
		n := tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading",
			"kubernetes.io/hostname", "a", "feature.node.kubernetes.io/cpu-cpuid.AVX512F", "true"),
			tu.WithTaint("os-upgrade", "true", corev1.TaintEffectNoSchedule), tu.Cordoned(),
			tu.WithKernel("6.8.0"), tu.WithBootID("boot-1"))
		n.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
		n.Annotations = map[string]string{
			state.Phase: state.PhaseTainted, state.TaintedAt: "2026-11-25T12:00:00Z",
			"csi.volume.kubernetes.io/nodeid": `{"ebs.csi.aws.com":"i-0123456789abcdef0"}`,
		}
		n.Spec.ProviderID, n.Spec.PodCIDR, n.Spec.PodCIDRs = "aws:///eu-west-1a/i-0123", "10.0.0.0/24", []string{"10.0.0.0/24"}
		n.Status.NodeInfo.OSImage, n.Status.NodeInfo.MachineID = "Ubuntu 24.04", "m-1"
		n.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.example.com/base:1"}, SizeBytes: 1 << 30}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}}
		n.Status.Conditions = []corev1.NodeCondition{
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse},
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
		}
		return n
	}
	e := testEngine(t, fake.NewClientset(), false)
	n := full()
	e.TrimNode(n)
	assert.Nil(t, n.ManagedFields)
	assert.Equal(t, map[string]string{"pool": "notebooks", "os-upgrade/status": "upgrading"}, n.Labels,
		"the labels the pool selector and the status label read")
	assert.Equal(t, map[string]string{state.Phase: state.PhaseTainted, state.TaintedAt: "2026-11-25T12:00:00Z"}, n.Annotations)
	assert.Equal(t, full().Spec.Taints, n.Spec.Taints)
	assert.True(t, n.Spec.Unschedulable)
	assert.Empty(t, n.Spec.ProviderID)
	assert.Nil(t, n.Spec.PodCIDRs)
	assert.Equal(t, corev1.NodeSystemInfo{KernelVersion: "6.8.0", BootID: "boot-1"}, n.Status.NodeInfo)
	assert.Nil(t, n.Status.Images)
	assert.Nil(t, n.Status.Addresses)
	require.Len(t, n.Status.Conditions, 1)
	assert.Equal(t, corev1.NodeReady, n.Status.Conditions[0].Type)
	assert.True(t, state.NodeReady(n))

	// Only other owners' annotations and labels: the maps stay, empty, so that a JSON patch adds
	// keys to them instead of creating them (which would replace the node's).
	n = full()
	n.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	n.Labels = map[string]string{"kubernetes.io/hostname": "a"}
	e.TrimNode(n)
	assert.NotNil(t, n.Annotations)
	assert.Empty(t, n.Annotations)
	assert.NotNil(t, n.Labels)
	assert.Empty(t, n.Labels)

	// The nodeLabel source's and the kernel label's keys are read too.
	cfg := testConfig(t)
	cfg.Maintenance.NodeLabel.Enabled, cfg.Maintenance.NodeLabel.Selector = true, "example.com/maintenance in (planned,now)"
	cfg.Upgrade.KernelVersionLabel = "feature.node.kubernetes.io/kernel-version.full"
	require.NoError(t, cfg.Validate())
	withSources, err := New(Options{Config: cfg, Client: fake.NewClientset(), Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	n = full()
	n.Labels["example.com/maintenance"] = "now"
	n.Labels["feature.node.kubernetes.io/kernel-version.full"] = "6.8.0"
	withSources.TrimNode(n)
	assert.Equal(t, map[string]string{
		"pool": "notebooks", "os-upgrade/status": "upgrading", "example.com/maintenance": "now",
		"feature.node.kubernetes.io/kernel-version.full": "6.8.0",
	}, n.Labels)

	// A node managed under another status label key (the configured one changed) keeps the
	// label under the key recorded on it: the planner swaps it for the configured key, or
	// removes it at release, and could not if it were trimmed away.
	n = full()
	n.Labels["prewarm/status"] = "warming"
	delete(n.Labels, "os-upgrade/status")
	n.Annotations[state.StatusLabel] = "prewarm/status"
	e.TrimNode(n)
	assert.Equal(t, map[string]string{"pool": "notebooks", "prewarm/status": "warming"}, n.Labels)
	assert.Equal(t, "prewarm/status", n.Annotations[state.StatusLabel])
	// Without the record, that label is just another owner's.
	n = full()
	n.Labels["prewarm/status"] = "warming"
	e.TrimNode(n)
	assert.Equal(t, map[string]string{"pool": "notebooks", "os-upgrade/status": "upgrading"}, n.Labels)

	cfg = testConfig(t)
	cfg.Upgrade.When = `{{ hasPrefix "Ubuntu" .Node.Status.NodeInfo.OSImage }}`
	require.NoError(t, cfg.Validate())
	withTemplate, err := New(Options{Config: cfg, Client: fake.NewClientset(), Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	n = full()
	withTemplate.TrimNode(n)
	want := full()
	want.ManagedFields = nil
	assert.Equal(t, want, n, "a template may read any field")
}

// A node in both lists (pool, status label) is kept at the later of its two versions: the lists
// are read one after the other, and the node may change in between.
func TestListNodesKeepsTheLaterCopy(t *testing.T) {
	for _, older := range []string{"pool=notebooks", "os-upgrade/status"} {
		client := fake.NewClientset()
		client.PrependReactor("list", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
			rv := "7"
			if a.(k8stesting.ListAction).GetListRestrictions().Labels.String() == older {
				rv = "3"
			}
			n := tu.Node("a", tu.WithLabels("pool", "notebooks", "os-upgrade/status", "upgrading"))
			n.ResourceVersion = rv
			return true, &corev1.NodeList{Items: []corev1.Node{*n}}, nil
		})
		nodes, err := testEngine(t, client, false).listNodes(context.Background())
		require.NoError(t, err)
		require.Len(t, nodes, 1)
		assert.Equal(t, "7", nodes[0].ResourceVersion, "older copy from the %s list", older)
	}
}

// A stream that ends before its first event got no answer (a connection lost, an API server
// restarting): that read is paged, without the log line, and the next one streams again.
func TestLostStreamIsNotARefusal(t *testing.T) {
	srv := &fakeNodesServer{t: t, nodes: map[string][]corev1.Node{"pool=notebooks": namedNodes("p", 3, "pool", "notebooks")}, stream: "lost"}
	log := &tu.LogBuffer{}
	e := serve(t, srv, protobufType, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(log, nil)) })
	nodes, err := e.readNodes(context.Background(), "pool=notebooks")
	require.NoError(t, err)
	assert.Len(t, nodes, 3, "read in pages")
	assert.False(t, e.pagedNodeLists.Load(), "streamed lists stay on")
	assert.NotContains(t, log.String(), "did not stream")

	srv.mu.Lock()
	srv.stream, srv.served = "list", nil
	srv.mu.Unlock()
	nodes, err = e.readNodes(context.Background(), "pool=notebooks")
	require.NoError(t, err)
	assert.Len(t, nodes, 3)
	assert.Equal(t, []string{"watch pool=notebooks list"}, srv.servedFor("pool=notebooks"), "streamed again")
}

// A stream held open without a single event until the client's timeout is a server that does not
// stream lists, however short client.timeout is: the engine reads in pages from then on.
func TestHeldStreamIsARefusal(t *testing.T) {
	srv := &fakeNodesServer{t: t, nodes: map[string][]corev1.Node{"pool=notebooks": namedNodes("p", 3, "pool", "notebooks")}, stream: "held"}
	log := &tu.LogBuffer{}
	e := serve(t, srv, protobufType, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(log, nil))
		o.Client.CoreV1().RESTClient().(*rest.RESTClient).Client.Timeout = time.Second
	})
	nodes, err := e.readNodes(context.Background(), "pool=notebooks")
	require.NoError(t, err)
	assert.Len(t, nodes, 3, "read in pages")
	assert.True(t, e.pagedNodeLists.Load(), "paged from then on")
	assert.Contains(t, log.String(), "did not stream")
}

// An API server that cannot be reached does not refuse streamed lists: the read fails (its pages
// too), without the log line that says the server does not stream, and the next read streams.
func TestUnreachableServerDoesNotRefuseStreams(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	host := "http://" + l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there now: connection refused
	client, err := kubernetes.NewForConfig(&rest.Config{Host: host})
	require.NoError(t, err)
	log := &tu.LogBuffer{}
	e, err := New(Options{Config: testConfig(t), Client: client, Clock: clocktesting.NewFakePassiveClock(t0),
		Logger: slog.New(slog.NewTextHandler(log, nil))})
	require.NoError(t, err)

	_, err = e.readNodes(context.Background(), "pool=notebooks")
	require.ErrorContains(t, err, "connection refused")
	assert.False(t, e.pagedNodeLists.Load(), "streamed lists stay on")
	assert.NotContains(t, log.String(), "did not stream")
}
