package engine

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/state"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// Once a long write phase has read the uninstall mark (state.Uninstalling), a re-read that fails
// (a 5xx, a timeout, throttling) keeps it: entries resumed on it could land after the uninstall's
// last sweep and leave a node tainted with no orchestrator to release it.
func TestFailedReReadDoesNotForgetTheUninstallMark(t *testing.T) {
	client := fake.NewClientset()
	cfg := testConfig(t)
	clk := clocktesting.NewFakePassiveClock(t0)
	e, err := New(Options{Config: cfg, Client: client, Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ds := tu.DaemonSet(cfg.Warmer.Namespace, cfg.Warmer.DaemonSetName)
	ds.Annotations = map[string]string{state.Uninstalling: state.FormatTime(t0)}
	require.NoError(t, client.Tracker().Add(ds))
	ctx := context.Background()

	g := &uninstallGuard{e: e, start: t0}
	clk.SetTime(t0.Add(uninstallCheckInterval))
	require.True(t, g.marked(ctx), "the mark is read")

	client.PrependReactor("get", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServerTimeout(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "get", 1)
	})
	clk.SetTime(t0.Add(2 * uninstallCheckInterval))
	assert.True(t, g.marked(ctx), "a failed re-read does not undo a mark already seen")
}
