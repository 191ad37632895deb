package bmc

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Manager's Prometheus collectors.
type metrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight prometheus.Gauge
	retries  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_bmc_operations_total",
			Help: "BMC operations by driver, operation and outcome (success, auth, timeout, unsupported, rejected, invalid_url, canceled, error).",
		}, []string{"driver", "op", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kiln_bmc_operation_duration_seconds",
			Help:    "Duration of BMC operations, including queueing behind other calls to the same BMC and retries.",
			Buckets: []float64{.025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"driver", "op"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kiln_bmc_operations_in_flight",
			Help: "BMC sessions open right now (bounded by the configured concurrency).",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kiln_bmc_retries_total",
			Help: "Retries of BMC operations after transient errors.",
		}, []string{"driver", "op"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.ops, m.duration, m.inFlight, m.retries} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("bmc: registering metrics: %w", err)
			}
		}
	}
	return m, nil
}

func (m *metrics) observe(d Driver, o op, outcome string, took time.Duration) {
	m.ops.WithLabelValues(string(d), o.label, outcome).Inc()
	m.duration.WithLabelValues(string(d), o.label).Observe(took.Seconds())
}
