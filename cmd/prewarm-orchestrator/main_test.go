package main

import (
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// In an image without a CA bundle (make image writes the binary alone), the built-in roots stand in
// for the system's: an https Pushgateway with a publicly trusted certificate still verifies.
func TestCARootsWithoutASystemBundle(t *testing.T) {
	t.Setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
	t.Setenv("SSL_CERT_DIR", "/nonexistent")
	pool, err := x509.SystemCertPool()
	require.NoError(t, err)
	// Subjects counts the roots of the pool that stands in for the system's.
	assert.Greater(t, len(pool.Subjects()), 100, "Mozilla's roots")
}
