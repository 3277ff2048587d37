// Command image builds the prewarm-orchestrator container image without a Docker engine: one
// layer on an empty base holding the static binary at /usr/local/bin/prewarm-orchestrator and
// /etc/passwd and /etc/group entries for the nonroot user 65532, written as a tarball that is
// both an OCI image layout (oci-layout, index.json, blobs/) and a `docker save` archive
// (manifest.json), so `docker load`, `podman load`, `crane push` and `skopeo copy oci-archive:`
// all read it.
//
//	go run ./hack/image -binary dist/linux-amd64/prewarm-orchestrator -version v0.1.0 -revision <sha>
package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BinaryPath is where the orchestrator binary lives in the image.
const BinaryPath = "/usr/local/bin/prewarm-orchestrator"

// NonRoot is the user and group the image runs as (the distroless "nonroot" IDs).
const NonRoot = 65532

// Options describe the image to build.
type Options struct {
	// Binary is the path of the static linux/amd64 orchestrator binary.
	Binary string
	// Repository is the image name without tag.
	Repository string
	// Version is the image tag and the org.opencontainers.image.version label.
	Version string
	// Revision is the VCS revision (org.opencontainers.image.revision).
	Revision string
	// Source is the source repository URL (org.opencontainers.image.source).
	Source string
	// Created is the creation time recorded in the config and on every file (reproducible builds).
	Created time.Time
	// Output is the tarball path.
	Output string
}

// Validate checks the options and returns the image reference they name.
func (o Options) Validate() (name.Tag, error) {
	if o.Binary == "" {
		return name.Tag{}, errors.New("-binary is required")
	}
	if o.Output == "" {
		return name.Tag{}, errors.New("-output is required")
	}
	tag, err := name.NewTag(o.Repository+":"+o.Version, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %s:%s: %w", o.Repository, o.Version, err)
	}
	return tag, nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o Options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.Binary, "binary", "", "static linux/amd64 prewarm-orchestrator binary to put in the image")
	fs.StringVar(&o.Repository, "repository", "ghcr.io/image-prewarmer/prewarm-orchestrator", "image name without tag")
	fs.StringVar(&o.Version, "version", "dev", "image tag and version label")
	fs.StringVar(&o.Revision, "revision", "unknown", "VCS revision label")
	fs.StringVar(&o.Source, "source", "https://github.com/image-prewarmer/image-prewarmer", "source repository label")
	fs.StringVar(&o.Output, "output", "", "tarball to write (default dist/prewarm-orchestrator-<version>.tar)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Output == "" {
		o.Output = filepath.Join("dist", "prewarm-orchestrator-"+o.Version+".tar")
	}
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	o.Created = created

	tag, err := o.Validate()
	if err != nil {
		return err
	}
	img, err := Build(o)
	if err != nil {
		return err
	}
	if err := WriteTarball(o.Output, tag, img); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("computing digest of %s: %w", tag, err)
	}
	fmt.Printf("%s %s@%s\n", o.Output, tag, digest)
	return nil
}

// sourceDateEpoch returns $SOURCE_DATE_EPOCH as a time, or the Unix epoch when it is unset, so
// the same binary always gives the same image digest.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing SOURCE_DATE_EPOCH %q: %w", v, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// Build assembles the image: an empty OCI base, one layer (the binary and the nonroot user),
// and a config that runs the binary as 65532:65532 on linux/amd64.
func Build(o Options) (v1.Image, error) {
	binary, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, fmt.Errorf("reading binary %s: %w", o.Binary, err)
	}
	layerTar, err := rootfs(binary, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("creating image layer: %w", err)
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "hack/image", Comment: "prewarm-orchestrator and the nonroot user"},
	})
	if err != nil {
		return nil, fmt.Errorf("adding layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading image config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture = "amd64"
	cfg.OS = "linux"
	cfg.Created = v1.Time{Time: o.Created}
	user := strconv.Itoa(NonRoot) + ":" + strconv.Itoa(NonRoot)
	cfg.Config = v1.Config{
		Entrypoint: []string{BinaryPath},
		User:       user,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "prewarm-orchestrator",
			"org.opencontainers.image.description": "image-prewarmer orchestrator: keeps upgraded nodes tainted until their images are pulled",
			"org.opencontainers.image.source":      o.Source,
			"org.opencontainers.image.version":     o.Version,
			"org.opencontainers.image.revision":    o.Revision,
		},
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("setting image config: %w", err)
	}
	return img, nil
}

// rootfs returns the layer's tar: directories, /etc/passwd, /etc/group, /home/nonroot, /tmp and the
// binary, all owned by root except the nonroot home, with mtime created.
func rootfs(binary []byte, created time.Time) ([]byte, error) {
	passwd := "root:x:0:0:root:/root:/sbin/nologin\n" +
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)
	group := "root:x:0:\n" + fmt.Sprintf("nonroot:x:%d:\n", NonRoot)
	entries := []struct {
		hdr  tar.Header
		body []byte
	}{
		{tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(group)},
		{tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}, []byte(passwd)},
		{tar.Header{Name: "home/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "home/nonroot/", Typeflag: tar.TypeDir, Mode: 0o700, Uid: NonRoot, Gid: NonRoot}, nil},
		{tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777}, nil},
		{tar.Header{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "usr/local/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: "usr/local/bin/", Typeflag: tar.TypeDir, Mode: 0o755}, nil},
		{tar.Header{Name: BinaryPath[1:], Typeflag: tar.TypeReg, Mode: 0o755}, binary},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := e.hdr
		hdr.Size = int64(len(e.body))
		hdr.ModTime = created
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&hdr); err != nil {
			return nil, fmt.Errorf("writing layer entry %s: %w", hdr.Name, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, fmt.Errorf("writing layer entry %s: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("closing layer tar: %w", err)
	}
	return buf.Bytes(), nil
}

// WriteTarball writes img to path as a tar that is an OCI image layout and a docker-save archive
// at once (the format `docker save` writes since Docker 25): blobs/sha256/<digest> for the
// manifest, config and layers; oci-layout; index.json naming the image ref; manifest.json with
// RepoTags for docker load and crane.
func WriteTarball(path string, ref name.Tag, img v1.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating directory of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".image-*.tar")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := writeArchive(tmp, ref, img); err != nil {
		tmp.Close()
		return fmt.Errorf("writing image %s to %s: %w", ref, path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("setting mode of %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("renaming to %s: %w", path, err)
	}
	return nil
}

func writeArchive(w io.Writer, ref name.Tag, img v1.Image) error {
	tw := tar.NewWriter(w)
	write := func(name string, data []byte) error {
		hdr := &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "blobs/sha256/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	if err := write(blob(digest), manifest); err != nil {
		return err
	}
	if err := write(blob(cfgName), cfg); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	layerPaths := make([]string, 0, len(layers))
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if err := write(blob(d), data); err != nil {
			return err
		}
		layerPaths = append(layerPaths, blob(d))
	}

	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	index := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Size:      int64(len(manifest)),
			Digest:    digest,
			Annotations: map[string]string{
				"io.containerd.image.name":          ref.Name(),
				"org.opencontainers.image.ref.name": ref.TagStr(),
			},
		}},
	}
	files := []struct {
		name string
		v    any
	}{
		{"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}},
		{"index.json", index},
		{"manifest.json", tarball.Manifest{{Config: blob(cfgName), RepoTags: []string{ref.Name()}, Layers: layerPaths}}},
	}
	for _, f := range files {
		data, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := write(f.name, data); err != nil {
			return err
		}
	}
	return tw.Close()
}
