package gateway

import (
	"context"
	"io"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/req-mtls/req-mtls/internal/bufpool"
)

// The fast way: the gateway's common request (no body, no protocol switch,
// to a plain-HTTP origin named without a path) proxied without
// httputil.ReverseProxy. What the origin receives and what the client gets
// are the ReverseProxy's, field for field (TestFastSameAsReverseProxy);
// the work is less: one pass over the client's fields instead of a clone
// and a dozen deletions, no client trace, no request copies. Anything else
// goes to the ReverseProxy.

// fastTarget reports whether requests to target can go the fast way: a
// plain-HTTP origin (a Unix socket included) with no path or query of its
// own to join.
func fastTarget(target *url.URL) bool {
	return target.Scheme == "http" && target.Path == "" && target.RawPath == "" && target.RawQuery == "" &&
		target.User == nil && target.Opaque == "" && !target.ForceQuery &&
		!strings.Contains(os.Getenv("GODEBUG"), "urlmaxqueryparams")
}

// fastRequest reports whether r can go the fast way: an empty body, no
// protocol switch, trailers or TE, an origin-form target whose query needs
// no cleaning.
func fastRequest(r *http.Request) bool {
	if r.ContentLength != 0 || len(r.TransferEncoding) > 0 || r.Method == "CONNECT" || r.Trailer != nil {
		return false
	}
	u := r.URL
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path[0] != '/') || !cleanQuery(u.RawQuery) {
		return false
	}
	_, up := r.Header["Upgrade"]
	_, te := r.Header["Te"]
	return !up && !te
}

// cleanQuery reports whether a query is one the ReverseProxy passes on as
// it is: at most 10000 parameters, no ';', every '%' followed by two hex
// digits. (It re-encodes any other, as it does every query when GODEBUG
// sets urlmaxqueryparams: then the fast way is off, fastTarget.)
func cleanQuery(q string) bool {
	if strings.Count(q, "&") >= maxQueryParams {
		return false
	}
	for i := 0; i < len(q); i++ {
		switch q[i] {
		case ';':
			return false
		case '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

// maxQueryParams is net/url's and httputil's limit on a query's
// parameters.
const maxQueryParams = 10000

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// hopByHop are the fields that describe one connection (RFC 9110, Section
// 7.6.1, and those older proxies remove), by canonical name.
var hopByHop = map[string]bool{"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true}

// forwardingFields are the client's forwarding fields, replaced by ours.
var forwardingFields = map[string]bool{"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true}

// connectionOptions returns the field names the Connection field lists
// (its options name fields that are hop-by-hop too), canonical.
func connectionOptions(conn []string) []string {
	var names []string
	for _, f := range conn {
		for f != "" {
			var opt string
			opt, f, _ = strings.Cut(f, ",")
			if opt = textproto.TrimString(opt); opt != "" {
				names = append(names, http.CanonicalHeaderKey(opt))
			}
		}
	}
	return names
}

// serveFast proxies r the fast way (fastRequest(r) holds).
func (g *gateway) serveFast(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	out := r.WithContext(ctx) // a copy, to be the origin's request
	u := *r.URL
	u.Scheme, u.Host = g.target.Scheme, g.target.Host
	if u.Path == "" {
		u.Path, u.RawPath = "/", ""
	} else if u.RawPath != "" {
		u.RawPath = r.URL.EscapedPath()
	}
	out.URL = &u
	out.Body, out.GetBody, out.ContentLength, out.Close = nil, nil, 0, false

	// The client's fields, less the hop-by-hop ones, its forwarding and
	// identity fields; then ours.
	listed := connectionOptions(r.Header["Connection"])
	h := make(http.Header, len(r.Header)+12)
	values := 0
	for _, vv := range r.Header {
		values += len(vv)
	}
	store := make([]string, 0, values)
	for k, vv := range r.Header {
		if hopByHop[k] || forwardingFields[k] || isSpoofable(k) {
			continue
		}
		if vv == nil {
			h[k] = nil
			continue
		}
		n := len(store)
		store = append(store, vv...)
		h[k] = store[n:len(store):len(store)]
	}
	for _, k := range listed {
		delete(h, k) // one each, whatever the number of fields
	}
	out.Header = h
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = []string{host}
	}
	h["X-Forwarded-Host"] = []string{r.Host}
	if r.TLS == nil {
		h["X-Forwarded-Proto"] = []string{"http"}
	} else {
		h["X-Forwarded-Proto"] = []string{"https"}
	}
	g.setOurs(h, r)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // not Go's
	}

	fw := &fastWriter{w: w}
	start := time.Now()
	resp, err := g.direct.roundTrip(out, fw.got1xx)
	fw.mu.Lock()
	fw.done = true
	fw.mu.Unlock()
	noteTiming(ctx, start, resp, err)
	if err != nil {
		g.fail(w, out, err)
		return
	}
	removeHopByHop(resp.Header)
	if err := g.response(resp); err != nil {
		resp.Body.Close()
		g.fail(w, out, err)
		return
	}
	wh := w.Header()
	for k, vv := range resp.Header {
		wh[k] = append(wh[k], vv...)
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		wh.Add("Trailer", strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	if err := g.copyBody(w, resp); err != nil {
		resp.Body.Close()
		if ctx.Value(http.ServerContextKey) == nil {
			// Not under an http.Server, which would recover the
			// panic (ServeHTTP called directly).
			g.proxy.ErrorLog.Printf("suppressing panic for copyResponse error in test; copy error: %v", err)
			return
		}
		panic(http.ErrAbortHandler)
	}
	resp.Body.Close() // now, for resp.Trailer
	if len(resp.Trailer) > 0 {
		// Trailers need a chunked answer: no Content-Length from
		// the server for a short body.
		http.NewResponseController(w).Flush()
	}
	for k, vv := range resp.Trailer {
		if len(resp.Trailer) != announced {
			k = http.TrailerPrefix + k
		}
		for _, v := range vv {
			wh.Add(k, v)
		}
	}
}

// removeHopByHop removes the fields that describe one connection: those the
// Connection field lists, and hopByHop.
func removeHopByHop(h http.Header) {
	for _, k := range connectionOptions(h["Connection"]) {
		delete(h, k)
	}
	for k := range hopByHop {
		delete(h, k)
	}
}

// copyBody copies the response body to w: flushed at every write for an
// event stream or a body of unknown length (long polls, streams), in one
// go otherwise. A read error is logged; the error returned ends the
// answer.
func (g *gateway) copyBody(w http.ResponseWriter, resp *http.Response) error {
	var flush func() error
	if resp.ContentLength == -1 || isEventStream(resp.Header) {
		flush = http.NewResponseController(w).Flush
		flush() // the header now, whenever the body comes
	}
	buf := bufpool.Copy.Get()
	defer bufpool.Copy.Put(buf)
	for {
		n, rerr := resp.Body.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			// (The ReverseProxy's words, for one log whichever way.)
			g.proxy.ErrorLog.Printf("httputil: ReverseProxy read error during body copy: %v", rerr)
		}
		if n > 0 {
			m, werr := w.Write(buf[:n])
			if werr != nil {
				return werr
			}
			if m != n {
				return io.ErrShortWrite
			}
			if flush != nil {
				flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports whether the Content-Type is text/event-stream
// (server-sent events), whatever its parameters and case.
func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	if len(ct) < len("text/event-stream") || !strings.Contains(strings.ToLower(ct), "event-stream") {
		return false // the usual answer, without parsing
	}
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "text/event-stream"
}

// fastWriter hands informational answers (103 Early Hints) to the client
// while the final one has not come.
type fastWriter struct {
	w    http.ResponseWriter
	mu   sync.Mutex
	done bool
}

func (f *fastWriter) got1xx(code int, header textproto.MIMEHeader) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return nil
	}
	h := f.w.Header()
	for k, vv := range header {
		h[k] = append(h[k], vv...)
	}
	f.w.WriteHeader(code)
	clear(h)
	return nil
}
