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

	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	require.NoError(t, watchStatus(ctx, &out, io.Discard, e, &statusOptions{output: "yaml", watch: true, interval: 50 * time.Millisecond}))

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
