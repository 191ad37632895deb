package httpboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// reportBody is the JSON body of POST /boot/report (docs/boot-protocol.md §2).
type reportBody struct {
	Phase   string `json:"phase"`
	Digest  string `json:"digest"`
	Message string `json:"message"`
}

// bearer returns the token of an "Authorization: Bearer <token>" header
// (scheme case-insensitive), and false when there is none.
func bearer(r *http.Request) (string, bool) {
	a := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(a, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// serveReport answers POST /boot/report: 204 recorded, 400 malformed body or
// unknown phase (also a body over MaxReportBytes), 401 no bearer token, 403
// unknown or stale token, 500 store failure. The token is never logged.
func (h *Handler) serveReport(w http.ResponseWriter, r *http.Request) {
	token, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kiln boot"`)
		http.Error(w, "a boot token is required (Authorization: Bearer <kiln.token>)", http.StatusUnauthorized)
		return
	}
	body, err := h.decodeReport(w, r)
	if err != nil {
		http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
		return
	}
	rep := fleet.BootReport{Phase: body.Phase, Digest: fleet.Digest(body.Digest), Message: body.Message}
	if err := rep.Validate(); err != nil {
		http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !tokenRE.MatchString(token) { // cannot have been issued
		h.log.Info("boot report with a malformed token", "phase", rep.Phase, "remote", r.RemoteAddr)
		http.Error(w, "unknown boot token", http.StatusForbidden)
		return
	}
	stored, err := h.hosts.RecordReport(r.Context(), token, rep)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		h.log.Info("boot report with an unknown token", "phase", rep.Phase, "remote", r.RemoteAddr)
		http.Error(w, "unknown boot token", http.StatusForbidden)
		return
	case errors.Is(err, fleet.ErrStale):
		h.log.Info("boot report with a stale token", "phase", rep.Phase, "remote", r.RemoteAddr, "err", err)
		http.Error(w, "stale boot token: a newer boot attempt was issued or this one has ended", http.StatusForbidden)
		return
	case errors.Is(err, fleet.ErrInvalid):
		http.Error(w, "bad report: "+err.Error(), http.StatusBadRequest)
		return
	case err != nil:
		h.log.Error("boot report: store", "phase", rep.Phase, "err", err)
		http.Error(w, "cannot record the report", http.StatusInternalServerError)
		return
	}
	h.m.reports.WithLabelValues(stored.Phase).Inc()
	h.log.Info("boot report", "host", stored.Host, "attempt", stored.Attempt, "image", stored.Image,
		"phase", stored.Phase, "digest", stored.Digest, "message", stored.Message)
	if h.cfg.onReport != nil {
		h.cfg.onReport(stored)
	}
	w.WriteHeader(http.StatusNoContent)
}

// decodeReport reads one JSON object of at most MaxReportBytes; unknown
// fields and trailing data are refused, and the error names the problem.
func (h *Handler) decodeReport(w http.ResponseWriter, r *http.Request) (reportBody, error) {
	var b reportBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, h.cfg.maxReport))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return b, fmt.Errorf("body is larger than %d bytes", mbe.Limit)
		}
		if errors.Is(err, io.EOF) {
			return b, errors.New("empty body")
		}
		return b, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return b, errors.New("trailing data after the JSON object")
	}
	return b, nil
}
