package bootagent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// blobServer serves blob with configurable misbehaviour and records the
// Range headers it was asked for.
type blobServer struct {
	blob []byte
	// cutAfter: for the first cuts responses, send at most this many body
	// bytes of the response and then drop the connection.
	cutAfter, cuts int
	// ignoreRange answers every request with 200 and the whole blob.
	ignoreRange bool
	// fail5xx answers the first fail5xx requests with 503.
	fail5xx int
	// status, when set, is the answer to every request.
	status int
	// wrongRange answers range requests with a 206 starting at byte 0.
	wrongRange bool
	// corrupt flips a byte of what is served.
	corrupt bool

	mu     sync.Mutex
	reqs   int
	ranges []string
}

func (s *blobServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs++
	n := s.reqs
	s.ranges = append(s.ranges, r.Header.Get("Range"))
	s.mu.Unlock()
	if s.status != 0 {
		http.Error(w, "nope", s.status)
		return
	}
	if n <= s.fail5xx {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	blob := s.blob
	if s.corrupt {
		blob = bytes.Clone(blob)
		blob[len(blob)/2] ^= 0xff
	}
	from := 0
	status := http.StatusOK
	if rg := r.Header.Get("Range"); rg != "" && !s.ignoreRange {
		v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || v >= len(blob) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		from, status = v, http.StatusPartialContent
		if s.wrongRange {
			from = 0
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(blob)-1, len(blob)))
	}
	body := blob[from:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if n-s.fail5xx <= s.cuts && s.cutAfter < len(body) {
		w.Write(body[:s.cutAfter])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drop the connection mid-body
	}
	w.Write(body)
}

func testBlob(n int) ([]byte, string) {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}

func TestFetch(t *testing.T) {
	blob, digest := testBlob(3<<20 + 12345)
	tests := []struct {
		name        string
		srv         *blobServer
		size        int64
		retries     int
		wantErr     error // from Fetch
		wantErrHas  string
		wantVerify  error // from VerifyDigest
		wantResumes int
		wantReqs    int
		wantRanges  []string
	}{
		{name: "plain", srv: &blobServer{}, size: int64(len(blob)), wantReqs: 1, wantRanges: []string{""}},
		{name: "plain without size", srv: &blobServer{}, wantReqs: 1},
		{name: "cut twice then resume", srv: &blobServer{cutAfter: 1 << 20, cuts: 2}, size: int64(len(blob)),
			wantResumes: 2, wantReqs: 3, wantRanges: []string{"", "bytes=1048576-", "bytes=2097152-"}},
		{name: "cut without known size resumes", srv: &blobServer{cutAfter: 1 << 20, cuts: 1}, wantResumes: 1, wantReqs: 2},
		{name: "server ignores range: start over", srv: &blobServer{cutAfter: 1 << 20, cuts: 1, ignoreRange: true}, size: int64(len(blob)),
			wantReqs: 2, wantRanges: []string{"", "bytes=1048576-"}},
		{name: "206 from the wrong offset: start over", srv: &blobServer{cutAfter: 1 << 20, cuts: 1, wrongRange: true}, size: int64(len(blob)),
			wantReqs: 3, wantRanges: []string{"", "bytes=1048576-", ""}},
		{name: "5xx then success", srv: &blobServer{fail5xx: 2}, size: int64(len(blob)), wantReqs: 3},
		{name: "5xx forever gives up", srv: &blobServer{fail5xx: 1000}, retries: 3, wantErr: ErrFetch, wantErrHas: "503", wantReqs: 3},
		{name: "404 is permanent", srv: &blobServer{status: http.StatusNotFound}, wantErr: ErrFetch, wantErrHas: "404", wantReqs: 1},
		{name: "wrong bytes fail verification", srv: &blobServer{corrupt: true}, size: int64(len(blob)), wantVerify: ErrDigestMismatch, wantReqs: 1},
		{name: "longer than kiln.size", srv: &blobServer{}, size: int64(len(blob)) - 10, wantErr: ErrFetch, wantErrHas: "more than", wantReqs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.srv.blob = blob
			ts := httptest.NewServer(tt.srv)
			defer ts.Close()
			dst := filepath.Join(t.TempDir(), "rootfs.squashfs")
			var progress bytes.Buffer
			f := &Fetcher{Retries: tt.retries, Backoff: time.Millisecond, Progress: &progress, ProgressInterval: time.Nanosecond}
			res, err := f.Fetch(context.Background(), ts.URL+"/blobs/sha256/x", dst, tt.size)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantErrHas) {
					t.Fatalf("err = %v, want %v with %q", err, tt.wantErr, tt.wantErrHas)
				}
			} else {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				verr := VerifyDigest(digest, res.Digest)
				if tt.wantVerify != nil {
					if !errors.Is(verr, tt.wantVerify) || !strings.Contains(verr.Error(), digest) || !strings.Contains(verr.Error(), res.Digest) {
						t.Fatalf("VerifyDigest = %v, want %v naming %s and %s", verr, tt.wantVerify, digest, res.Digest)
					}
				} else {
					if verr != nil {
						t.Fatal(verr)
					}
					got, err := os.ReadFile(dst)
					if err != nil || !bytes.Equal(got, blob) {
						t.Fatalf("file differs from blob (len %d, err %v)", len(got), err)
					}
					if res.Bytes != int64(len(blob)) {
						t.Errorf("Bytes = %d", res.Bytes)
					}
					if !strings.Contains(progress.String(), "kiln-init: fetching ") {
						t.Errorf("no progress line in %q", progress.String())
					}
				}
				if res.Resumes != tt.wantResumes {
					t.Errorf("Resumes = %d, want %d", res.Resumes, tt.wantResumes)
				}
			}
			tt.srv.mu.Lock()
			defer tt.srv.mu.Unlock()
			if tt.srv.reqs != tt.wantReqs {
				t.Errorf("server saw %d requests, want %d (ranges %q)", tt.srv.reqs, tt.wantReqs, tt.srv.ranges)
			}
			if tt.wantRanges != nil && strings.Join(tt.srv.ranges, ",") != strings.Join(tt.wantRanges, ",") {
				t.Errorf("Range headers %q, want %q", tt.srv.ranges, tt.wantRanges)
			}
		})
	}
}

func TestFetchStalledServerIsResumed(t *testing.T) {
	blob, digest := testBlob(256 << 10)
	var mu sync.Mutex
	reqs := 0
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reqs++
		n := reqs
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Content-Length", strconv.Itoa(len(blob)))
			w.WriteHeader(http.StatusOK)
			w.Write(blob[:1000])
			w.(http.Flusher).Flush()
			<-release // stall until the test ends
			return
		}
		from, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(r.Header.Get("Range"), "bytes="), "-"))
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(blob)-1, len(blob)))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(blob[from:])
	}))
	defer ts.Close()
	defer close(release)
	f := &Fetcher{Backoff: time.Millisecond, IdleTimeout: 200 * time.Millisecond}
	res, err := f.Fetch(context.Background(), ts.URL, filepath.Join(t.TempDir(), "f"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyDigest(digest, res.Digest); err != nil {
		t.Fatal(err)
	}
	if res.Resumes != 1 || res.Attempts != 2 {
		t.Errorf("attempts %d resumes %d, want 2 and 1", res.Attempts, res.Resumes)
	}
}

func TestFetchOverallTimeout(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "busy", http.StatusServiceUnavailable)
	}))
	defer ts.Close()
	f := &Fetcher{Retries: 1000, Backoff: 10 * time.Millisecond, Timeout: 300 * time.Millisecond}
	_, err := f.Fetch(context.Background(), ts.URL, filepath.Join(t.TempDir(), "f"), 0)
	if !errors.Is(err, ErrFetch) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrFetch and DeadlineExceeded", err)
	}
}

func BenchmarkFetch(b *testing.B) {
	blob, digest := testBlob(32 << 20)
	ts := httptest.NewServer(&blobServer{blob: blob})
	defer ts.Close()
	dst := filepath.Join(b.TempDir(), "f")
	b.SetBytes(int64(len(blob)))
	for b.Loop() {
		res, err := (&Fetcher{}).Fetch(context.Background(), ts.URL, dst, int64(len(blob)))
		if err != nil || res.Digest != digest {
			b.Fatal(err, res.Digest)
		}
	}
}
