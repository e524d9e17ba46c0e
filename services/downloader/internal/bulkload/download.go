package bulkload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-retryablehttp"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// permanentError is a download failure that retrying cannot fix (404, size
// or checksum mismatch, retries exhausted by the HTTP client).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(format string, args ...any) error {
	return &permanentError{err: fmt.Errorf(format, args...)}
}

var (
	errRedirectRefused = errors.New("redirect refused")
	errStalled         = errors.New("download stalled")
)

// attemptKey carries the counter of HTTP requests of one file download.
type attemptKey struct{}

// newHTTPClient builds the retrying HTTP client of the downloads: bounded
// exponential backoff on connection errors, 429 and 5xx; redirects only to
// allowed URLs.
func (m *Manager) newHTTPClient() *retryablehttp.Client {
	tr := cleanhttp.DefaultPooledTransport()
	tr.ResponseHeaderTimeout = m.opts.HTTPTimeout
	hc := &http.Client{
		Transport: otelhttp.NewTransport(tr,
			otelhttp.WithTracerProvider(m.tp),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }),
		),
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return fmt.Errorf("%w: stopped after 10 redirects", errRedirectRefused)
			}
			if _, err := m.checkURL("redirect", req.URL.String()); err != nil {
				return fmt.Errorf("%w: %v", errRedirectRefused, err)
			}
			return nil
		},
	}
	return &retryablehttp.Client{
		HTTPClient:   hc,
		RetryWaitMin: m.opts.HTTPRetryWaitMin,
		RetryWaitMax: m.opts.HTTPRetryWaitMax,
		RetryMax:     m.opts.HTTPRetryMax,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if err != nil && errors.Is(err, errRedirectRefused) {
				return false, err
			}
			return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		},
		Backoff:      retryablehttp.DefaultBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, req *http.Request, attempt int) {
			if f, ok := req.Context().Value(attemptKey{}).(func(int)); ok {
				f(attempt)
			}
		},
	}
}

// get fetches u with retries. Errors are permanent: the client has retried
// what could be retried.
func (m *Manager) get(ctx context.Context, u string, header http.Header) (*http.Response, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, permanent("GET %s: %v", u, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := m.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		return nil, permanent("GET %s: %v (after %d retries)", u, err, m.opts.HTTPRetryMax)
	}
	return resp, nil
}

// openManifest opens the manifest at u (http(s) or file).
func (m *Manager) openManifest(ctx context.Context, u *url.URL) (io.ReadCloser, error) {
	if u.Scheme == "file" {
		return os.Open(filepath.FromSlash(u.Path))
	}
	// The whole manifest must arrive within the header timeout plus the
	// stall timeout; it is small.
	ctx, cancel := context.WithTimeout(ctx, m.opts.HTTPTimeout+m.opts.HTTPStallTimeout)
	resp, err := m.get(ctx, u.String(), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("GET: HTTP %s", resp.Status)
	}
	if resp.ContentLength > m.opts.MaxManifestBytes {
		cancel()
		resp.Body.Close()
		return nil, fmt.Errorf("manifest is %d bytes, above the limit of %d (--max-manifest-bytes)", resp.ContentLength, m.opts.MaxManifestBytes)
	}
	return cancelBody{resp.Body, cancel}, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// download fetches file i of the job into <job dir>/<name>.part, resuming a
// part file left by an earlier attempt with a Range request, verifies size
// and sha256 while streaming, and renames it to <name> when whole.
func (j *job) download(ctx context.Context, i int) (err error) {
	m := j.m
	j.mu.Lock()
	f := *j.rec.Files[i]
	manifestURL := j.rec.ManifestURL
	j.mu.Unlock()

	fileCtx := ctx
	ctx, span := m.tracer.Start(ctx, "download", trace.WithAttributes(
		attribute.String("file", f.Name), attribute.Int64("size", f.Size)))
	defer func() {
		if err != nil && ctx.Err() == nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()

	mu, _ := url.Parse(manifestURL)
	u := fileURL(mu, f.Name)
	if _, err := m.checkURL("manifest_url", u); err != nil {
		return fileErr(f.Name, "data file URL refused: %v", err)
	}
	final, err := localPath(j.dir(), f.Name)
	if err != nil {
		return fileErr(f.Name, "%v", err)
	}
	part := partPath(final)
	if err := os.MkdirAll(j.dir(), 0o755); err != nil {
		return fileErr(f.Name, "create download directory: %v", err)
	}

	j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.State = StateDownloading })

	// Resume: hash what an earlier attempt left.
	h := sha256.New()
	var off int64
	if st, serr := os.Stat(part); serr == nil {
		if st.Size() > f.Size {
			_ = os.Remove(part)
		} else if st.Size() > 0 {
			_, hspan := m.tracer.Start(ctx, "rehash part", trace.WithAttributes(attribute.Int64("bytes", st.Size())))
			off, err = hashFile(part, h)
			hspan.End()
			if err != nil {
				return fileErr(f.Name, "re-reading %s: %v", part, err)
			}
			span.AddEvent("resume", trace.WithAttributes(attribute.Int64("offset", off)))
		}
	}
	out, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fileErr(f.Name, "%v", err)
	}
	defer func() {
		if out != nil {
			out.Close()
		}
	}()
	if err := out.Truncate(off); err != nil {
		return fileErr(f.Name, "%v", err)
	}
	if _, err := out.Seek(off, io.SeekStart); err != nil {
		return fileErr(f.Name, "%v", err)
	}
	j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Downloaded = off })

	failed := 0 // consecutive sessions without progress
	for off < f.Size {
		before := off
		var done bool
		done, err = j.session(ctx, i, u, f, out, h, &off)
		if err == nil && done && off < f.Size {
			// The body ended cleanly but short (no Content-Length and a
			// closed connection): resume with Range like any cut; a file
			// that really is shorter answers the Range request with 416.
			err = fmt.Errorf("body ended at byte %d of %d: %w", off, f.Size, io.ErrUnexpectedEOF)
		}
		if err == nil && done {
			break
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			if strings.Contains(pe.Error(), "size mismatch") {
				out.Close()
				out = nil
				_ = os.Remove(part)
			}
			return &fileError{name: f.Name, err: pe}
		}
		if off > before {
			failed = 0
		} else {
			failed++
		}
		if failed > m.opts.HTTPRetryMax {
			return fileErr(f.Name, "download %s: %v (gave up after %d attempts without progress)", u, err, failed)
		}
		delay := retryablehttp.DefaultBackoff(m.opts.HTTPRetryWaitMin, m.opts.HTTPRetryWaitMax, failed, nil)
		m.log.WarnContext(ctx, "download interrupted; resuming with a range request", "job_id", j.id(), "file", f.Name,
			"offset", off, "size", f.Size, "retry_in", delay, "err", err)
		span.AddEvent("interrupted", trace.WithAttributes(attribute.Int64("offset", off), attribute.String("error", err.Error())))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	if off != f.Size {
		out.Close()
		out = nil
		_ = os.Remove(part)
		return fileErr(f.Name, "size mismatch: manifest %d bytes, %s sent %d", f.Size, u, off)
	}
	// Every byte is in: the download span ends and the check against the
	// manifest (size, then the sha256 hashed while streaming), the fsync
	// and the rename get a "verify" span of their own next to it. The
	// deferred end above ends whichever span is current.
	span.End()
	_, span = m.tracer.Start(fileCtx, "verify", trace.WithAttributes(
		attribute.String("file", f.Name), attribute.Int64("size", f.Size), attribute.String("sha256", f.SHA256)))
	if err := out.Sync(); err != nil {
		return fileErr(f.Name, "%v", err)
	}
	if err := out.Close(); err != nil {
		out = nil
		return fileErr(f.Name, "%v", err)
	}
	out = nil
	got := hex.EncodeToString(h.Sum(nil))
	if got != f.SHA256 {
		_ = os.Remove(part) // a retry starts over
		j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Downloaded = 0 })
		return fileErr(f.Name, "sha256 mismatch: manifest %s, got %s", short(f.SHA256), short(got))
	}
	if err := os.Rename(part, final); err != nil {
		return fileErr(f.Name, "%v", err)
	}
	syncDir(j.dir())
	j.setFile(i, func(fr *fileRecord, rt *fileRT) {
		fr.Verified, fr.State, fr.Downloaded = true, StateDownloaded, fr.Size
	})
	j.save()
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// session is one request for the rest of the file from *off. done reports
// that the response ended cleanly (EOF).
func (j *job) session(ctx context.Context, i int, u string, f fileRecord, out *os.File, h hash.Hash, off *int64) (done bool, err error) {
	m := j.m
	if strings.HasPrefix(u, "file:") {
		j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Attempts++ })
		pu, _ := url.Parse(u)
		in, err := os.Open(filepath.FromSlash(pu.Path))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return false, permanent("not found: %s", u)
			}
			return false, err
		}
		defer in.Close()
		if st, err := in.Stat(); err == nil && st.Size() != f.Size {
			return false, permanent("size mismatch: manifest %d bytes, %s has %d", f.Size, u, st.Size())
		}
		if _, err := in.Seek(*off, io.SeekStart); err != nil {
			return false, err
		}
		return j.copy(ctx, i, in, f, out, h, off, nil)
	}

	rctx, cancel := context.WithCancelCause(context.WithValue(ctx, attemptKey{}, func(int) {
		j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Attempts++ })
	}))
	defer cancel(nil)
	hdr := http.Header{}
	if *off > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", *off))
	}
	resp, err := m.get(rctx, u, hdr)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if *off > 0 {
			// The server ignored the range: start over.
			if err := restart(out, h, off); err != nil {
				return false, err
			}
			j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Downloaded = 0 })
		}
		if resp.ContentLength >= 0 && resp.ContentLength != f.Size {
			return false, permanent("size mismatch: manifest %d bytes, %s has %d", f.Size, u, resp.ContentLength)
		}
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != *off {
			// Not the range asked for: start over with a plain request.
			if err := restart(out, h, off); err != nil {
				return false, err
			}
			j.setFile(i, func(fr *fileRecord, rt *fileRT) { fr.Downloaded = 0 })
			return false, fmt.Errorf("GET %s: unexpected Content-Range %q for offset %d", u, resp.Header.Get("Content-Range"), start)
		}
		if total >= 0 && total != f.Size {
			return false, permanent("size mismatch: manifest %d bytes, %s has %d", f.Size, u, total)
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return false, permanent("size mismatch: manifest %d bytes, %s has fewer than %d (range refused)", f.Size, u, *off+1)
	case http.StatusNotFound, http.StatusGone:
		return false, permanent("not found: GET %s: HTTP %s", u, resp.Status)
	default:
		return false, permanent("GET %s: HTTP %s (after %d retries)", u, resp.Status, m.opts.HTTPRetryMax)
	}
	return j.copy(rctx, i, resp.Body, f, out, h, off, cancel)
}

// copy streams in into out and h from *off, through the bandwidth limiter,
// cutting the request (stall) when no byte arrives for HTTPStallTimeout.
func (j *job) copy(ctx context.Context, i int, in io.Reader, f fileRecord, out *os.File, h hash.Hash, off *int64, stall context.CancelCauseFunc) (bool, error) {
	m := j.m
	var timer *time.Timer
	if stall != nil && m.opts.HTTPStallTimeout > 0 {
		timer = time.AfterFunc(m.opts.HTTPStallTimeout, func() {
			stall(fmt.Errorf("%w: no data for %s", errStalled, m.opts.HTTPStallTimeout))
		})
		defer timer.Stop()
	}
	buf := make([]byte, limiterChunk)
	for {
		n, rerr := in.Read(buf)
		if timer != nil {
			timer.Reset(m.opts.HTTPStallTimeout)
		}
		if n > 0 {
			// Waiting for our own bandwidth limit is not the server
			// stalling: hold the stall timer meanwhile.
			if timer != nil {
				timer.Stop()
			}
			if err := m.bw.wait(ctx, n); err != nil {
				return false, context.Cause(ctx)
			}
			if timer != nil {
				timer.Reset(m.opts.HTTPStallTimeout)
			}
			if *off+int64(n) > f.Size {
				return false, permanent("size mismatch: manifest %d bytes, the server sends more", f.Size)
			}
			if _, err := out.Write(buf[:n]); err != nil {
				return false, permanent("write %s: %v", out.Name(), err)
			}
			h.Write(buf[:n])
			*off += int64(n)
			nn := int64(n)
			j.addDownloaded(i, nn)
		}
		if rerr == io.EOF {
			return true, nil
		}
		if rerr != nil {
			if c := context.Cause(ctx); c != nil && errors.Is(c, errStalled) {
				return false, c
			}
			return false, rerr
		}
	}
}

func restart(out *os.File, h hash.Hash, off *int64) error {
	if err := out.Truncate(0); err != nil {
		return err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h.Reset()
	*off = 0
	return nil
}

// parseContentRange parses "bytes start-end/total" (total may be "*",
// returned as -1).
func parseContentRange(v string) (start, total int64, ok bool) {
	v, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	s, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		if total, err = strconv.ParseInt(tot, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

func hashFile(path string, h hash.Hash) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(h, f)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

// partSuffix names a partial download: the temp file a download resumes
// into with an HTTP Range request, renamed to the file's name when whole
// and verified.
const partSuffix = ".part"

// partPath is the temp file of the download whose final path is final:
// hidden (a leading dot), so it can never be the final name of another
// file of the manifest (manifest names cannot start with a dot), even one
// called "X.part".
func partPath(final string) string {
	return filepath.Join(filepath.Dir(final), "."+filepath.Base(final)+partSuffix)
}
