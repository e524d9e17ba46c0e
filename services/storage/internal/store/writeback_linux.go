package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteOut starts writing f's dirty pages to the disk and returns
// without waiting for them (sync_file_range with SYNC_FILE_RANGE_WRITE
// over the whole file; clean pages cost nothing).
func startWriteOut(f *os.File) error {
	return unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
