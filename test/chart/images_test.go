package chart_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runtimeRefusesImage is the check the kubelet makes of a container's image before it pulls it
// (reference.ParseNormalizedNamed, as k8s.io/kubernetes pkg/util/parsers): a reference it refuses
// leaves the warmer pod in InvalidImageName and the node waiting for its timeout.
func runtimeRefusesImage(ref string) error {
	_, err := reference.ParseNormalizedNamed(ref)
	return err
}

// checkImage renders the chart with images: [ref] and checks that the chart refuses ref exactly
// when the runtime would, naming the value's path.
func checkImage(t *testing.T, ref string) {
	t.Helper()
	_, err := render(t, minimal(t, fmt.Sprintf("images: [%q]", ref)))
	if want := runtimeRefusesImage(ref); want != nil {
		require.Error(t, err, "the runtime refuses %q (%v): the chart must too", ref, want)
		assert.Contains(t, err.Error(), "/images/0")
		return
	}
	require.NoError(t, err, "the runtime accepts %q: the chart must too", ref)
}

func TestImageReferencesMatchTheRuntime(t *testing.T) {
	sha256 := strings.Repeat("0123456789abcdef", 4)
	for _, ref := range []string{
		"ubuntu", "ubuntu:24.04", "library/ubuntu", "docker.io/library/ubuntu:24.04",
		"registry.example.com/notebook/base:2026.11", "registry.example.com:5000/nb/base:1",
		"localhost/base", "localhost:5000/base:v1", "[::1]:5000/base:1", "127.0.0.1:5000/a/b/c:d",
		"Registry.Example.com/nb/base:1", "NB/base", "Nb/base", "my_registry/base",
		"registry.example.com/nb/base@sha256:" + sha256, "base:1@sha256:" + sha256,
		"base@sha384:" + strings.Repeat("ab", 48), "base@sha512:" + strings.Repeat("ab", 64),
		"a__b/c--d/e.f_g:TAG_1.0-x",
		// What users get wrong.
		"", " ubuntu", "ubuntu ", "Registry.example.com/NB/Base:2024.10", "registry.example.com/nb/base:",
		"https://registry.example.com/nb/base:1", "base:1:2", "base@sha256:abc", "base@", "base:v1+build",
		"/nb/base:1", "nb//base", "nb/base/", "base:" + strings.Repeat("x", 129), "base:" + strings.Repeat("x", 128),
		"base:-1", "base:.1", "base@sha256:" + strings.ToUpper(sha256), "base@md5:" + strings.Repeat("a", 32),
		"base@sha256:" + sha256[:63], "reg istry/base", "-registry.com/base", "registry-.com/base",
		"registry.example.com:port/base", "base_/x", "_base", "ba..se", "ba---se", "ba___se",
	} {
		t.Run(fmt.Sprintf("%q", ref), func(t *testing.T) { checkImage(t, ref) })
	}
}

// References built at random (with a fixed seed) from registries, path components, tags and
// digests, valid or nearly so: the chart and the runtime agree on each.
func TestImageReferencesMatchTheRuntimeAtRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 25))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	word := func(alphabet string, n int) string {
		var b strings.Builder
		for range n {
			b.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	hex := func(n int) string { return word("0123456789abcdef", n) }
	component := func() string {
		if rng.IntN(4) == 0 {
			return word("abcdefghijklmnopqrstuvwxyz0123456789._-A", 1+rng.IntN(8))
		}
		return word("abcdefghijklmnopqrstuvwxyz0123456789", 1+rng.IntN(5)) +
			pick("", "", "", ".", "_", "__", "-", "--") + word("abcdefghijklmnopqrstuvwxyz0123456789", rng.IntN(4))
	}
	reference := func() string {
		var s string
		switch rng.IntN(4) {
		case 0:
			s = pick("registry.example.com", "localhost", "localhost:5000", "Registry.Example.com", "reg_istry.com",
				"[::1]:5000", "my-registry:443", "NB", "-bad.com", "10.0.0.1:5000", "a.b-c.d", "x:") + "/"
		case 1:
			s = component() + "." + component() + "/"
		}
		for i := range 1 + rng.IntN(3) {
			if i > 0 {
				s += "/"
			}
			s += component()
		}
		if rng.IntN(2) == 0 {
			s += ":" + word("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-+", 1+rng.IntN(12))
		}
		if rng.IntN(4) == 0 {
			s += "@" + pick("sha256:"+hex(64), "sha256:"+hex(64), "sha256:"+hex(63), "sha512:"+hex(128), "sha384:"+hex(64), "sha1:"+hex(40))
		}
		return s
	}
	const n = 300
	accepted := 0
	for range n {
		ref := reference()
		if runtimeRefusesImage(ref) == nil {
			accepted++
		}
		t.Run(fmt.Sprintf("%q", ref), func(t *testing.T) { checkImage(t, ref) })
	}
	t.Logf("%d of %d references valid", accepted, n)
	require.Greater(t, accepted, n/5)
	require.Less(t, accepted, n*4/5)
}
