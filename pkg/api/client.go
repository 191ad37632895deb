package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/immutableinfra/kiln/pkg/fleet"
	"github.com/immutableinfra/kiln/pkg/imagestore"
)

// Client talks to kilnd's API. The zero value is not usable: use NewClient.
type Client struct {
	base  *url.URL
	token string
	actor string
	http  *http.Client
}

// StatusError is a non-2xx answer from kilnd; Message is the server's error
// and Reason its Error.Reason.
type StatusError struct {
	Code    int
	Message string
	Reason  string
}

func (e *StatusError) Error() string { return e.Message }

// Is lets errors.Is match a StatusError against the fleet sentinels.
func (e *StatusError) Is(target error) bool {
	switch target {
	case fleet.ErrNotFound:
		return e.Code == http.StatusNotFound
	case fleet.ErrExists:
		return e.conflict(ReasonExists)
	case fleet.ErrConflict:
		return e.conflict(ReasonConflict)
	case fleet.ErrInUse:
		return e.conflict(ReasonInUse)
	case fleet.ErrInvalid:
		return e.Code == http.StatusBadRequest
	}
	return false
}

// conflict reports whether e is a 409 of the given reason; a 409 without a
// reason (an older kilnd) matches every reason.
func (e *StatusError) conflict(reason string) bool {
	return e.Code == http.StatusConflict && (e.Reason == "" || e.Reason == reason)
}

// NewClient returns a client for the daemon at server (http://host:port),
// authenticating with token and recording actor in what it changes.
func NewClient(server, token, actor string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q is not an http(s)://HOST:PORT URL", server)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, token: token, actor: actor, http: hc}, nil
}

func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	return u.String()
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, contentType string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if c.actor != "" {
		req.Header.Set("X-Kiln-Actor", c.actor)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("kilnd at %s: %w", c.base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("kilnd answered %s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Error, Reason: e.Reason}
	}
	if out == nil {
		return nil
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	return c.do(ctx, method, path, nil, body, ct, out)
}

// CreateHost adds a host.
func (c *Client) CreateHost(ctx context.Context, req HostRequest) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "POST", "/api/v1/hosts", req, &h)
}

// ListHosts lists the hosts selector matches ("" for all).
func (c *Client) ListHosts(ctx context.Context, selector string) ([]fleet.Host, error) {
	var hs []fleet.Host
	return hs, c.do(ctx, "GET", "/api/v1/hosts", url.Values{"selector": {selector}}, nil, "", &hs)
}

// Host returns one host.
func (c *Client) Host(ctx context.Context, name string) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "GET", "/api/v1/hosts/"+url.PathEscape(name), nil, &h)
}

// UpdateHost changes the fields req sets.
func (c *Client) UpdateHost(ctx context.Context, name string, req HostUpdate) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "PATCH", "/api/v1/hosts/"+url.PathEscape(name), req, &h)
}

// DeleteHost removes a host and its history.
func (c *Client) DeleteHost(ctx context.Context, name string) error {
	return c.call(ctx, "DELETE", "/api/v1/hosts/"+url.PathEscape(name), nil, nil)
}

// LabelHost applies label changes ("k=v" sets, "k-" removes).
func (c *Client) LabelHost(ctx context.Context, name string, changes []string) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "POST", "/api/v1/hosts/"+url.PathEscape(name)+"/labels", LabelRequest{Changes: changes}, &h)
}

// SetBootMode sets a host's boot mode override: bios, uefi or auto.
func (c *Client) SetBootMode(ctx context.Context, name, mode string) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "POST", "/api/v1/hosts/"+url.PathEscape(name)+"/boot-mode", BootModeRequest{Mode: mode}, &h)
}

// History returns a host's assignment history, oldest first.
func (c *Client) History(ctx context.Context, name string) ([]fleet.HistoryEntry, error) {
	var hs []fleet.HistoryEntry
	return hs, c.call(ctx, "GET", "/api/v1/hosts/"+url.PathEscape(name)+"/history", nil, &hs)
}

// Reports returns a host's newest boot reports, oldest first.
func (c *Client) Reports(ctx context.Context, name string, limit int) ([]fleet.BootReport, error) {
	var rs []fleet.BootReport
	return rs, c.do(ctx, "GET", "/api/v1/hosts/"+url.PathEscape(name)+"/reports", url.Values{"limit": {strconv.Itoa(limit)}}, nil, "", &rs)
}

// Assign sets the desired image of hosts (or of the selector's hosts).
func (c *Client) Assign(ctx context.Context, req AssignRequest) ([]fleet.Host, error) {
	var hs []fleet.Host
	return hs, c.call(ctx, "POST", "/api/v1/assign", req, &hs)
}

// Revert assigns a host its previous image (or req.To).
func (c *Client) Revert(ctx context.Context, name string, req RevertRequest) (fleet.Host, error) {
	var h fleet.Host
	return h, c.call(ctx, "POST", "/api/v1/hosts/"+url.PathEscape(name)+"/revert", req, &h)
}

// Power runs a power action (status, on, off, cycle) on a host's BMC.
func (c *Client) Power(ctx context.Context, name, action string) (PowerResponse, error) {
	var p PowerResponse
	return p, c.call(ctx, "POST", "/api/v1/hosts/"+url.PathEscape(name)+"/power", PowerRequest{Action: action}, &p)
}

// ImportFiles are the files of an import; Kernel and Initrd may be nil.
type ImportFiles struct {
	Rootfs, Kernel, Initrd io.Reader
}

// ImportImage streams an image version to kilnd. The readers are consumed
// in order (rootfs, kernel, initrd); wrap them to show progress.
func (c *Client) ImportImage(ctx context.Context, ref, arch, cmdline string, files ImportFiles) (ImportResponse, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	written := make(chan struct{})
	go func() {
		defer close(written)
		pw.CloseWithError(writeImport(mw, importMeta{Ref: ref, Arch: arch, Cmdline: cmdline, Kernel: files.Kernel != nil, Initrd: files.Initrd != nil}, files))
	}()
	var out ImportResponse
	err := c.do(ctx, "POST", "/api/v1/images", nil, pr, mw.FormDataContentType(), &out)
	// Stop the writer (the server may have answered before reading it all)
	// and wait for it: the caller's readers are not used after we return.
	pr.CloseWithError(errors.New("request ended"))
	<-written
	return out, err
}

func writeImport(mw *multipart.Writer, meta importMeta, files ImportFiles) error {
	w, err := mw.CreateFormField("meta")
	if err != nil {
		return err
	}
	if err := json.NewEncoder(w).Encode(meta); err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		r    io.Reader
	}{{"rootfs", files.Rootfs}, {"kernel", files.Kernel}, {"initrd", files.Initrd}} {
		if f.r == nil {
			continue
		}
		w, err := mw.CreateFormFile(f.name, f.name)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, f.r); err != nil {
			return fmt.Errorf("reading %s: %w", f.name, err)
		}
	}
	return mw.Close()
}

// Images lists every image version.
func (c *Client) Images(ctx context.Context) ([]fleet.Image, error) {
	var is []fleet.Image
	return is, c.call(ctx, "GET", "/api/v1/images", nil, &is)
}

// Image returns one image (REF may be NAME@latest).
func (c *Client) Image(ctx context.Context, ref string) (fleet.Image, error) {
	var i fleet.Image
	return i, c.call(ctx, "GET", "/api/v1/images/"+url.PathEscape(ref), nil, &i)
}

// RemoveImage deletes an image version no host uses.
func (c *Client) RemoveImage(ctx context.Context, ref string) (RemoveResponse, error) {
	var r RemoveResponse
	return r, c.call(ctx, "DELETE", "/api/v1/images/"+url.PathEscape(ref), nil, &r)
}

// GC collects unused image versions beyond keep per name and orphan blobs.
func (c *Client) GC(ctx context.Context, keep int, dryRun bool) (imagestore.GCResult, error) {
	var r imagestore.GCResult
	return r, c.call(ctx, "POST", "/api/v1/images/gc", GCRequest{Keep: keep, DryRun: dryRun}, &r)
}

// Events lists events, newest limit, optionally of one host or rollout.
func (c *Client) Events(ctx context.Context, host, rollout string, limit int) ([]fleet.Event, error) {
	var es []fleet.Event
	q := url.Values{"host": {host}, "rollout": {rollout}, "limit": {strconv.Itoa(limit)}}
	return es, c.do(ctx, "GET", "/api/v1/events", q, nil, "", &es)
}

// Backup writes a consistent copy of kilnd's database to w.
func (c *Client) Backup(ctx context.Context, w io.Writer) error {
	return c.do(ctx, "GET", "/api/v1/backup", nil, nil, "", w)
}
