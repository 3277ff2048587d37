package valuesdoc_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/image-prewarmer/image-prewarmer/test/chart/valuesdoc"
)

func TestParse(t *testing.T) {
	values := `
# A file header that is not a description.

# -- The name.
name: ""

# A section comment: this map is descended into.
pool:
  # -- (object) Labels of the pool,
  # on two lines.
  nodeSelector: {}
  # Unrelated remark.

  # -- Budget.
  max: 3
# -- (int or string) Either.
budget: "25%"
# -- A documented map is one row.
resources:
  limits:
    memory: 32Mi
`
	got, err := valuesdoc.Parse([]byte(values))
	require.NoError(t, err)
	assert.Equal(t, []valuesdoc.Value{
		{Key: "name", Type: "string", Default: `""`, Description: "The name."},
		{Key: "pool.nodeSelector", Type: "object", Default: "{}", Description: "Labels of the pool, on two lines."},
		{Key: "pool.max", Type: "int", Default: "3", Description: "Budget."},
		{Key: "budget", Type: "int or string", Default: `"25%"`, Description: "Either."},
		{Key: "resources", Type: "object", Default: `{"limits":{"memory":"32Mi"}}`, Description: "A documented map is one row."},
	}, got)
}

func TestParseRefusesUndocumentedValues(t *testing.T) {
	_, err := valuesdoc.Parse([]byte("# -- ok\na: 1\nb:\n  # a plain comment is not documentation\n  c: true\nd: []\n"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "b.c")
	assert.Contains(t, err.Error(), "d (line 6)")
	assert.NotContains(t, err.Error(), "a (line")
}

func TestUpdate(t *testing.T) {
	readme := "# Chart\n\nintro\n\n" + valuesdoc.BeginMarker + "\nold table\n" + valuesdoc.EndMarker + "\n\nfooter\n"
	out, err := valuesdoc.Update([]byte(readme), []byte("# -- A | pipe.\nx: \"a|b\"\n"))
	require.NoError(t, err)
	assert.Equal(t, "# Chart\n\nintro\n\n"+valuesdoc.BeginMarker+"\n\n"+
		"| Key | Type | Default | Description |\n|-----|------|---------|-------------|\n"+
		"| `x` | string | `\"a\\|b\"` | A \\| pipe. |\n\n"+valuesdoc.EndMarker+"\n\nfooter\n", string(out))

	// Idempotent.
	again, err := valuesdoc.Update(out, []byte("# -- A | pipe.\nx: \"a|b\"\n"))
	require.NoError(t, err)
	assert.Equal(t, string(out), string(again))

	_, err = valuesdoc.Update([]byte("no markers"), []byte("# -- x\nx: 1\n"))
	assert.Error(t, err)
}
