package plan

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
)

// Cuts (Event messages at 1,024 bytes, quoted values at 128) end at a character boundary: a
// message cut inside a multi-byte character is not valid UTF-8.
func TestCutsKeepCharactersWhole(t *testing.T) {
	long := strings.Repeat("é", 600) // 1,200 bytes, two per character
	for n := 1000; n <= 1030; n++ {
		got := truncate(long, n)
		assert.True(t, utf8.ValidString(got), "truncate at %d", n)
		assert.LessOrEqual(t, len(got), n)
		assert.GreaterOrEqual(t, len(got), n-1)
	}
	assert.True(t, utf8.ValidString(clip(long)))
	assert.Equal(t, "abc", truncate("abc", 1024))
}
