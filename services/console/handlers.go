package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"google.golang.org/grpc/status"

	downloaderv1 "github.com/slotkv/slotkv/gen/slotkv/downloader/v1"
	migratorv1 "github.com/slotkv/slotkv/gen/slotkv/migrator/v1"
	"github.com/slotkv/slotkv/pkg/auth"
	"github.com/slotkv/slotkv/pkg/server"
	"github.com/slotkv/slotkv/pkg/version"
)

//go:embed web
var webFS embed.FS

// maxAPIBody bounds an API request body.
const maxAPIBody = 64 << 10

// page is one page of the console.
type page struct {
	Path, Name, Title string
}

var pages = []page{
	{"/", "cluster", "Cluster"},
	{"/migrations", "migrations", "Migrations"},
	{"/bulkloads", "bulkloads", "Bulk loads"},
	{"/traffic", "traffic", "Traffic"},
}

// pageData is what the templates get.
type pageData struct {
	Page       page
	Pages      []page
	Auth       bool // a login is needed (and so a logout button shown)
	Migrator   bool
	Downloader bool
	Version    string
	Error      string // login page
	Next       string // login page: where to go after it
}

var templates = template.Must(template.ParseFS(webFS, "web/*.html"))

// Handler is the console's HTTP handler: pages, assets, events, the API,
// /healthz, /readyz and /metrics.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(webFS, "web/static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc(server.HealthzPath, func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	mux.HandleFunc(server.ReadyzPath, func(w http.ResponseWriter, _ *http.Request) { writeText(w, http.StatusOK, "ok") })
	if c.o.MetricsHandler != nil {
		mux.Handle("GET "+server.MetricsPath, auth.RequireHTTP(c.o.Tokens, auth.Admin, c.o.MetricsHandler))
	}
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("POST /logout", c.logout)
	for _, p := range pages {
		pattern := "GET " + p.Path
		if p.Path == "/" {
			pattern = "GET /{$}"
		}
		mux.Handle(pattern, c.needSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { c.render(w, r, p, "") })))
	}
	mux.Handle("GET /events", c.needSession(http.HandlerFunc(c.hub.serveEvents)))
	mux.Handle("GET /api/state", c.needSession(http.HandlerFunc(c.state)))
	mux.Handle("POST /api/migrations", c.needSession(c.api(c.startMigration)))
	mux.Handle("POST /api/migrations/{id}/rate", c.needSession(c.api(c.rateMigration)))
	mux.Handle("POST /api/migrations/{id}/cancel", c.needSession(c.api(c.cancelMigration)))
	mux.Handle("POST /api/bulkloads", c.needSession(c.api(c.startBulkLoad)))
	mux.Handle("POST /api/bulkloads/{id}/{action}", c.needSession(c.api(c.bulkLoadAction)))

	opts := []otelhttp.Option{
		otelhttp.WithTracerProvider(c.o.TracerProvider),
		otelhttp.WithFilter(func(r *http.Request) bool {
			// Probes, scrapes, assets and the long-lived event stream would
			// bury the calls worth a trace.
			p := r.URL.Path
			return p != server.HealthzPath && p != server.ReadyzPath && p != server.MetricsPath && p != "/events" && !strings.HasPrefix(p, "/static/")
		}),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.Pattern }),
	}
	if c.o.MeterProvider != nil {
		opts = append(opts, otelhttp.WithMeterProvider(c.o.MeterProvider))
	}
	return otelhttp.NewHandler(secure(mux), ServiceName, opts...)
}

// secure sets the headers every answer carries: no inline script or
// style, no framing, no sniffing.
func secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

// needSession sends a browser without a session to the login form (the
// API answers 401) and refuses cross-site POSTs.
func (c *Console) needSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && !sameOrigin(r) {
			writeJSONError(w, http.StatusForbidden, "PermissionDenied", "cross-site request refused")
			return
		}
		if c.loggedIn(r) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/events" {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.Path), http.StatusSeeOther)
			return
		}
		writeJSONError(w, http.StatusUnauthorized, "Unauthenticated", "log in first: the console needs the admin token")
	})
}

// sameOrigin: a POST must come from the console's own pages. The session
// cookie is SameSite=Strict already; this also covers browsers that do
// not honour it.
func sameOrigin(r *http.Request) bool {
	// Browsers send Sec-Fetch-Site and scripts cannot forge it; older ones
	// send Origin; a client that sends neither is not a browser, so no
	// other site can have made it send the request.
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin" || site == "none"
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, p page, loginErr string) {
	d := pageData{Page: p, Pages: pages, Auth: c.authRequired(), Migrator: c.migrations != nil, Downloader: c.bulkloads != nil, Version: version.Version, Error: loginErr}
	name := p.Name + ".html"
	if p.Name == "login" {
		d.Next = safeNext(r.FormValue("next"))
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if loginErr != "" {
		w.WriteHeader(http.StatusUnauthorized)
	}
	if err := templates.ExecuteTemplate(w, name, d); err != nil {
		c.log.Error("rendering a page failed", "page", name, "err", err)
	}
}

// safeNext keeps only a local path, so the login cannot send the browser
// elsewhere.
func safeNext(s string) string {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.Contains(s, "\\") {
		return "/"
	}
	for _, p := range pages {
		if s == p.Path {
			return s
		}
	}
	return "/"
}

var loginPg = page{Path: "/login", Name: "login", Title: "Log in"}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if !c.authRequired() || c.loggedIn(r) {
		http.Redirect(w, r, safeNext(r.FormValue("next")), http.StatusSeeOther)
		return
	}
	c.render(w, r, loginPg, "")
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxAPIBody)
	if !c.authRequired() {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if msg := c.checkToken(r.PostFormValue("token")); msg != "" {
		c.render(w, r, loginPg, msg)
		return
	}
	c.setSession(w, c.sessions.open(), int(c.o.SessionTTL.Seconds()))
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site request refused", http.StatusForbidden)
		return
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		c.sessions.end(ck.Value)
	}
	c.setSession(w, "", -1)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// state answers every current view at once (for scripts and tests).
func (c *Console) state(w http.ResponseWriter, _ *http.Request) {
	out := map[string]json.RawMessage{}
	for _, k := range []string{kindCluster, kindTraffic, kindMigrations, kindBulkloads} {
		if b := c.hub.get(k); b != nil {
			out[k] = b
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// apiFunc handles one API call: the decoded JSON body in, a view or an
// error out.
type apiFunc func(r *http.Request, body map[string]string) (any, error)

// fieldError is bad input found by the console itself, before any call.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

// api decodes the JSON body (an object of strings, as the forms send) and
// writes the answer: the view, or the error with the service's message.
func (c *Console) api(f apiFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			writeJSONError(w, http.StatusUnsupportedMediaType, "InvalidArgument", "send a JSON body (Content-Type: application/json)")
			return
		}
		body := map[string]string{}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			err = json.Unmarshal(b, &body)
		}
		if err != nil {
			writeJSONError(w, http.StatusBadRequest, "InvalidArgument", "request body: "+err.Error())
			return
		}
		ctx, cancel := contextWithTimeout(r)
		defer cancel()
		v, err := f(r.WithContext(ctx), body)
		if err != nil {
			var fe *fieldError
			if errors.As(err, &fe) {
				writeJSONError(w, http.StatusBadRequest, "InvalidArgument", fe.Error())
				return
			}
			s := status.Convert(err)
			writeJSONError(w, runtime.HTTPStatusFromCode(s.Code()), s.Code().String(), s.Message())
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

// uintField parses an optional unsigned number ("" is 0).
func uintField(body map[string]string, name string, bits int) (uint64, error) {
	s := strings.TrimSpace(body[name])
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return 0, &fieldError{name, fmt.Sprintf("%q is not a whole number from 0 to %d", s, uint64(1)<<bits-1)}
	}
	return n, nil
}

// rateField parses a byte rate: "1048576", "1MiB", "500 kB" ("" is 0,
// the service's default or unlimited).
func rateField(body map[string]string, name string) (uint64, error) {
	s := strings.TrimSpace(body[name])
	if s == "" {
		return 0, nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, &fieldError{name, fmt.Sprintf("%q is not a byte rate (bytes per second, e.g. 1048576 or 1MiB)", s)}
	}
	return n, nil
}

func (c *Console) migrator() (migratorv1.MigratorServiceClient, error) {
	cc, err := c.conn(c.o.Migrator)
	if err != nil {
		return nil, err
	}
	return migratorv1.NewMigratorServiceClient(cc), nil
}

func (c *Console) downloader() (downloaderv1.BulkLoadServiceClient, error) {
	cc, err := c.conn(c.o.Downloader)
	if err != nil {
		return nil, err
	}
	return downloaderv1.NewBulkLoadServiceClient(cc), nil
}

var errNoMigrator = &fieldError{"migrator", "the console was started without --migrator"}
var errNoDownloader = &fieldError{"downloader", "the console was started without --downloader"}

// startMigration: the form's fields go to StartMigration as given; the
// migrator checks them (a bad range is its error, shown as it wrote it).
func (c *Console) startMigration(r *http.Request, body map[string]string) (any, error) {
	if c.migrations == nil {
		return nil, errNoMigrator
	}
	p, err := uintField(body, "parallelism", 32)
	if err != nil {
		return nil, err
	}
	rate, err := rateField(body, "rate")
	if err != nil {
		return nil, err
	}
	return c.callMigrator(r, func(ctx context.Context, m migratorv1.MigratorServiceClient) (*migratorv1.Migration, error) {
		resp, err := m.StartMigration(ctx, &migratorv1.StartMigrationRequest{
			JobId: strings.TrimSpace(body["job_id"]), Ranges: body["ranges"],
			SourceNodeId: strings.TrimSpace(body["source"]), DestinationNodeId: strings.TrimSpace(body["destination"]),
			Parallelism: uint32(p), RateBytesPerSecond: rate,
		})
		return resp.GetMigration(), err
	})
}

// callMigrator runs one migrator call that answers a job, and shows the
// job's new state on the pages at once (before its watch catches up).
func (c *Console) callMigrator(r *http.Request, call func(context.Context, migratorv1.MigratorServiceClient) (*migratorv1.Migration, error)) (any, error) {
	m, err := c.migrator()
	if err != nil {
		return nil, err
	}
	job, err := call(r.Context(), m)
	if err != nil {
		return nil, err
	}
	v := c.migrationView(r.Context(), job)
	c.migrations.put(v)
	return v, nil
}

func (c *Console) rateMigration(r *http.Request, body map[string]string) (any, error) {
	if c.migrations == nil {
		return nil, errNoMigrator
	}
	if strings.TrimSpace(body["rate"]) == "" {
		return nil, &fieldError{"rate", "enter a byte rate (0 for unlimited)"}
	}
	rate, err := rateField(body, "rate")
	if err != nil {
		return nil, err
	}
	return c.callMigrator(r, func(ctx context.Context, m migratorv1.MigratorServiceClient) (*migratorv1.Migration, error) {
		resp, err := m.UpdateMigration(ctx, &migratorv1.UpdateMigrationRequest{JobId: r.PathValue("id"), RateBytesPerSecond: &rate})
		return resp.GetMigration(), err
	})
}

func (c *Console) cancelMigration(r *http.Request, _ map[string]string) (any, error) {
	if c.migrations == nil {
		return nil, errNoMigrator
	}
	return c.callMigrator(r, func(ctx context.Context, m migratorv1.MigratorServiceClient) (*migratorv1.Migration, error) {
		resp, err := m.CancelMigration(ctx, &migratorv1.CancelMigrationRequest{JobId: r.PathValue("id")})
		return resp.GetMigration(), err
	})
}

func (c *Console) startBulkLoad(r *http.Request, body map[string]string) (any, error) {
	if c.bulkloads == nil {
		return nil, errNoDownloader
	}
	d, err := c.downloader()
	if err != nil {
		return nil, err
	}
	resp, err := d.StartJob(r.Context(), &downloaderv1.StartJobRequest{ManifestUrl: strings.TrimSpace(body["manifest_url"]), JobId: strings.TrimSpace(body["job_id"])})
	if err != nil {
		return nil, err
	}
	v := bulkViewOf(resp.GetJob())
	c.bulkloads.put(v)
	return v, nil
}

func (c *Console) bulkLoadAction(r *http.Request, _ map[string]string) (any, error) {
	if c.bulkloads == nil {
		return nil, errNoDownloader
	}
	d, err := c.downloader()
	if err != nil {
		return nil, err
	}
	id := r.PathValue("id")
	var j *downloaderv1.Job
	switch a := r.PathValue("action"); a {
	case "pause":
		resp, e := d.PauseJob(r.Context(), &downloaderv1.PauseJobRequest{JobId: id})
		j, err = resp.GetJob(), e
	case "resume":
		resp, e := d.ResumeJob(r.Context(), &downloaderv1.ResumeJobRequest{JobId: id})
		j, err = resp.GetJob(), e
	case "cancel":
		resp, e := d.CancelJob(r.Context(), &downloaderv1.CancelJobRequest{JobId: id})
		j, err = resp.GetJob(), e
	default:
		return nil, &fieldError{"action", fmt.Sprintf("%q is not pause, resume or cancel", a)}
	}
	if err != nil {
		return nil, err
	}
	v := bulkViewOf(j)
	c.bulkloads.put(v)
	return v, nil
}

// contextWithTimeout bounds a call made for an API request.
func contextWithTimeout(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), callTimeout)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeJSONError answers {"error": message, "code": code}.
func writeJSONError(w http.ResponseWriter, httpCode int, code, msg string) {
	writeJSON(w, httpCode, map[string]string{"error": msg, "code": code})
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}
