package bulkload

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/slotkv/slotkv/pkg/rpcerr"
)

// checkURL validates a manifest or data file URL against the allowed
// schemes and prefixes; field names the request field in errors.
func (m *Manager) checkURL(field, raw string) (*url.URL, error) {
	if raw == "" {
		return nil, rpcerr.InvalidField(field, "required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, rpcerr.InvalidField(field, "%q is not a URL: %v", raw, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return nil, rpcerr.InvalidField(field, "%q has no host", raw)
		}
	case "file":
		if !m.opts.AllowFileURLs {
			return nil, rpcerr.InvalidField(field, "%q: file:// URLs are disabled on this service (--allow-file-urls)", raw)
		}
		if u.Host != "" && u.Host != "localhost" {
			return nil, rpcerr.InvalidField(field, "%q: a file:// URL must be local (file:///path)", raw)
		}
	default:
		return nil, rpcerr.InvalidField(field, "%q: scheme %q is not supported (http, https, or file when enabled)", raw, u.Scheme)
	}
	if u.User != nil {
		return nil, rpcerr.InvalidField(field, "%q: credentials in URLs are not allowed", redact(u))
	}
	if slices.Contains(strings.Split(u.Path, "/"), "..") {
		return nil, rpcerr.InvalidField(field, "%q: \"..\" path segments are not allowed", raw)
	}
	if !m.allowed(raw) {
		if len(m.opts.AllowedPrefixes) == 0 {
			return nil, rpcerr.InvalidField(field, "%q: no URL prefix is allowed on this service (configure --allowed-prefixes)", raw)
		}
		return nil, rpcerr.InvalidField(field, "%q does not start with an allowed prefix (%s)", raw, strings.Join(m.opts.AllowedPrefixes, ", "))
	}
	return u, nil
}

// allowed reports whether raw starts with one of the allowed prefixes at a
// boundary: a prefix ending in a delimiter ("/", ":", "?", "#", "&", "=")
// matches as it is; otherwise the URL must continue with one of "/:?#".
// So "http://127.0.0.1" allows "http://127.0.0.1:8080/x" but not
// "http://127.0.0.1.example.com/", "http://127.0.0.1:" allows any port,
// and "http://h/data" does not allow "http://h/database".
func (m *Manager) allowed(raw string) bool {
	for _, p := range m.opts.AllowedPrefixes {
		if p == "" || !strings.HasPrefix(raw, p) {
			continue
		}
		if len(raw) == len(p) || strings.ContainsRune("/:?#&=", rune(p[len(p)-1])) || strings.ContainsRune("/:?#", rune(raw[len(p)])) {
			return true
		}
	}
	return false
}

func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// fileURL is the URL of data file name next to the manifest.
func fileURL(manifest *url.URL, name string) string {
	return manifest.ResolveReference(&url.URL{Path: "./" + name}).String()
}

var jobIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

func checkJobID(id string) error {
	if !jobIDPattern.MatchString(id) {
		return rpcerr.InvalidField("job_id", "%q: 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// localPath is where file name of job lives, checked to stay inside the
// job directory (names were validated by dataset.ParseManifest already).
func localPath(jobDir, name string) (string, error) {
	if !filepath.IsLocal(name) || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("%q would leave the download directory", name)
	}
	p := filepath.Join(jobDir, name)
	rel, err := filepath.Rel(jobDir, p)
	if err != nil || !filepath.IsLocal(rel) {
		return "", fmt.Errorf("%q would leave the download directory", name)
	}
	return p, nil
}
