package reimage

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	active      prometheus.Gauge
	inFlight    prometheus.Gauge
	transitions *prometheus.CounterVec
	finished    *prometheus.CounterVec
	bmcErrors   *prometheus.CounterVec
	bmcSeconds  *prometheus.HistogramVec
	hostSeconds prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_rollout_active",
			Help: "Rollouts the engine is running (including paused ones)."}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kiln_rollout_hosts_in_flight",
			Help: "Hosts being reimaged right now across all rollouts."}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_rollout_host_transitions_total",
			Help: "Rollout host state transitions, by new state."}, []string{"state"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_rollout_finished_total",
			Help: "Rollouts finished, by final state."}, []string{"state"}),
		bmcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kiln_rollout_bmc_errors_total",
			Help: "Failed BMC calls (including timeouts), by operation."}, []string{"op"}),
		bmcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "kiln_rollout_bmc_call_seconds",
			Help: "Duration of BMC calls, by operation.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 12)}, []string{"op"}),
		hostSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kiln_rollout_host_seconds",
			Help: "Time from a host's start to its booted report.", Buckets: prometheus.ExponentialBuckets(1, 2, 14)}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.active, m.inFlight, m.transitions, m.finished, m.bmcErrors, m.bmcSeconds, m.hostSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
