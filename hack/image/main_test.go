package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// standIn is a tiny static program built in place of the orchestrator: it prints its arguments.
const standIn = `package main

import (
	"fmt"
	"os"
	"strings"
)

func main() { fmt.Println("stand-in:" + strings.Join(os.Args[1:], ",")) }
`

func TestImageTarball(t *testing.T) {
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("runs the linux/amd64 binary from the image")
	}
	dir := t.TempDir()
	binary := buildStandIn(t, dir)
	out := filepath.Join(dir, "dist", "prewarm-orchestrator-v9.9.9.tar")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	require.NoError(t, run([]string{"-binary", binary, "-version", "v9.9.9", "-revision", "abc123", "-output", out}))

	tag, err := name.NewTag("ghcr.io/image-prewarmer/prewarm-orchestrator:v9.9.9")
	require.NoError(t, err)
	img, err := tarball.ImageFromPath(out, &tag) // the docker-save view (manifest.json), as crane and docker load read it
	require.NoError(t, err)

	cfg, err := img.ConfigFile()
	require.NoError(t, err)
	assert.Equal(t, "amd64", cfg.Architecture)
	assert.Equal(t, "linux", cfg.OS)
	assert.Equal(t, []string{BinaryPath}, cfg.Config.Entrypoint)
	assert.Equal(t, "65532:65532", cfg.Config.User)
	assert.Equal(t, "/", cfg.Config.WorkingDir)
	assert.Equal(t, "v9.9.9", cfg.Config.Labels["org.opencontainers.image.version"])
	assert.Equal(t, "abc123", cfg.Config.Labels["org.opencontainers.image.revision"])
	assert.Equal(t, "https://github.com/image-prewarmer/image-prewarmer", cfg.Config.Labels["org.opencontainers.image.source"])
	assert.Equal(t, time.Unix(1700000000, 0).UTC(), cfg.Created.UTC())

	files := layerFiles(t, img)
	bin, ok := files[BinaryPath]
	require.True(t, ok, "binary at %s; layer has %v", BinaryPath, keys(files))
	assert.Equal(t, int64(0o755), bin.hdr.Mode&0o777, "binary is executable")
	assert.Equal(t, byte(tar.TypeReg), bin.hdr.Typeflag)

	user := strings.Split(cfg.Config.User, ":")
	passwd := string(files["/etc/passwd"].body)
	assert.Contains(t, passwd, "nonroot:x:"+user[0]+":"+user[1]+":")
	assert.Contains(t, string(files["/etc/group"].body), "nonroot:x:"+user[1]+":")
	assert.NotEqual(t, "0", user[0], "the image does not run as root")
	assert.NotEqual(t, "root", user[0])

	// The entrypoint runs the binary: run what the image's Entrypoint names, from the layer.
	root := t.TempDir()
	entry := filepath.Join(root, cfg.Config.Entrypoint[0])
	require.NoError(t, os.MkdirAll(filepath.Dir(entry), 0o755))
	require.NoError(t, os.WriteFile(entry, files[cfg.Config.Entrypoint[0]].body, os.FileMode(bin.hdr.Mode)))
	got, err := exec.Command(entry, "version", "--short").CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Equal(t, "stand-in:version,--short\n", string(got))

	// The OCI-layout view: index.json names the manifest blob, whose config is the same config.
	var index v1.IndexManifest
	require.NoError(t, json.Unmarshal(archiveFile(t, out, "index.json"), &index))
	require.Len(t, index.Manifests, 1)
	desc := index.Manifests[0]
	assert.Equal(t, "v9.9.9", desc.Annotations["org.opencontainers.image.ref.name"])
	assert.Equal(t, tag.Name(), desc.Annotations["io.containerd.image.name"])
	rawManifest := archiveFile(t, out, "blobs/sha256/"+desc.Digest.Hex)
	sum, _, err := v1.SHA256(bytes.NewReader(rawManifest))
	require.NoError(t, err)
	assert.Equal(t, desc.Digest, sum, "manifest blob matches its digest")
	manifest, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	require.NoError(t, err)
	assert.Equal(t, types.OCIManifestSchema1, manifest.MediaType)
	configName, err := img.ConfigName()
	require.NoError(t, err)
	assert.Equal(t, configName, manifest.Config.Digest, "both views share the config")
	require.Len(t, manifest.Layers, 1)
	assert.Equal(t, types.OCILayer, manifest.Layers[0].MediaType)
	assert.NotEmpty(t, archiveFile(t, out, "blobs/sha256/"+manifest.Layers[0].Digest.Hex))
	assert.JSONEq(t, `{"imageLayoutVersion":"1.0.0"}`, string(archiveFile(t, out, "oci-layout")))

	// Same inputs, same bytes.
	again := filepath.Join(dir, "again.tar")
	require.NoError(t, run([]string{"-binary", binary, "-version", "v9.9.9", "-revision", "abc123", "-output", again}))
	first, err := os.ReadFile(out)
	require.NoError(t, err)
	second, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(first, second), "builds are reproducible")
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"ok", Options{Binary: "b", Output: "o", Repository: "ghcr.io/x/y", Version: "v1.2.3"}, ""},
		{"no binary", Options{Output: "o", Repository: "ghcr.io/x/y", Version: "v1"}, "-binary is required"},
		{"bad tag", Options{Binary: "b", Output: "o", Repository: "ghcr.io/x/y", Version: "v1+dirty"}, "image reference ghcr.io/x/y:v1+dirty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.opts.Validate()
			if tc.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestMissingBinary(t *testing.T) {
	err := run([]string{"-binary", filepath.Join(t.TempDir(), "nope"), "-output", filepath.Join(t.TempDir(), "x.tar")})
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
}

func buildStandIn(t *testing.T, dir string) string {
	t.Helper()
	src := filepath.Join(dir, "standin")
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(standIn), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module standin\n\ngo 1.26\n"), 0o644))
	out := filepath.Join(dir, "prewarm-orchestrator")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=", "GOWORK=off")
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "building the stand-in binary: %s", got)
	return out
}

type file struct {
	hdr  tar.Header
	body []byte
}

// layerFiles flattens the image's layers into absolute path -> file.
func layerFiles(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1, "one layer on an empty base")
	files := map[string]file{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		require.NoError(t, err)
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			body, err := io.ReadAll(tr)
			require.NoError(t, err)
			files["/"+strings.TrimSuffix(hdr.Name, "/")] = file{hdr: *hdr, body: body}
		}
		require.NoError(t, rc.Close())
	}
	return files
}

func archiveFile(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		require.NoError(t, err, "looking for %s in %s", name, archive)
		if hdr.Name == name {
			body, err := io.ReadAll(tr)
			require.NoError(t, err)
			return body
		}
	}
}

func keys(m map[string]file) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
