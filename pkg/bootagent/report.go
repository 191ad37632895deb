package bootagent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// ErrUnknownPhase is returned (wrapped) for a phase fleet.ValidPhase refuses.
var ErrUnknownPhase = errors.New("unknown boot phase")

// ErrReportRejected is returned (wrapped, with the HTTP status) when kilnd
// answers a report with anything but 204. It is not retried.
var ErrReportRejected = errors.New("boot report rejected")

// ErrReportUnsent is returned (wrapped, with the last error) when a report
// could not be delivered within the Reporter's attempts.
var ErrReportUnsent = errors.New("boot report not delivered")

// Report is the JSON body of POST /boot/report.
type Report struct {
	Phase   string `json:"phase"`
	Digest  string `json:"digest,omitempty"`
	Message string `json:"message,omitempty"`
}

// Reporter sends boot reports to kilnd. Its zero value is not usable: set
// Server and Token. Send is safe for concurrent use.
type Reporter struct {
	// Server is kilnd's base URL, e.g. "http://198.18.0.1:8080".
	Server string
	// Token is the boot token, sent as "Authorization: Bearer <token>". It
	// never appears in logs or errors.
	Token string
	// Client is the HTTP client; nil means a client without proxy.
	Client *http.Client
	// Attempts is how many times a report is tried on network errors and
	// 5xx answers; 0 means 3.
	Attempts int
	// Timeout bounds each attempt; 0 means 5 s.
	Timeout time.Duration
	// Backoff is the wait between attempts, doubled each time; 0 means 1 s.
	Backoff time.Duration
	// Logger gets one line per failed attempt; nil discards.
	Logger *slog.Logger
}

// Send posts r. It returns nil once kilnd answered 204, an error wrapping
// ErrReportRejected for any other answer (not retried, except 5xx), and an
// error wrapping ErrReportUnsent when every attempt failed. It never blocks
// longer than Attempts × (Timeout + Backoff×2^n) or the context allows.
func (rp *Reporter) Send(ctx context.Context, r Report) error {
	if !fleet.ValidPhase(r.Phase) {
		return fmt.Errorf("%w %q", ErrUnknownPhase, r.Phase)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	attempts := rp.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	timeout := rp.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	backoff := rp.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	client := rp.Client
	if client == nil {
		client = &http.Client{Transport: &http.Transport{}}
	}
	url := strings.TrimRight(rp.Server, "/") + "/boot/report"
	log := rp.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var last error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w: %s: %w", ErrReportUnsent, r.Phase, ctx.Err())
			case <-t.C:
			}
			backoff *= 2
		}
		status, err := rp.post(ctx, client, url, body, timeout)
		switch {
		case err == nil && status == http.StatusNoContent:
			return nil
		case err == nil && status < 500:
			return fmt.Errorf("%w: %s: kilnd answered %d %s", ErrReportRejected, r.Phase, status, http.StatusText(status))
		case err == nil:
			last = fmt.Errorf("kilnd answered %d %s", status, http.StatusText(status))
		default:
			last = err
		}
		log.Warn("boot report attempt failed", "phase", r.Phase, "attempt", i+1, "err", last)
	}
	return fmt.Errorf("%w: %s after %d attempts: %w", ErrReportUnsent, r.Phase, attempts, last)
}

func (rp *Reporter) post(ctx context.Context, client *http.Client, url string, body []byte, timeout time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+rp.Token)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

// BootInfo is /run/kiln/boot.json, the boot identity kiln-init leaves for
// the image (docs/boot-protocol.md §3).
type BootInfo struct {
	Host   string `json:"host"`
	Image  string `json:"image"`
	Digest string `json:"digest"`
	Server string `json:"server"`
	Token  string `json:"token"`
	MAC    string `json:"mac"`
}

// BootInfoFor returns the boot identity of a parsed command line.
func BootInfoFor(c Config) BootInfo {
	return BootInfo{
		Host:   c.Host,
		Image:  c.Image,
		Digest: c.Digest,
		Server: c.Server.String(),
		Token:  c.Token,
		MAC:    c.MAC.String(),
	}
}

// LogValue implements slog.LogValuer; it leaves out the token.
func (b BootInfo) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", b.Host), slog.String("image", b.Image), slog.String("digest", b.Digest), slog.String("server", b.Server))
}

// WriteBootInfo writes b as JSON to path (mode 0600, since it holds the
// token), creating the parent directory; it replaces the file atomically.
func WriteBootInfo(path string, b BootInfo) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return fmt.Errorf("encode boot.json: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write boot.json: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write boot.json: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write boot.json: %w", err)
	}
	return nil
}

// ReadBootInfo reads boot.json and checks that it names a server and a token.
func ReadBootInfo(path string) (BootInfo, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return BootInfo{}, fmt.Errorf("read boot.json: %w", err)
	}
	var b BootInfo
	if err := json.Unmarshal(data, &b); err != nil {
		return BootInfo{}, fmt.Errorf("parse %s: %w", path, err)
	}
	if b.Server == "" {
		return BootInfo{}, fmt.Errorf("parse %s: no server", path)
	}
	if b.Token == "" {
		return BootInfo{}, fmt.Errorf("parse %s: no token", path)
	}
	return b, nil
}
