package httpboot

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// readerFromWriter is a ResponseWriter with ReadFrom, like net/http's; it
// records what ReadFrom was handed.
type readerFromWriter struct {
	*httptest.ResponseRecorder
	srcs []io.Reader
}

func (w *readerFromWriter) ReadFrom(src io.Reader) (int64, error) {
	w.srcs = append(w.srcs, src)
	return io.Copy(w.ResponseRecorder, src)
}

// TestBlobReachesReadFrom checks that the instrumented blob handler hands the
// blob's *os.File (limited by ServeContent) to the underlying ResponseWriter's
// ReadFrom: that is the call net/http turns into sendfile(2).
func TestBlobReachesReadFrom(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 1<<20)
	d := putBlob(t, dir, data)
	h, reg := newTestHandler(t, Config{}, newFakeHosts(nil, nil), dirBlobs{dir}, nil)
	for _, rng := range []string{"", "bytes=4096-"} {
		t.Run("range="+rng, func(t *testing.T) {
			w := &readerFromWriter{ResponseRecorder: httptest.NewRecorder()}
			req := httptest.NewRequest("GET", "/blobs/sha256/"+d.Hex(), nil)
			if rng != "" {
				req.Header.Set("Range", rng)
			}
			h.ServeHTTP(w, req)
			if len(w.srcs) != 1 {
				t.Fatalf("ReadFrom called %d times, want 1 (the body must not go through Write)", len(w.srcs))
			}
			lr, ok := w.srcs[0].(*io.LimitedReader)
			if !ok {
				t.Fatalf("ReadFrom got %T, want *io.LimitedReader over *os.File", w.srcs[0])
			}
			if _, ok := lr.R.(*os.File); !ok {
				t.Fatalf("ReadFrom got a LimitedReader over %T, want *os.File", lr.R)
			}
			want := len(data)
			if rng != "" {
				want -= 4096
			}
			if w.Body.Len() != want {
				t.Errorf("body %d bytes, want %d", w.Body.Len(), want)
			}
		})
	}
	if got := counterValue(t, reg, "kiln_httpboot_response_bytes_total", map[string]string{"endpoint": epBlob}); got != float64(2*len(data)-4096) {
		t.Errorf("bytes counted %v, want %d", got, 2*len(data)-4096)
	}
}

// plainWriter has no ReadFrom: the recorder must fall back to Write.
type plainWriter struct{ http.ResponseWriter }

func TestRecorderWithoutReadFrom(t *testing.T) {
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := putBlob(t, dir, []byte("hello blob"))
	h, _ := newTestHandler(t, Config{}, newFakeHosts(nil, nil), dirBlobs{dir}, nil)
	rr := httptest.NewRecorder()
	m.instrument(epBlob, http.HandlerFunc(h.serveBlob)).ServeHTTP(plainWriter{rr}, func() *http.Request {
		r := httptest.NewRequest("GET", "/blobs/sha256/"+d.Hex(), nil)
		r.SetPathValue("hex", d.Hex())
		return r
	}())
	if rr.Code != 200 || rr.Body.String() != "hello blob" {
		t.Errorf("got %d %q", rr.Code, rr.Body.String())
	}
}

func TestRecorderUnwrap(t *testing.T) {
	rr := httptest.NewRecorder()
	rec := &recorder{ResponseWriter: rr}
	if err := http.NewResponseController(rec).Flush(); err != nil {
		t.Errorf("Flush through Unwrap: %v", err)
	}
	if !rr.Flushed {
		t.Error("underlying writer was not flushed")
	}
}
