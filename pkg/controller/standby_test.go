package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"

	tu "github.com/image-prewarmer/image-prewarmer/pkg/testutil"
)

// A standby runs the informers but never reconciles: the nodes its events name must not pile up
// (a pool whose nodes come and go under new names would grow the set for as long as it stands by).
// Its first reconcile, on taking over, plans the whole pool anyway.
func TestStandbyDoesNotAccumulateNodes(t *testing.T) {
	client := fake.NewClientset()
	c := testController(t, client, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, c.Start(ctx))
	for i := range 20 {
		name := fmt.Sprintf("n%d", i)
		_, err := client.CoreV1().Nodes().Create(ctx, tu.Node(name, tu.WithLabels("pool", "notebooks")), metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}))
	}
	// The handlers ran (each wakes the loop, which a standby never runs) ...
	select {
	case <-c.dirty:
	case <-time.After(5 * time.Second):
		t.Fatal("no node event reached the controller")
	}
	require.Eventually(t, func() bool { n, _ := c.poolNodes.List(labels.Everything()); return len(n) == 0 }, 5*time.Second, 10*time.Millisecond)
	// ... and, whenever the rest of them run, they mark nothing: as this call, their own path.
	c.triggerNode("n0")
	c.mu.Lock()
	defer c.mu.Unlock()
	assert.Empty(t, c.pending, "a whole-pool plan is due: per-node marks add nothing")
}
