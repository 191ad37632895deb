package httpboot

import (
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
)

// Endpoint label values of the request and byte metrics.
const (
	epScript   = "script"
	epBlob     = "blob"
	epFirmware = "firmware"
	epReport   = "report"
)

type metrics struct {
	requests *prometheus.CounterVec // endpoint, code (status class)
	bytes    *prometheus.CounterVec // endpoint
	scripts  *prometheus.CounterVec // kind
	reports  *prometheus.CounterVec // phase
}

// newMetrics builds the collectors and registers them on reg (nil: none).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kiln", Subsystem: "httpboot", Name: "requests_total",
			Help: "HTTP boot requests by endpoint (script, blob, firmware, report) and status class (2xx..5xx).",
		}, []string{"endpoint", "code"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kiln", Subsystem: "httpboot", Name: "response_bytes_total",
			Help: "Response body bytes sent by endpoint.",
		}, []string{"endpoint"}),
		scripts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kiln", Subsystem: "httpboot", Name: "scripts_total",
			Help: "iPXE scripts served by kind: boot (an image), exit (no image or netboot disabled), unknown (unknown MAC).",
		}, []string{"kind"}),
		reports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "kiln", Subsystem: "httpboot", Name: "reports_total",
			Help: "Boot reports accepted by phase.",
		}, []string{"phase"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.requests, m.bytes, m.scripts, m.reports} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("httpboot: register metrics: %w", err)
		}
	}
	return m, nil
}

// instrument counts requests and body bytes of endpoint.
func (m *metrics) instrument(endpoint string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		defer func() {
			status := rec.status
			if status == 0 {
				status = http.StatusOK
			}
			m.requests.WithLabelValues(endpoint, fmt.Sprintf("%dxx", status/100)).Inc()
			m.bytes.WithLabelValues(endpoint).Add(float64(rec.bytes))
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder notes the status and counts body bytes. It implements
// io.ReaderFrom by handing the source to the underlying ResponseWriter's
// ReadFrom, so that http.ServeContent on an *os.File still reaches net/http's
// sendfile path; Unwrap lets http.ResponseController find Flush and
// deadlines.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rc *recorder) WriteHeader(code int) {
	if rc.status == 0 && code >= 200 {
		rc.status = code
	}
	rc.ResponseWriter.WriteHeader(code)
}

func (rc *recorder) Write(p []byte) (int, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	n, err := rc.ResponseWriter.Write(p)
	rc.bytes += int64(n)
	return n, err
}

// ReadFrom copies src to the response, through the underlying writer's
// ReadFrom (sendfile for files) when it has one.
func (rc *recorder) ReadFrom(src io.Reader) (int64, error) {
	if rc.status == 0 {
		rc.status = http.StatusOK
	}
	rf, ok := rc.ResponseWriter.(io.ReaderFrom)
	if !ok {
		n, err := io.Copy(writerOnly{rc.ResponseWriter}, src)
		rc.bytes += n
		return n, err
	}
	n, err := rf.ReadFrom(src)
	rc.bytes += n
	return n, err
}

// Unwrap returns the wrapped ResponseWriter (for http.ResponseController).
func (rc *recorder) Unwrap() http.ResponseWriter { return rc.ResponseWriter }

// writerOnly hides every method but Write, so io.Copy cannot loop back into
// ReadFrom.
type writerOnly struct{ w io.Writer }

func (w writerOnly) Write(p []byte) (int, error) { return w.w.Write(p) }

var _ io.ReaderFrom = (*recorder)(nil)
