// Package browser drives slotkv-console in a real Chromium (chromedp)
// against a real local stack of processes: storage nodes, router,
// migrator, downloader and the console. It runs only with
// SLOTKV_BROWSER=1 (`make test-browser`, which installs Debian's chromium
// when it is missing), so `make test` skips it. Screenshots of every page
// are saved under .data/screenshots/ and checked (PNG, expected size, not
// blank).
package browser
