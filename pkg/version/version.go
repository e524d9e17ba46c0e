// Package version holds the build version of slotkv binaries, set at link
// time with -ldflags "-X github.com/slotkv/slotkv/pkg/version.Version=...".
package version

// Version is the slotkv version; "dev" for builds without ldflags.
var Version = "dev"
