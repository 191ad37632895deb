package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/reimage"
)

func TestStartRollout(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  api.RolloutRequest
		code int
		want string
		call func(t *testing.T, c rolloutCall)
	}{
		{"batch defaults to 1", api.RolloutRequest{Hosts: []string{"n1", "n2"}, Ref: "deb@2"}, 201, "", func(t *testing.T, c rolloutCall) {
			r := c.Start
			if c.Method != "Start" || r.Batch != 1 || r.Image != "deb@2" || len(r.Hosts) != 2 || r.BootTimeout != 0 || r.Actor != testActor {
				t.Fatalf("engine got %+v", c)
			}
		}},
		{"every option", api.RolloutRequest{Selector: "rack=r1", Ref: "deb@latest", Batch: 4, MaxFailures: 2, BootTimeout: "90s", AutoRevert: true, Reason: "nightly"}, 201, "", func(t *testing.T, c rolloutCall) {
			r := c.Start
			if r.Selector != "rack=r1" || r.Hosts != nil || r.Batch != 4 || r.MaxFailures != 2 || r.BootTimeout != 90*time.Second || !r.AutoRevert || r.Reason != "nightly" {
				t.Fatalf("engine got %+v", r)
			}
		}},
		{"revert variant", api.RolloutRequest{Revert: "n1", Ref: "deb@1"}, 201, "", func(t *testing.T, c rolloutCall) {
			if c.Method != "Revert" || c.Host != "n1" || c.To != "deb@1" || c.Actor != testActor {
				t.Fatalf("engine got %+v", c)
			}
		}},
		{"revert to previous", api.RolloutRequest{Revert: "n1"}, 201, "", func(t *testing.T, c rolloutCall) {
			if c.Method != "Revert" || c.To != "" {
				t.Fatalf("engine got %+v", c)
			}
		}},
		{"timeout without unit", api.RolloutRequest{Hosts: []string{"n1"}, Ref: "deb@2", BootTimeout: "15"}, 400, `boot timeout "15"`, nil},
		{"negative timeout", api.RolloutRequest{Hosts: []string{"n1"}, Ref: "deb@2", BootTimeout: "-5m"}, 400, "positive duration", nil},
		{"zero timeout", api.RolloutRequest{Hosts: []string{"n1"}, Ref: "deb@2", BootTimeout: "0s"}, 400, "positive duration", nil},
		{"bad timeout on revert", api.RolloutRequest{Revert: "n1", BootTimeout: "soon"}, 400, "boot timeout", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ro, err := e.c.StartRollout(e.ctx, tc.req)
			if tc.code != 201 {
				wantStatus(t, err, tc.code, tc.want)
				if !errors.Is(err, fleet.ErrInvalid) {
					t.Fatal("400 does not match ErrInvalid")
				}
				if n := e.rollouts.callCount(); n != 0 {
					t.Fatalf("a refused request reached the engine (%d calls)", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ro.ID == "" || ro.State != fleet.RolloutRunning {
				t.Fatalf("rollout: %+v", ro)
			}
			tc.call(t, e.rollouts.lastCall())
		})
	}

	// Engine errors map like any other.
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("image deb@9: %w", fleet.ErrNotFound), 404},
		{fmt.Errorf("%w: batch must be >= 1", fleet.ErrInvalid), 400},
		{fmt.Errorf("host n1 is in rollout r-1: %w", fleet.ErrConflict), 409},
		{reimage.ErrNotRunning, 500},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			e := newEnv(t)
			e.rollouts.startErr = tc.err
			_, err := e.c.StartRollout(e.ctx, api.RolloutRequest{Hosts: []string{"n1"}, Ref: "deb@9"})
			wantStatus(t, err, tc.code, tc.err.Error())
		})
	}
}

func TestRefresh(t *testing.T) {
	e := newEnv(t)
	res, err := e.c.Refresh(e.ctx, api.RefreshRequest{Image: "deb", Selector: "rack=r1", MaxFailures: 1, BootTimeout: "10m", Reason: "nightly"})
	if err != nil || res.NothingToDo || res.Rollout == nil || res.Rollout.Kind != fleet.KindRefresh {
		t.Fatalf("refresh: %+v %v", res, err)
	}
	c := e.rollouts.lastCall()
	if r := c.Refresh; c.Method != "Refresh" || r.Image != "deb" || r.Selector != "rack=r1" || r.Batch != 1 || r.MaxFailures != 1 ||
		r.BootTimeout != 10*time.Minute || r.Actor != testActor || r.Reason != "nightly" {
		t.Fatalf("engine got %+v", c)
	}

	e.rollouts.nothingToDo = true
	code, body := e.raw("POST", "/api/v1/refresh", "application/json", jsonBody(t, api.RefreshRequest{Image: "deb"}))
	if code != http.StatusOK {
		t.Fatalf("nothing to do: %d %s", code, body)
	}
	res, err = e.c.Refresh(e.ctx, api.RefreshRequest{Image: "deb"})
	if err != nil || !res.NothingToDo || res.Rollout != nil || res.Message == "" {
		t.Fatalf("nothing to do: %+v %v", res, err)
	}
	_, err = e.c.Refresh(e.ctx, api.RefreshRequest{Image: "deb", BootTimeout: "1 hour"})
	wantStatus(t, err, http.StatusBadRequest, "boot timeout")
}

func TestRolloutLifecycle(t *testing.T) {
	e := newEnv(t)
	if ros, err := e.c.Rollouts(e.ctx); err != nil || ros == nil || len(ros) != 0 {
		t.Fatalf("no rollouts: %#v %v", ros, err)
	}
	ro, err := e.c.StartRollout(e.ctx, api.RolloutRequest{Hosts: []string{"n1", "n2", "n3"}, Ref: "deb@2", Batch: 2})
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.c.Rollout(e.ctx, ro.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rollout.ID != ro.ID || len(st.Hosts) != 3 || st.Hosts[2].Batch != 1 ||
		st.Counts != (fleet.RolloutCounts{Total: 3, Pending: 2, InFlight: 1}) {
		t.Fatalf("status: %+v", st)
	}
	for _, tc := range []struct {
		action string
		code   int
		state  fleet.RolloutState
		want   string
	}{
		{"pause", 200, fleet.RolloutPaused, ""},
		{"pause", 200, fleet.RolloutPaused, ""},
		{"resume", 200, fleet.RolloutRunning, ""},
		{"restart", 400, "", `rollout action "restart"`},
		{"cancel", 200, fleet.RolloutCancelled, ""},
		{"resume", 409, "", "cannot become running"},
	} {
		t.Run(tc.action, func(t *testing.T) {
			n := e.rollouts.callCount()
			st, err := e.c.RolloutAction(e.ctx, ro.ID, tc.action)
			if tc.code != 200 {
				wantStatus(t, err, tc.code, tc.want)
				return
			}
			if err != nil || st.Rollout.State != tc.state || len(st.Hosts) != 3 {
				t.Fatalf("%s: %+v %v", tc.action, st.Rollout, err)
			}
			c := e.rollouts.lastCall()
			if e.rollouts.callCount() != n+1 || c.ID != ro.ID || c.Actor != testActor {
				t.Fatalf("engine call: %+v", c)
			}
		})
	}
	if _, err := e.c.StartRollout(e.ctx, api.RolloutRequest{Revert: "n1"}); err != nil {
		t.Fatal(err)
	}
	ros, err := e.c.Rollouts(e.ctx)
	if err != nil || len(ros) != 2 || ros[0].State != fleet.RolloutCancelled || ros[1].Kind != fleet.KindRevert {
		t.Fatalf("rollouts: %+v %v", ros, err)
	}
}

func jsonBody(t *testing.T, v any) io.Reader {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(b)
}
