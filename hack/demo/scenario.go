package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/image-prewarmer/image-prewarmer/test/e2e/framework"
)

// batches splits nodes, in order, into consecutive groups of at most size nodes.
func batches(nodes []string, size int) [][]string {
	if size < 1 {
		size = 1
	}
	var out [][]string
	for len(nodes) > 0 {
		n := min(size, len(nodes))
		out = append(out, nodes[:n:n])
		nodes = nodes[n:]
	}
	return out
}

// span names a batch: "a..c" for several nodes, "a" for one.
func span(batch []string) string {
	switch len(batch) {
	case 0:
		return ""
	case 1:
		return batch[0]
	}
	return batch[0] + ".." + batch[len(batch)-1]
}

// timeline records when the upgrade pipeline acted on each node.
type timeline struct {
	mu          sync.Mutex
	maintenance map[string]time.Time
	rebooted    map[string]time.Time
}

func newTimeline() *timeline {
	return &timeline{maintenance: map[string]time.Time{}, rebooted: map[string]time.Time{}}
}

func (t *timeline) set(m map[string]time.Time, node string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m[node] = at
}

// Rebooted returns when the node was rebooted onto the new kernel, if it was.
func (t *timeline) Rebooted(node string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.rebooted[node]
	return at, ok
}

// Maintenance returns when the node's NodeMaintenance object was created, if it was.
func (t *timeline) Maintenance(node string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.maintenance[node]
	return at, ok
}

// pipeline plays an OS upgrade pipeline driven by medik8s NodeMaintenance objects: for each batch,
// a NodeMaintenance per node (the maintenance operator cordons and drains it), then one node
// after the other is rebooted onto the new kernel (new boot ID, kernel label updated), uncordoned,
// and its NodeMaintenance deleted. Like a real pipeline it knows nothing of image-prewarmer: it
// does not wait for nodes to be warm before the next batch.
type pipeline struct {
	cluster     *framework.Cluster
	kernel      string
	kernelLabel string
	drain, gap  time.Duration
	timeline    *timeline
	report      func(string)
}

// Run upgrades every batch in turn.
func (p *pipeline) Run(ctx context.Context, batches [][]string) error {
	for i, batch := range batches {
		for _, node := range batch {
			if _, err := p.cluster.CreateNodeMaintenance(ctx, maintenanceName(node), node); err != nil {
				return err
			}
			p.timeline.set(p.timeline.maintenance, node, time.Now())
		}
		p.report(fmt.Sprintf("batch %d/%d: NodeMaintenance objects for %s; the nodes are cordoned and drained",
			i+1, len(batches), span(batch)))
		for _, node := range batch {
			if _, err := p.cluster.Cordon(ctx, node); err != nil {
				return err
			}
		}
		if err := pause(ctx, p.drain); err != nil {
			return err
		}
		for j, node := range batch {
			if j > 0 {
				if err := pause(ctx, p.gap); err != nil {
					return err
				}
			}
			if err := p.upgrade(ctx, node); err != nil {
				return err
			}
		}
	}
	p.report("pipeline done: every pool node is on kernel " + p.kernel + "; waiting for the last releases")
	return nil
}

func (p *pipeline) upgrade(ctx context.Context, node string) error {
	if _, err := p.cluster.Reboot(ctx, node, p.kernel, map[string]string{p.kernelLabel: p.kernel}); err != nil {
		return err
	}
	p.timeline.set(p.timeline.rebooted, node, time.Now())
	// Reported before the pipeline's next writes, so that it comes before the orchestrator's
	// reaction to the reboot.
	p.report(fmt.Sprintf("%s rebooted onto kernel %s (new boot ID); the pipeline uncordons it and deletes its NodeMaintenance", node, p.kernel))
	if _, err := p.cluster.Uncordon(ctx, node); err != nil {
		return err
	}
	return p.cluster.DeleteNodeMaintenance(ctx, maintenanceName(node))
}

func maintenanceName(node string) string { return "os-upgrade-" + node }

// pause waits for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
