package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
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

	requireReproducible(t, []string{"-binary", binary, "-version", "v9.9.9", "-revision", "abc123"}, out)
}

var (
	amd64 = []Platform{{OS: "linux", Arch: "amd64", Binary: "b"}}
	both  = []Platform{{OS: "linux", Arch: "amd64", Binary: "b"}, {OS: "linux", Arch: "arm64", Binary: "c"}}
)

func TestParsePlatforms(t *testing.T) {
	got, err := ParsePlatforms("dist/prewarm-orchestrator")
	require.NoError(t, err)
	assert.Equal(t, []Platform{{OS: "linux", Arch: "amd64", Binary: "dist/prewarm-orchestrator"}}, got, "a bare path is linux/amd64")
	got, err = ParsePlatforms("linux/arm64=a,linux/amd64=b")
	require.NoError(t, err)
	assert.Equal(t, []Platform{{OS: "linux", Arch: "arm64", Binary: "a"}, {OS: "linux", Arch: "amd64", Binary: "b"}}, got, "in the order given")
	for _, bad := range []string{"", "linux/arm64", "linux/arm64=", "darwin/arm64=a", "linux/riscv=a", "arm64=a", "linux/amd64=a,linux/amd64=b", "a,b"} {
		_, err := ParsePlatforms(bad)
		assert.Error(t, err, "%q", bad)
	}
	_, err = ParsePlatforms("linux/amd64=a,linux/amd64=b")
	assert.ErrorContains(t, err, "platform linux/amd64 given twice")
	_, err = ParsePlatforms("linux/mips=a")
	assert.ErrorContains(t, err, `-binary "linux/mips=a": want os/arch=path entries`)
}

// A multi-platform image: the layout's index.json names an image index with one image per
// platform, each holding the binary of its architecture; docker-save tags each image by
// architecture, and the first one by the version too.
func TestMultiPlatformImage(t *testing.T) {
	dir := t.TempDir()
	bins := map[string]string{"amd64": buildStandInFor(t, dir, "amd64"), "arm64": buildStandInFor(t, dir, "arm64")}
	out := filepath.Join(dir, "multi.tar")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	args := []string{"-binary", "linux/amd64=" + bins["amd64"] + ",linux/arm64=" + bins["arm64"], "-version", "v9.9.9"}
	require.NoError(t, run(append(slices.Clone(args), "-output", out)))

	// The OCI layout, read by go-containerregistry's layout package from the unpacked tarball.
	root := filepath.Join(dir, "layout")
	unpack(t, out, root)
	top, err := layout.ImageIndexFromPath(root)
	require.NoError(t, err)
	topManifest, err := top.IndexManifest()
	require.NoError(t, err)
	require.Len(t, topManifest.Manifests, 1)
	desc := topManifest.Manifests[0]
	assert.Equal(t, types.OCIImageIndex, desc.MediaType)
	assert.Equal(t, "v9.9.9", desc.Annotations["org.opencontainers.image.ref.name"])
	assert.Equal(t, "ghcr.io/image-prewarmer/prewarm-orchestrator:v9.9.9", desc.Annotations["io.containerd.image.name"])
	idx, err := top.ImageIndex(desc.Digest)
	require.NoError(t, err)
	idxManifest, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Len(t, idxManifest.Manifests, 2)
	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for i, arch := range []string{"amd64", "arm64"} {
		m := idxManifest.Manifests[i]
		require.NotNil(t, m.Platform)
		assert.Equal(t, v1.Platform{OS: "linux", Architecture: arch}, *m.Platform)
		img, err := idx.Image(m.Digest)
		require.NoError(t, err)
		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, arch, cfg.Architecture)
		assert.Equal(t, "linux", cfg.OS)
		bin := layerFiles(t, img)[BinaryPath].body
		f, err := elf.NewFile(bytes.NewReader(bin))
		require.NoError(t, err)
		assert.Equal(t, machines[arch], f.Machine, "the %s image holds the %s binary", arch, arch)
		if arch == "arm64" {
			runArm64(t, dir, bin)
		}
	}

	skopeoReads(t, dir, out)

	// The docker-save view: each image by its architecture's tag only.
	var saved tarball.Manifest
	require.NoError(t, json.Unmarshal(archiveFile(t, out, "manifest.json"), &saved))
	require.Len(t, saved, 2)
	assert.Equal(t, []string{"ghcr.io/image-prewarmer/prewarm-orchestrator:v9.9.9-amd64"}, saved[0].RepoTags)
	assert.Equal(t, []string{"ghcr.io/image-prewarmer/prewarm-orchestrator:v9.9.9-arm64"}, saved[1].RepoTags)
	for tagName, arch := range map[string]string{"v9.9.9-amd64": "amd64", "v9.9.9-arm64": "arm64"} {
		tag, err := name.NewTag("ghcr.io/image-prewarmer/prewarm-orchestrator:" + tagName)
		require.NoError(t, err)
		img, err := tarball.ImageFromPath(out, &tag)
		require.NoError(t, err, tagName)
		cfg, err := img.ConfigFile()
		require.NoError(t, err)
		assert.Equal(t, arch, cfg.Architecture, tagName)
	}

	requireReproducible(t, args, out)
}

// ciTool looks up a command from Debian's package pkg: CI (.ci/run installs it) fails without it,
// elsewhere the test logs what it checks instead (without) and goes on.
func ciTool(t *testing.T, command, pkg, without string) (string, bool) {
	t.Helper()
	path, err := exec.LookPath(command)
	if err == nil {
		return path, true
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing: .ci/run installs Debian's %s", command, pkg)
	}
	t.Logf("%s is missing (apt-get install %s): %s", command, pkg, without)
	return "", false
}

// requireReproducible builds the image again with args, to another file, and requires the same
// bytes as out.
func requireReproducible(t *testing.T, args []string, out string) {
	t.Helper()
	again := filepath.Join(t.TempDir(), "again.tar")
	require.NoError(t, run(append(slices.Clone(args), "-output", again)))
	first, err := os.ReadFile(out)
	require.NoError(t, err)
	second, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(first, second), "builds are reproducible")
}

// runArm64 runs the arm64 binary with qemu-aarch64 (Debian's qemu-user, which CI installs), or
// skips that part where it is missing.
func runArm64(t *testing.T, dir string, bin []byte) {
	t.Helper()
	qemu, ok := ciTool(t, "qemu-aarch64", "qemu-user", "the arm64 binary is checked by its ELF header only")
	if !ok {
		return
	}
	path := filepath.Join(dir, "arm64-from-image")
	require.NoError(t, os.WriteFile(path, bin, 0o755))
	got, err := exec.Command(qemu, path, "version", "--short").CombinedOutput()
	require.NoError(t, err, "%s", got)
	assert.Equal(t, "stand-in:version,--short\n", string(got))
}

// skopeoReads checks the multi-platform tarball with skopeo (Debian's skopeo, which CI installs),
// the tool that pushes it: each platform resolves to its image, and `copy --all` takes the whole
// index. Skipped where skopeo is missing.
func skopeoReads(t *testing.T, dir, archive string) {
	t.Helper()
	skopeo, ok := ciTool(t, "skopeo", "skopeo", "the tarball is checked with go-containerregistry only")
	if !ok {
		return
	}
	for _, arch := range []string{"amd64", "arm64"} {
		got, err := exec.Command(skopeo, "inspect", "--override-os", "linux", "--override-arch", arch, "oci-archive:"+archive).CombinedOutput()
		require.NoError(t, err, "%s", got)
		var info struct{ Architecture, Os string }
		require.NoError(t, json.Unmarshal(got, &info), "%s", got)
		assert.Equal(t, arch, info.Architecture)
	}
	got, err := exec.Command(skopeo, "copy", "--all", "oci-archive:"+archive, "oci:"+filepath.Join(dir, "copied")+":v9.9.9").CombinedOutput()
	require.NoError(t, err, "%s", got)
	copied, err := layout.ImageIndexFromPath(filepath.Join(dir, "copied"))
	require.NoError(t, err)
	m, err := copied.IndexManifest()
	require.NoError(t, err)
	require.Len(t, m.Manifests, 1)
	assert.Equal(t, types.OCIImageIndex, m.Manifests[0].MediaType, "the index, not one platform's image")
}

// unpack extracts the tarball into dir.
func unpack(t *testing.T, archive, dir string) {
	t.Helper()
	tarEntries(t, archive, func(hdr *tar.Header, body []byte) bool {
		path := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			require.NoError(t, os.MkdirAll(path, 0o755))
			return true
		}
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, body, 0o644))
		return true
	})
}

// tarEntries calls fn with each entry of the tar archive and its content, until fn returns false.
func tarEntries(t *testing.T, archive string, fn func(hdr *tar.Header, body []byte) bool) {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		body, err := io.ReadAll(tr)
		require.NoError(t, err)
		if !fn(hdr, body) {
			return
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"ok", Options{Platforms: amd64, Output: "o", Repository: "ghcr.io/x/y", Version: "v1.2.3"}, ""},
		{"no binary", Options{Output: "o", Repository: "ghcr.io/x/y", Version: "v1"}, "-binary is required"},
		{"bad tag", Options{Platforms: amd64, Output: "o", Repository: "ghcr.io/x/y", Version: "v1+dirty"}, "image reference ghcr.io/x/y:v1+dirty"},
		// The 128-character tag limit, with the architecture suffix of a multi-platform image.
		{"arch tag too long", Options{Platforms: both, Output: "o", Repository: "ghcr.io/x/y", Version: strings.Repeat("v", 125)},
			"image reference ghcr.io/x/y:" + strings.Repeat("v", 125) + "-amd64"},
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

// A binary of another architecture than its platform says is refused, naming both.
func TestBinaryOfAnotherArchitecture(t *testing.T) {
	dir := t.TempDir()
	amd64Bin := buildStandInFor(t, dir, "amd64")
	err := run([]string{"-binary", "linux/arm64=" + amd64Bin, "-output", filepath.Join(dir, "x.tar")})
	assert.ErrorContains(t, err, "binary "+amd64Bin+" is built for x86_64, not linux/arm64")
	// A bare path is linux/amd64: an arm64 binary given so is refused too.
	err = run([]string{"-binary", buildStandInFor(t, dir, "arm64"), "-output", filepath.Join(dir, "y.tar")})
	assert.ErrorContains(t, err, "is built for aarch64, not linux/amd64")
	script := filepath.Join(dir, "script")
	require.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755))
	err = run([]string{"-binary", script, "-output", filepath.Join(dir, "z.tar")})
	assert.ErrorContains(t, err, "not an ELF executable")
	_, statErr := os.Stat(filepath.Join(dir, "x.tar"))
	assert.True(t, errors.Is(statErr, os.ErrNotExist), "no tarball is written")
}

func TestMissingBinary(t *testing.T) {
	err := run([]string{"-binary", filepath.Join(t.TempDir(), "nope"), "-output", filepath.Join(t.TempDir(), "x.tar")})
	require.Error(t, err)
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
}

func buildStandIn(t *testing.T, dir string) string {
	t.Helper()
	return buildStandInFor(t, dir, "amd64")
}

// buildStandInFor builds the stand-in for linux/arch into dir/<arch>/prewarm-orchestrator.
func buildStandInFor(t *testing.T, dir, arch string) string {
	t.Helper()
	src := filepath.Join(dir, "standin")
	require.NoError(t, os.MkdirAll(src, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(src, "main.go"), []byte(standIn), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(src, "go.mod"), []byte("module standin\n\ngo 1.26\n"), 0o644))
	out := filepath.Join(dir, "prewarm-orchestrator")
	if arch != "amd64" {
		out = filepath.Join(dir, arch, "prewarm-orchestrator")
	}
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=", "GOWORK=off")
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
	var found []byte
	tarEntries(t, archive, func(hdr *tar.Header, body []byte) bool {
		if hdr.Name == name {
			found = body
			return false
		}
		return true
	})
	require.NotNil(t, found, "%s in %s", name, archive)
	return found
}

func keys(m map[string]file) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
