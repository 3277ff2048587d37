package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
	"github.com/image-prewarmer/image-prewarmer/pkg/plan"
	"github.com/image-prewarmer/image-prewarmer/pkg/sources"
	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// The likeliest reason a first install shows no node in maintenance is a maintenance source that
// reads nothing: the medik8s CRD not installed (404), RBAC that does not grant its list, a wrong
// nodeNameField. `status` says so above the table and in the machine formats, as `run` logs it,
// rather than show an empty pool in silence, or nothing at all.
func TestStatusSaysWhatTheMaintenanceSourcesCouldNotRead(t *testing.T) {
	cfg := config.Default()
	cfg.Pool.NodeSelector = map[string]string{"pool": "nb"}
	cfg.Instance = "prewarm/nb"
	require.NoError(t, cfg.Validate())
	gvr := sources.GVR(cfg)
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"not served", apierrors.NewNotFound(gvr.GroupResource(), ""),
			"\nMAINTENANCE SOURCE nodeMaintenance: resource nodemaintenances.v1beta1.nodemaintenance.medik8s.io is not served (is its CRD installed?)"},
		{"forbidden", apierrors.NewForbidden(gvr.GroupResource(), "", errors.New("no RBAC policy matched")),
			"\nMAINTENANCE SOURCE nodeMaintenance: listing nodemaintenances.v1beta1.nodemaintenance.medik8s.io: nodemaintenances.nodemaintenance.medik8s.io is forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "NodeMaintenanceList"})
			dyn.PrependReactor("list", gvr.Resource, func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, tc.err
			})
			client := fake.NewClientset(tu.Node("a", tu.WithLabels("pool", "nb")))
			e, err := engine.New(engine.Options{Config: cfg, Client: client, Dynamic: dyn, DryRun: true})
			require.NoError(t, err)

			st, err := statusOf(context.Background(), e, false)
			require.NoError(t, err)
			require.Len(t, st.SourceWarnings, 1)
			assert.Equal(t, plan.SourceNodeMaintenance, st.SourceWarnings[0].Source)
			var buf bytes.Buffer
			require.NoError(t, renderStatus(&buf, st, "table"))
			assert.Contains(t, buf.String(), tc.want)
			assert.Contains(t, buf.String(), "NODE", "the table is shown")
			buf.Reset()
			require.NoError(t, renderStatus(&buf, st, "json"))
			assert.Contains(t, buf.String(), `"sourceWarnings": [`)
			assert.Contains(t, buf.String(), `"source": "nodeMaintenance"`)
		})
	}
}

// Objects skipped for one cause can be many: the table shows the first few and says how many more.
func TestStatusTableCutsManySourceWarnings(t *testing.T) {
	st := plan.Status{Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC), Totals: map[string]int{}}
	for i := range 12 {
		st.SourceWarnings = append(st.SourceWarnings, plan.SourceWarning{
			Source: plan.SourceNodeMaintenance, Object: fmt.Sprintf("nm-%d", i), Message: "skipped: no node name at spec.node\nname",
		})
	}
	var buf bytes.Buffer
	require.NoError(t, renderStatus(&buf, st, "table"))
	out := buf.String()
	assert.Equal(t, maxSourceWarnings+1, strings.Count(out, "MAINTENANCE SOURCE"), out)
	assert.Contains(t, out, "MAINTENANCE SOURCE nodeMaintenance nm-0: skipped: no node name at spec.node")
	assert.NotContains(t, out, "nm-5:")
	assert.Contains(t, out, "MAINTENANCE SOURCE: 7 more warnings (-o json lists every one)")
	assert.NotContains(t, out, "spec.node\nname", "one line each")
}
