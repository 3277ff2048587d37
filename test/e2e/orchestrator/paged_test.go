package orchestrator_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// Credentials that may list nodes but not watch them (a hand-written Role): the API server
// refuses the streamed list (403), and the cycle reads the nodes in pages instead, says so once,
// and does its work.
func TestNodeListsWithoutWatchAreReadInPages(t *testing.T) {
	e := newEnv(t)
	e.Warmer()
	names := e.poolInMaintenance("w%d", 2)

	token := e.serviceAccountToken("no-watch", []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "patch"}},
		{APIGroups: []string{framework.NodeMaintenanceGroup}, Resources: []string{framework.NodeMaintenanceResource}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"apps"}, Resources: []string{"daemonsets", "controllerrevisions"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create"}},
	})

	counter := &requestCounter{}
	rc := protobufConfig(rest.AnonymousClientConfig(cluster.RESTConfig))
	rc.BearerToken = token
	rc.QPS, rc.Burst = 1000, 1000
	rc.Wrap(counter.wrap)
	client, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	var log bytes.Buffer
	en := e.engine(func(o *engine.Options) {
		o.Client = client
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})

	// RBAC answers as soon as the binding is in the authorizer's cache: retry the first cycle.
	var res engine.Result
	e.eventually("a cycle under the token", func() bool {
		res, err = en.RunOnce(e.Ctx)
		return err == nil
	})
	assert.Equal(t, len(names), res.Applied[plan.Enter], "the cycle did its work")
	for _, s := range names {
		e.requirePhase(s, state.PhaseTainted, "upgrading")
	}
	assert.Positive(t, counter.answered(http.MethodGet, "/api/v1/nodes", http.StatusForbidden), "the streamed list is refused: %v", counter.all())
	assert.Positive(t, counter.answered(http.MethodGet, "/api/v1/nodes", http.StatusOK), "pages: %v", counter.all())
	assert.Equal(t, 1, bytes.Count(log.Bytes(), []byte("did not stream a node list")), "said once:\n%s", log.String())

	// The engine remembers: the next cycle goes straight to pages.
	counter.reset()
	_, err = en.RunOnce(e.Ctx)
	require.NoError(t, err)
	assert.Zero(t, counter.answered(http.MethodGet, "/api/v1/nodes", http.StatusForbidden), "%v", counter.all())
}
