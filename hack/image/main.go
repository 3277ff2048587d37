// Command image builds the prewarm-orchestrator container image without a Docker engine: one
// layer on an empty base holding the static binary at /usr/local/bin/prewarm-orchestrator and
// /etc/passwd and /etc/group entries for the nonroot user 65532, written as a tarball that is
// both an OCI image layout (oci-layout, index.json, blobs/) and a `docker save` archive
// (manifest.json), so `docker load`, `podman load`, `crane push` (single-platform) and
// `skopeo copy oci-archive:` all read it.
//
// With a binary for each of several platforms it is a multi-platform image: the layout's
// index.json names an image index of one image per platform, tagged <version> (what a registry
// serves to nodes of each architecture; `skopeo copy --all oci-archive:...` pushes it whole, as
// `crane push --index` does from the unpacked directory), and the docker-save manifest.json holds
// each image under the tag <version>-<arch> only, so that no single-platform image is loaded, and
// then pushed, under the multi-platform tag. The warmer pods copy the binary out of this image
// onto every pool node, so the image must hold one for each architecture of the pool.
//
//	go run ./hack/image -binary linux/amd64=dist/linux-amd64/prewarm-orchestrator,linux/arm64=dist/linux-arm64/prewarm-orchestrator \
//	  -version v0.1.0 -revision <sha>
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// Platform is one static orchestrator binary and the platform it was built for.
type Platform struct {
	OS, Arch string
	// Binary is the path of the binary.
	Binary string
}

// ParsePlatforms reads the -binary flag: a comma-separated list of os/arch=path entries, or a
// single path, which is a linux/amd64 binary.
func ParsePlatforms(v string) ([]Platform, error) {
	if v == "" {
		return nil, errors.New("-binary is required")
	}
	if osName, arch, ok := strings.Cut(v, "/"); ok && osName == "linux" && validArch(arch) {
		return nil, fmt.Errorf("-binary %q names a platform: give its binary as %s=path", v, v)
	}
	if !strings.Contains(v, "=") && !strings.Contains(v, ",") {
		return []Platform{{OS: "linux", Arch: "amd64", Binary: v}}, nil
	}
	var out []Platform
	seen := map[string]bool{}
	for _, entry := range strings.Split(v, ",") {
		platform, path, ok := strings.Cut(entry, "=")
		osName, arch, slash := strings.Cut(platform, "/")
		if !ok || !slash || path == "" || osName != "linux" || !validArch(arch) {
			return nil, fmt.Errorf("-binary %q: want os/arch=path entries, comma-separated, with os linux and arch one of %s", entry, strings.Join(archs, ", "))
		}
		if seen[platform] {
			return nil, fmt.Errorf("-binary: platform %s given twice", platform)
		}
		seen[platform] = true
		out = append(out, Platform{OS: osName, Arch: arch, Binary: path})
	}
	return out, nil
}

// machines are the ELF machines of archs' binaries.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390}

// checkArch refuses a binary that is not an ELF executable of p's architecture: its image would
// say one architecture and hold another, and fail on its nodes with an exec format error.
func checkArch(binary []byte, p Platform) error {
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		return fmt.Errorf("binary %s for %s/%s: not an ELF executable: %w", p.Binary, p.OS, p.Arch, err)
	}
	if f.Machine != machines[p.Arch] {
		return fmt.Errorf("binary %s is built for %s, not %s/%s", p.Binary, strings.ToLower(strings.TrimPrefix(f.Machine.String(), "EM_")), p.OS, p.Arch)
	}
	return nil
}

// archs are the architectures Kubernetes nodes run that Go builds static linux binaries for and
// that an OCI platform names without a variant (32-bit arm would need one).
var archs = []string{"amd64", "arm64", "ppc64le", "s390x"}

func validArch(a string) bool { return slices.Contains(archs, a) }

// Options describe the image to build.
type Options struct {
	// Platforms are the binaries to build an image of, one each (several: a multi-platform
	// image, in this order).
	Platforms []Platform
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
	if len(o.Platforms) == 0 {
		return name.Tag{}, errors.New("-binary is required")
	}
	if o.Output == "" {
		return name.Tag{}, errors.New("-output is required")
	}
	tag, err := name.NewTag(o.Repository+":"+o.Version, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %s:%s: %w", o.Repository, o.Version, err)
	}
	if len(o.Platforms) > 1 {
		for _, p := range o.Platforms {
			if _, err := archTag(tag, p); err != nil {
				return name.Tag{}, fmt.Errorf("image reference %s:%s-%s: %w", o.Repository, o.Version, p.Arch, err)
			}
		}
	}
	return tag, nil
}

// archTag is the docker-save tag of a platform's image in a multi-platform tarball.
func archTag(ref name.Tag, p Platform) (name.Tag, error) {
	return name.NewTag(ref.Context().Name()+":"+ref.TagStr()+"-"+p.Arch, name.StrictValidation)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "image: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var o Options
	var binaries string
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&binaries, "binary", "", "static prewarm-orchestrator binaries to put in the image: os/arch=path, comma-separated (a bare path is linux/amd64)")
	fs.StringVar(&o.Repository, "repository", "ghcr.io/image-prewarmer/prewarm-orchestrator", "image name without tag")
	fs.StringVar(&o.Version, "version", "dev", "image tag and version label")
	fs.StringVar(&o.Revision, "revision", "unknown", "VCS revision label")
	fs.StringVar(&o.Source, "source", "https://github.com/image-prewarmer/image-prewarmer", "source repository label")
	fs.StringVar(&o.Output, "output", "", "tarball to write (default dist/prewarm-orchestrator-<version>.tar)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	platforms, err := ParsePlatforms(binaries)
	if err != nil {
		return err
	}
	o.Platforms = platforms
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
	var imgs []v1.Image
	for _, p := range o.Platforms {
		img, err := Build(o, p)
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
	}
	digest, err := WriteTarball(o.Output, tag, o.Platforms, imgs)
	if err != nil {
		return err
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

// Build assembles the image of one platform: an empty OCI base, one layer (the binary and the
// nonroot user), and a config that runs the binary as 65532:65532.
func Build(o Options, p Platform) (v1.Image, error) {
	binary, err := os.ReadFile(p.Binary)
	if err != nil {
		return nil, fmt.Errorf("reading binary %s: %w", p.Binary, err)
	}
	if err := checkArch(binary, p); err != nil {
		return nil, err
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
	cfg.Architecture = p.Arch
	cfg.OS = p.OS
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

// WriteTarball writes the images, one per platform in that order, to path as a tar that is an
// OCI image layout and a docker-save archive at once (the format `docker save` writes since
// Docker 25): blobs/sha256/<digest> for the manifests, configs and layers; oci-layout;
// index.json naming ref (the image, or with several platforms an image index of them);
// manifest.json with RepoTags for docker load and crane. It returns the digest ref names.
func WriteTarball(path string, ref name.Tag, platforms []Platform, imgs []v1.Image) (v1.Hash, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return v1.Hash{}, fmt.Errorf("creating directory of %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".image-*.tar")
	if err != nil {
		return v1.Hash{}, fmt.Errorf("creating %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	digest, err := writeArchive(tmp, ref, platforms, imgs)
	if err != nil {
		tmp.Close()
		return v1.Hash{}, fmt.Errorf("writing image %s to %s: %w", ref, path, err)
	}
	if err := tmp.Close(); err != nil {
		return v1.Hash{}, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return v1.Hash{}, fmt.Errorf("setting mode of %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return v1.Hash{}, fmt.Errorf("renaming to %s: %w", path, err)
	}
	return digest, nil
}

func writeArchive(w io.Writer, ref name.Tag, platforms []Platform, imgs []v1.Image) (v1.Hash, error) {
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
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return v1.Hash{}, err
		}
	}
	// Blobs shared by several images (none today, but a base layer would be) are written once.
	written := map[v1.Hash]bool{}
	writeBlob := func(h v1.Hash, data []byte) error {
		if written[h] {
			return nil
		}
		written[h] = true
		return write(blob(h), data)
	}

	var saves tarball.Manifest
	var descs []v1.Descriptor
	for i, img := range imgs {
		manifest, err := img.RawManifest()
		if err != nil {
			return v1.Hash{}, err
		}
		digest, err := img.Digest()
		if err != nil {
			return v1.Hash{}, err
		}
		cfgName, err := img.ConfigName()
		if err != nil {
			return v1.Hash{}, err
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			return v1.Hash{}, err
		}
		if err := writeBlob(digest, manifest); err != nil {
			return v1.Hash{}, err
		}
		if err := writeBlob(cfgName, cfg); err != nil {
			return v1.Hash{}, err
		}
		layers, err := img.Layers()
		if err != nil {
			return v1.Hash{}, err
		}
		layerPaths := make([]string, 0, len(layers))
		for _, l := range layers {
			d, err := l.Digest()
			if err != nil {
				return v1.Hash{}, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return v1.Hash{}, err
			}
			data, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return v1.Hash{}, err
			}
			if err := writeBlob(d, data); err != nil {
				return v1.Hash{}, err
			}
			layerPaths = append(layerPaths, blob(d))
		}
		mt, err := img.MediaType()
		if err != nil {
			return v1.Hash{}, err
		}
		descs = append(descs, v1.Descriptor{
			MediaType: mt, Size: int64(len(manifest)), Digest: digest,
			Platform: &v1.Platform{OS: platforms[i].OS, Architecture: platforms[i].Arch},
		})
		tags := []string{ref.Name()}
		if len(imgs) > 1 {
			at, err := archTag(ref, platforms[i])
			if err != nil {
				return v1.Hash{}, err
			}
			tags = []string{at.Name()}
		}
		saves = append(saves, tarball.Descriptor{Config: blob(cfgName), RepoTags: tags, Layers: layerPaths})
	}

	// index.json names the one image, or an image index of the platforms' images.
	top := descs[0]
	top.Platform = nil
	if len(imgs) > 1 {
		raw, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: descs})
		if err != nil {
			return v1.Hash{}, err
		}
		digest, size, err := v1.SHA256(bytes.NewReader(raw))
		if err != nil {
			return v1.Hash{}, err
		}
		if err := writeBlob(digest, raw); err != nil {
			return v1.Hash{}, err
		}
		top = v1.Descriptor{MediaType: types.OCIImageIndex, Size: size, Digest: digest}
	}
	top.Annotations = map[string]string{
		"io.containerd.image.name":          ref.Name(),
		"org.opencontainers.image.ref.name": ref.TagStr(),
	}
	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{top}}
	files := []struct {
		name string
		v    any
	}{
		{"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}},
		{"index.json", index},
		{"manifest.json", saves},
	}
	for _, f := range files {
		data, err := json.Marshal(f.v)
		if err != nil {
			return v1.Hash{}, err
		}
		if err := write(f.name, data); err != nil {
			return v1.Hash{}, err
		}
	}
	return top.Digest, tw.Close()
}
