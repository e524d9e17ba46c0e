package bulkload

import (
	"path/filepath"
	"testing"
)

// A manifest may hold both "d.skv" and "d.skv.part": the temp file of the
// first must not be the final file of the second.
func TestPartPathNeverAFinalName(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, name := range []string{"d.skv", "part-00001.skv", "x"} {
		final := filepath.Join(dir, name)
		other := filepath.Join(dir, name+partSuffix)
		if p := partPath(final); p == other || filepath.Dir(p) != dir || filepath.Base(p)[0] != '.' {
			t.Errorf("partPath(%s) = %s: must be a hidden file in the same directory, not %s", final, p, other)
		}
	}
}
