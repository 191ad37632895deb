package bootagent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrDigestMismatch is returned by VerifyDigest when the downloaded bytes do
// not hash to the expected digest; the message names both digests.
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrFetch is returned (wrapped) when the download gives up: a permanent
// HTTP status, too many failed attempts in a row, or the overall timeout.
var ErrFetch = errors.New("fetch failed")

// Fetcher downloads a blob into a file while hashing it, resuming a cut
// transfer with a Range request. Its zero value is ready to use with the
// documented defaults. A Fetcher may be used for one Fetch at a time.
type Fetcher struct {
	// Client is the HTTP client; nil means a client without an overall
	// timeout (Timeout bounds the whole download) that fails a connection
	// which sends nothing for 30 s.
	Client *http.Client
	// Retries is how many attempts in a row may fail without adding a byte
	// before Fetch gives up; 0 means 8. An attempt that makes progress
	// resets the count and the backoff.
	Retries int
	// Backoff is the wait after the first failed attempt, doubled after each
	// further one up to 16 times its value; 0 means 500 ms.
	Backoff time.Duration
	// Timeout bounds the whole download including retries; 0 means 30 min.
	Timeout time.Duration
	// Progress receives a progress line ("kiln-init: fetching 12.0 of 48.2
	// MiB (24%)") at most once per ProgressInterval; nil means none.
	Progress io.Writer
	// ProgressInterval is the minimum time between progress lines; 0 means 2 s.
	ProgressInterval time.Duration
	// IdleTimeout fails an attempt (to be resumed) when the server sends
	// nothing for this long; 0 means 30 s.
	IdleTimeout time.Duration
	// Logger receives one line per failed attempt; nil discards.
	Logger *slog.Logger
}

// FetchResult describes a completed download.
type FetchResult struct {
	// Bytes is the size of the downloaded file.
	Bytes int64
	// Digest is the sha256 of the file, "sha256:<hex>".
	Digest string
	// Duration is the wall time of the whole download.
	Duration time.Duration
	// Attempts counts HTTP requests made; Resumes those that continued a
	// partial transfer with 206 Partial Content.
	Attempts, Resumes int
}

// Rate returns the average speed in MiB/s.
func (r FetchResult) Rate() float64 {
	s := r.Duration.Seconds()
	if s <= 0 {
		return 0
	}
	return float64(r.Bytes) / (1 << 20) / s
}

// Summary renders the result as "48.2 MiB in 3.1s (15.5 MiB/s)".
func (r FetchResult) Summary() string {
	return fmt.Sprintf("%.1f MiB in %s (%.1f MiB/s)", float64(r.Bytes)/(1<<20), r.Duration.Round(100*time.Millisecond), r.Rate())
}

// VerifyDigest compares a computed digest with the expected one. A mismatch
// gives an error wrapping ErrDigestMismatch that names both.
func VerifyDigest(want, got string) error {
	if want != got {
		return fmt.Errorf("%w: expected %s, downloaded %s", ErrDigestMismatch, want, got)
	}
	return nil
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Fetch downloads url into the file at dst (created or truncated, mode
// 0600), hashing the bytes as they arrive. size is the expected size, used
// for progress and as a sanity bound; 0 means unknown. On a cut connection
// it asks for the rest with "Range: bytes=N-" and accepts only a 206 whose
// Content-Range starts at N; a 200 means the server ignored the range and
// the download starts over. 5xx, 408, 429 and network errors are retried with
// backoff; other statuses are permanent. The error never contains more of
// the URL than the caller passed in.
func (f *Fetcher) Fetch(ctx context.Context, url, dst string, size int64) (FetchResult, error) {
	start := time.Now()
	timeout := f.Timeout
	if timeout == 0 {
		timeout = 30 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return FetchResult{}, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer out.Close()

	st := &fetchState{
		f: f, out: out, h: sha256.New(), size: size, url: url,
		lastProgress: time.Now(),
	}
	retries := f.Retries
	if retries <= 0 {
		retries = 8
	}
	backoff0 := f.Backoff
	if backoff0 <= 0 {
		backoff0 = 500 * time.Millisecond
	}
	backoff := backoff0
	failures := 0
	var res FetchResult
	for {
		before := st.written
		res.Attempts++
		resumed, err := st.attempt(ctx)
		if resumed {
			res.Resumes++
		}
		if err == nil {
			break
		}
		var perm permanentError
		if errors.As(err, &perm) {
			return res, fmt.Errorf("%w: %w", ErrFetch, perm.error)
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("%w: after %d attempts, %d bytes: %w", ErrFetch, res.Attempts, st.written, context.Cause(ctx))
		}
		if st.written > before {
			failures, backoff = 0, backoff0
		}
		failures++
		f.logger().Warn("download attempt failed", "attempt", res.Attempts, "have_bytes", st.written, "err", err)
		if failures >= retries {
			return res, fmt.Errorf("%w: %d attempts in a row without progress: %w", ErrFetch, failures, err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("%w: after %d attempts, %d bytes: %w", ErrFetch, res.Attempts, st.written, context.Cause(ctx))
		case <-t.C:
		}
		backoff = min(backoff*2, 16*backoff0)
	}
	if err := out.Sync(); err != nil {
		return res, fmt.Errorf("%w: sync: %w", ErrFetch, err)
	}
	if err := out.Close(); err != nil {
		return res, fmt.Errorf("%w: close: %w", ErrFetch, err)
	}
	res.Bytes = st.written
	res.Digest = "sha256:" + hex.EncodeToString(st.h.Sum(nil))
	res.Duration = time.Since(start)
	return res, nil
}

func (f *Fetcher) logger() *slog.Logger {
	if f.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return f.Logger
}

type fetchState struct {
	f            *Fetcher
	out          *os.File
	h            hash.Hash
	written      int64
	size         int64
	url          string
	lastProgress time.Time

	defaultClient *http.Client
}

// restart throws away what was downloaded so far.
func (s *fetchState) restart() error {
	if _, err := s.out.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := s.out.Truncate(0); err != nil {
		return err
	}
	s.h = sha256.New()
	s.written = 0
	return nil
}

// attempt makes one request and copies what it gets. resumed reports
// whether the request continued a partial transfer (206).
func (s *fetchState) attempt(ctx context.Context) (resumed bool, err error) {
	idle := s.f.IdleTimeout
	if idle <= 0 {
		idle = 30 * time.Second
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errIdle := fmt.Errorf("no data for %s", idle)
	watchdog := time.AfterFunc(idle, func() { cancel(errIdle) })
	defer watchdog.Stop()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return false, permanentError{fmt.Errorf("bad URL: %w", err)}
	}
	if s.written > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", s.written))
	}
	resp, err := s.client().Do(req)
	if err != nil {
		if c := context.Cause(ctx); c == errIdle {
			return false, c
		}
		return false, err
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode == http.StatusOK:
		if s.written > 0 {
			s.f.logger().Info("server ignored the range request, starting over", "had_bytes", s.written)
			if err := s.restart(); err != nil {
				return false, permanentError{fmt.Errorf("truncate: %w", err)}
			}
		}
	case resp.StatusCode == http.StatusPartialContent && s.written > 0:
		first, err := parseContentRangeStart(resp.Header.Get("Content-Range"))
		if err != nil || first != s.written {
			// Not the piece we asked for: start over with a plain GET.
			s.f.logger().Warn("unexpected Content-Range, starting over", "content_range", resp.Header.Get("Content-Range"), "want_from", s.written)
			if err := s.restart(); err != nil {
				return false, permanentError{fmt.Errorf("truncate: %w", err)}
			}
			return false, fmt.Errorf("206 with Content-Range %q, asked from byte %d", resp.Header.Get("Content-Range"), s.written)
		}
		resumed = true
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && s.written > 0:
		if err := s.restart(); err != nil {
			return false, permanentError{fmt.Errorf("truncate: %w", err)}
		}
		return false, fmt.Errorf("HTTP %s", resp.Status)
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
		return false, fmt.Errorf("HTTP %s", resp.Status)
	default:
		return false, permanentError{fmt.Errorf("HTTP %s", resp.Status)}
	}

	buf := make([]byte, 256*1024)
	for {
		n, rerr := resp.Body.Read(buf)
		watchdog.Reset(idle)
		if n > 0 {
			if s.size > 0 && s.written+int64(n) > s.size {
				return resumed, permanentError{fmt.Errorf("server sent more than the expected %d bytes", s.size)}
			}
			if _, err := s.out.Write(buf[:n]); err != nil {
				return resumed, permanentError{fmt.Errorf("write: %w", err)}
			}
			s.h.Write(buf[:n])
			s.written += int64(n)
			s.progress()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if c := context.Cause(ctx); c == errIdle {
				return resumed, c
			}
			return resumed, rerr
		}
	}
	if s.size > 0 && s.written < s.size {
		return resumed, fmt.Errorf("%w: body ended at %d of %d bytes", io.ErrUnexpectedEOF, s.written, s.size)
	}
	return resumed, nil
}

func (s *fetchState) client() *http.Client {
	if s.f.Client != nil {
		return s.f.Client
	}
	if s.defaultClient == nil {
		s.defaultClient = &http.Client{Transport: &http.Transport{
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       30 * time.Second,
			DisableCompression:    true,
		}}
	}
	return s.defaultClient
}

func (s *fetchState) progress() {
	if s.f.Progress == nil {
		return
	}
	iv := s.f.ProgressInterval
	if iv <= 0 {
		iv = 2 * time.Second
	}
	if time.Since(s.lastProgress) < iv {
		return
	}
	s.lastProgress = time.Now()
	mib := float64(s.written) / (1 << 20)
	if s.size > 0 {
		fmt.Fprintf(s.f.Progress, "kiln-init: fetching %.1f of %.1f MiB (%d%%)\n", mib, float64(s.size)/(1<<20), s.written*100/s.size)
	} else {
		fmt.Fprintf(s.f.Progress, "kiln-init: fetching %.1f MiB\n", mib)
	}
}

// parseContentRangeStart returns the first byte of "bytes FIRST-LAST/TOTAL".
func parseContentRangeStart(v string) (int64, error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, fmt.Errorf("not a byte range: %q", v)
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, fmt.Errorf("not a byte range: %q", v)
	}
	return strconv.ParseInt(strings.TrimSpace(first), 10, 64)
}
