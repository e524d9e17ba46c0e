//go:build unix

package store

import (
	"os"
	"syscall"
)

// allocated returns the bytes allocated to a file (st_blocks is in 512-byte
// units on every unix).
func allocated(fi os.FileInfo) (int64, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int64(st.Blocks) * 512, true
}
