package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	yamlv3 "go.yaml.in/yaml/v3"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/image-prewarmer/image-prewarmer/pkg/config"
	"github.com/image-prewarmer/image-prewarmer/pkg/engine"
)

// `status -o yaml --watch`, piped, prints one YAML document per refresh: a reader of the stream
// gets each one (without the separator, two refreshes would be one document with duplicate keys).
func TestStatusWatchYAMLBlocksAreSeparateDocuments(t *testing.T) {
	cfg := config.Default()
	cfg.Pool.NodeSelector = map[string]string{"pool": "nb"}
	cfg.Maintenance.NodeMaintenance.Enabled = false
	cfg.Maintenance.Cordoned.Enabled = true
	cfg.Instance = "prewarm/nb"
	require.NoError(t, cfg.Validate())
	e, err := engine.New(engine.Options{Config: cfg, Client: fake.NewClientset(), DryRun: true})
	require.NoError(t, err)

	// Stopped after the second refresh (watchStatus writes each in one piece), not after a fixed
	// time that a loaded machine may spend on one; the timeout is a backstop.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	w := &refreshes{w: &out, after: 2, stop: cancel}
	require.NoError(t, watchStatus(ctx, w, io.Discard, e, &statusOptions{output: "yaml", watch: true, interval: 50 * time.Millisecond}))

	dec := yamlv3.NewDecoder(bytes.NewReader(out.Bytes()))
	docs := 0
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the piped -o yaml --watch stream must be readable as YAML documents:\n%s", out.String())
		docs++
	}
	assert.GreaterOrEqual(t, docs, 2, "one YAML document per refresh")
}

// refreshes passes writes on to w, and calls stop after the given number of them (not counting
// empty ones).
type refreshes struct {
	w     io.Writer
	n     int
	after int
	stop  func()
}

func (r *refreshes) Write(p []byte) (int, error) {
	n, err := r.w.Write(p)
	if len(p) == 0 {
		return n, err
	}
	if r.n++; r.n == r.after {
		r.stop()
	}
	return n, err
}
