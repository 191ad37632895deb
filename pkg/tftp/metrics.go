package tftp

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Request outcomes, the values of the "outcome" label of
// kiln_tftp_requests_total. Each read or write request is counted once.
const (
	OutcomeOK       = "ok"        // the whole file was sent and acknowledged
	OutcomeNotFound = "not_found" // no such regular file in Root
	OutcomeRefused  = "refused"   // write, bad name, bad mode, busy, malformed
	OutcomeError    = "error"     // the transfer started but failed or was aborted
)

// Reasons for a refusal, the values of the "reason" label of
// kiln_tftp_refused_total.
const (
	ReasonWrite      = "write"      // write request to this read-only server
	ReasonBadName    = "bad_name"   // CleanName refused the file name
	ReasonMode       = "mode"       // transfer mode other than octet or netascii
	ReasonBusy       = "busy"       // MaxConcurrent transfers already in flight
	ReasonMalformed  = "malformed"  // unparseable request
	ReasonPermission = "permission" // Root refused to open the file
)

type metrics struct {
	requests *prometheus.CounterVec
	refused  *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
	inflight prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_tftp_requests_total",
			Help: "TFTP read and write requests, by outcome (ok, not_found, refused, error).",
		}, []string{"outcome"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_tftp_refused_total",
			Help: "TFTP requests refused with an error packet, by reason.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kiln_tftp_sent_bytes_total",
			Help: "File bytes handed to TFTP transfers (payload, without headers or retransmissions).",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kiln_tftp_transfer_duration_seconds",
			Help:    "Duration of TFTP read transfers that started, successful or not.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_tftp_transfers_in_flight",
			Help: "TFTP transfers in flight (admitted, not yet finished).",
		}),
	}
	for _, o := range []string{OutcomeOK, OutcomeNotFound, OutcomeRefused, OutcomeError} {
		m.requests.WithLabelValues(o)
	}
	for _, r := range []string{ReasonWrite, ReasonBadName, ReasonMode, ReasonBusy, ReasonMalformed, ReasonPermission} {
		m.refused.WithLabelValues(r)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.refused, m.bytes, m.duration, m.inflight} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("tftp: register metrics: %w", err)
			}
		}
	}
	return m, nil
}
