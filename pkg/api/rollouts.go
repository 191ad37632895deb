package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
)

// Rollouts is the rollout engine (implemented by *reimage.Engine); nil disables the rollout endpoints (503).
type Rollouts interface {
	Start(ctx context.Context, req reimage.Request) (fleet.Rollout, error)
	Refresh(ctx context.Context, req reimage.RefreshRequest) (fleet.Rollout, error)
	Revert(ctx context.Context, req reimage.RevertRequest) (fleet.Rollout, error)
	Pause(ctx context.Context, id, actor string) (fleet.Rollout, error)
	Resume(ctx context.Context, id, actor string) (fleet.Rollout, error)
	Cancel(ctx context.Context, id, actor string) (fleet.Rollout, error)
	Get(ctx context.Context, id string) (fleet.Rollout, error)
	List(ctx context.Context) ([]fleet.Rollout, error)
	Hosts(ctx context.Context, id string) ([]fleet.RolloutHost, error)
}

// RolloutRequest starts a reimage rollout (`kiln reimage`), or with Revert a
// one-host revert with a power cycle (`kiln revert --reimage`).
type RolloutRequest struct {
	Hosts       []string `json:"hosts,omitempty"`
	Selector    string   `json:"selector,omitempty"`
	Ref         string   `json:"ref,omitempty"`
	Batch       int      `json:"batch,omitempty"`
	MaxFailures int      `json:"max_failures"`
	BootTimeout string   `json:"boot_timeout,omitempty"`
	AutoRevert  bool     `json:"auto_revert,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	// Revert names a host to revert to its previous image (or to Ref).
	Revert string `json:"revert,omitempty"`
}

// RefreshRequest reimages the selected hosts not on Image@latest yet.
type RefreshRequest struct {
	Selector    string `json:"selector,omitempty"`
	Image       string `json:"image"`
	Batch       int    `json:"batch,omitempty"`
	MaxFailures int    `json:"max_failures"`
	BootTimeout string `json:"boot_timeout,omitempty"`
	AutoRevert  bool   `json:"auto_revert,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// RefreshResponse is the started rollout, or NothingToDo when every selected
// host already runs the newest image.
type RefreshResponse struct {
	Rollout     *fleet.Rollout `json:"rollout,omitempty"`
	NothingToDo bool           `json:"nothing_to_do"`
	Message     string         `json:"message,omitempty"`
}

// RolloutStatus is a rollout with the progress of each of its hosts.
type RolloutStatus struct {
	Rollout fleet.Rollout       `json:"rollout"`
	Counts  fleet.RolloutCounts `json:"counts"`
	Hosts   []fleet.RolloutHost `json:"hosts"`
}

func parseTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: boot timeout %q is not a positive duration such as 15m", fleet.ErrInvalid, s)
	}
	return d, nil
}

func (s *Server) rollouts(w http.ResponseWriter, r *http.Request) bool {
	if s.cfg.Rollouts == nil {
		s.fail(w, r, fmt.Errorf("rollouts: %w", errUnavailable))
		return false
	}
	return true
}

// rolloutBody decodes a rollout request into req and parses its boot
// timeout; false means the answer was written already.
func (s *Server) rolloutBody(w http.ResponseWriter, r *http.Request, req any, bootTimeout *string) (time.Duration, bool) {
	if !s.decode(w, r, req) || !s.rollouts(w, r) {
		return 0, false
	}
	timeout, err := parseTimeout(*bootTimeout)
	if err != nil {
		s.fail(w, r, err)
		return 0, false
	}
	return timeout, true
}

// batchOrOne is a request's batch size; 0 (not given) means one host at a time.
func batchOrOne(n int) int { return max(n, 1) }

func (s *Server) startRollout(w http.ResponseWriter, r *http.Request) {
	var req RolloutRequest
	timeout, ok := s.rolloutBody(w, r, &req, &req.BootTimeout)
	if !ok {
		return
	}
	var ro fleet.Rollout
	var err error
	if req.Revert != "" {
		ro, err = s.cfg.Rollouts.Revert(r.Context(), reimage.RevertRequest{Host: req.Revert, To: req.Ref, BootTimeout: timeout, Actor: actor(r), Reason: req.Reason})
	} else {
		ro, err = s.cfg.Rollouts.Start(r.Context(), reimage.Request{Hosts: req.Hosts, Selector: req.Selector, Image: req.Ref,
			Batch: batchOrOne(req.Batch), MaxFailures: req.MaxFailures, BootTimeout: timeout, AutoRevert: req.AutoRevert, Actor: actor(r), Reason: req.Reason})
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, ro)
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	var req RefreshRequest
	timeout, ok := s.rolloutBody(w, r, &req, &req.BootTimeout)
	if !ok {
		return
	}
	ro, err := s.cfg.Rollouts.Refresh(r.Context(), reimage.RefreshRequest{Selector: req.Selector, Image: req.Image, Batch: batchOrOne(req.Batch),
		MaxFailures: req.MaxFailures, BootTimeout: timeout, AutoRevert: req.AutoRevert, Actor: actor(r), Reason: req.Reason})
	if errors.Is(err, reimage.ErrNothingToDo) {
		writeJSON(w, http.StatusOK, RefreshResponse{NothingToDo: true, Message: err.Error()})
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, RefreshResponse{Rollout: &ro})
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) {
	if !s.rollouts(w, r) {
		return
	}
	ros, err := s.cfg.Rollouts.List(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ros == nil {
		ros = []fleet.Rollout{}
	}
	writeJSON(w, http.StatusOK, ros)
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) {
	if !s.rollouts(w, r) {
		return
	}
	id := r.PathValue("id")
	ro, err := s.cfg.Rollouts.Get(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	hosts, err := s.cfg.Rollouts.Hosts(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, RolloutStatus{Rollout: ro, Counts: fleet.CountHosts(hosts), Hosts: hosts})
}

func (s *Server) rolloutAction(w http.ResponseWriter, r *http.Request) {
	if !s.rollouts(w, r) {
		return
	}
	id := r.PathValue("id")
	var err error
	switch a := r.PathValue("action"); a {
	case "pause":
		_, err = s.cfg.Rollouts.Pause(r.Context(), id, actor(r))
	case "resume":
		_, err = s.cfg.Rollouts.Resume(r.Context(), id, actor(r))
	case "cancel":
		_, err = s.cfg.Rollouts.Cancel(r.Context(), id, actor(r))
	default:
		err = fmt.Errorf("%w: rollout action %q (want pause, resume or cancel)", fleet.ErrInvalid, a)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.getRollout(w, r)
}

// StartRollout starts a reimage (or, with req.Revert, a revert) rollout.
func (c *Client) StartRollout(ctx context.Context, req RolloutRequest) (fleet.Rollout, error) {
	var ro fleet.Rollout
	return ro, c.call(ctx, "POST", "/api/v1/rollouts", req, &ro)
}

// Refresh starts a refresh rollout of the hosts not on the newest image.
func (c *Client) Refresh(ctx context.Context, req RefreshRequest) (RefreshResponse, error) {
	var res RefreshResponse
	return res, c.call(ctx, "POST", "/api/v1/refresh", req, &res)
}

// Rollouts lists rollouts.
func (c *Client) Rollouts(ctx context.Context) ([]fleet.Rollout, error) {
	var ros []fleet.Rollout
	return ros, c.call(ctx, "GET", "/api/v1/rollouts", nil, &ros)
}

// Rollout returns a rollout with its hosts' progress.
func (c *Client) Rollout(ctx context.Context, id string) (RolloutStatus, error) {
	var st RolloutStatus
	return st, c.call(ctx, "GET", "/api/v1/rollouts/"+id, nil, &st)
}

// RolloutAction pauses, resumes or cancels a rollout.
func (c *Client) RolloutAction(ctx context.Context, id, action string) (RolloutStatus, error) {
	var st RolloutStatus
	return st, c.call(ctx, "POST", "/api/v1/rollouts/"+id+"/"+action, nil, &st)
}
