//go:build !unix

package store

import "os"

// allocated is unknown off unix; callers use the file length.
func allocated(os.FileInfo) (int64, bool) { return 0, false }
