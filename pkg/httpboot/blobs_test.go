package httpboot

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

func TestBlobs(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 100_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	d := putBlob(t, dir, data)
	etag := `"` + string(d) + `"`
	hosts := newFakeHosts(nil, nil)
	h, reg := newTestHandler(t, Config{}, hosts, dirBlobs{dir}, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	blobURL := srv.URL + "/blobs/sha256/" + d.Hex()

	tests := []struct {
		name    string
		method  string
		url     string
		headers map[string]string
		status  int
		body    []byte // nil: not checked
		check   map[string]string
	}{
		{name: "full get", method: "GET", url: blobURL, status: 200, body: data,
			check: map[string]string{"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable", "Content-Type": "application/octet-stream", "Content-Length": "100000", "Accept-Ranges": "bytes"}},
		{name: "head", method: "HEAD", url: blobURL, status: 200, body: []byte{},
			check: map[string]string{"ETag": etag, "Content-Length": "100000"}},
		{name: "range", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=1000-1999"}, status: 206, body: data[1000:2000],
			check: map[string]string{"Content-Range": "bytes 1000-1999/100000", "Content-Length": "1000", "ETag": etag}},
		{name: "open-ended range resumes", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=99990-"}, status: 206, body: data[99990:],
			check: map[string]string{"Content-Range": "bytes 99990-99999/100000"}},
		{name: "suffix range", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=-10"}, status: 206, body: data[len(data)-10:],
			check: map[string]string{"Content-Range": "bytes 99990-99999/100000"}},
		{name: "unsatisfiable range", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=100000-"}, status: 416,
			check: map[string]string{"Content-Range": "bytes */100000"}},
		{name: "if-none-match", method: "GET", url: blobURL, headers: map[string]string{"If-None-Match": etag}, status: 304, body: []byte{},
			check: map[string]string{"ETag": etag}},
		{name: "if-none-match other", method: "GET", url: blobURL, headers: map[string]string{"If-None-Match": `"sha256:00"`}, status: 200, body: data},
		{name: "if-range match", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=0-9", "If-Range": etag}, status: 206, body: data[:10]},
		{name: "if-range mismatch sends all", method: "GET", url: blobURL, headers: map[string]string{"Range": "bytes=0-9", "If-Range": `"sha256:00"`}, status: 200, body: data},
		{name: "uppercase hex", method: "GET", url: srv.URL + "/blobs/sha256/" + strings.ToUpper(d.Hex()), status: 400},
		{name: "short hex", method: "GET", url: srv.URL + "/blobs/sha256/abcd", status: 400},
		{name: "non-hex", method: "GET", url: srv.URL + "/blobs/sha256/" + strings.Repeat("g", 64), status: 400},
		{name: "traversal", method: "GET", url: srv.URL + "/blobs/sha256/..%2F..%2Fetc%2Fpasswd", status: 400},
		{name: "missing blob", method: "GET", url: srv.URL + "/blobs/sha256/" + digestOf("nope").Hex(), status: 404},
		{name: "post refused", method: "POST", url: blobURL, status: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, body)
			}
			if tc.body != nil && !bytes.Equal(body, tc.body) {
				t.Errorf("body: %d bytes, want %d bytes (content differs)", len(body), len(tc.body))
			}
			for k, v := range tc.check {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
		})
	}

	// Bytes served are counted, also through the sendfile path.
	before := counterValue(t, reg, "kiln_httpboot_response_bytes_total", map[string]string{"endpoint": epBlob})
	resp, body := get(t, "GET", blobURL, "")
	if resp.StatusCode != 200 || len(body) != len(data) {
		t.Fatalf("get: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := counterValue(t, reg, "kiln_httpboot_response_bytes_total", map[string]string{"endpoint": epBlob}) - before; got != float64(len(data)) {
		t.Errorf("bytes counted %v, want %d", got, len(data))
	}
	if got := counterValue(t, reg, "kiln_httpboot_requests_total", map[string]string{"endpoint": epBlob, "code": "4xx"}); got != 6 {
		t.Errorf("requests{blob,4xx} = %v, want 6 (400 x4, 404, 416; the 405 is the mux's and not counted)", got)
	}
}

func TestBlobStoreError(t *testing.T) {
	h, _ := newTestHandler(t, Config{}, newFakeHosts(nil, nil), errorBlobs{}, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, body := get(t, "GET", srv.URL+"/blobs/sha256/"+digestOf("x").Hex(), "")
	if resp.StatusCode != 500 || strings.Contains(body, "fire") {
		t.Errorf("status %d body %q, want 500 without the internal error", resp.StatusCode, body)
	}
}

func TestFirmware(t *testing.T) {
	efi := bytes.Repeat([]byte("MZ efi"), 1000)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "ipxe.efi"), efi, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	mapFS := fstest.MapFS{
		"undionly.kpxe": {Data: []byte("kpxe bytes")},
		"ipxe.efi":      {Data: efi},
		"sub/x.efi":     {Data: []byte("nested")},
	}
	for name, fw := range map[string]fs.FS{"os.DirFS": os.DirFS(dir), "MapFS": mapFS} {
		t.Run(name, func(t *testing.T) {
			h, _ := newTestHandler(t, Config{}, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, fw)
			srv := httptest.NewServer(h)
			defer srv.Close()
			for _, tc := range []struct {
				path, method string
				status       int
				ctype        string
				body         []byte
				headers      map[string]string
			}{
				{path: "/firmware/ipxe.efi", method: "GET", status: 200, ctype: "application/efi", body: efi},
				{path: "/firmware/ipxe.efi", method: "HEAD", status: 200, ctype: "application/efi", body: []byte{}},
				{path: "/firmware/ipxe.efi", method: "GET", status: 206, body: efi[6:12], headers: map[string]string{"Range": "bytes=6-11"}},
				{path: "/firmware/nope.efi", method: "GET", status: 404},
				{path: "/firmware/sub", method: "GET", status: 404},
				{path: "/firmware/sub%2Fx.efi", method: "GET", status: 404},
				{path: "/firmware/..%2F" + filepath.Base(filepath.Dir(secret)) + "%2Fsecret", method: "GET", status: 404},
				{path: "/firmware/%2E%2E", method: "GET", status: 404},
				{path: "/firmware/", method: "GET", status: 404},
			} {
				t.Run(tc.method+" "+tc.path, func(t *testing.T) {
					req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
					for k, v := range tc.headers {
						req.Header.Set(k, v)
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					body, _ := io.ReadAll(resp.Body)
					if resp.StatusCode != tc.status {
						t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
					}
					if bytes.Contains(body, []byte("s3cret")) {
						t.Fatal("served a file outside the firmware FS")
					}
					if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
						t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.ctype)
					}
					if tc.body != nil && !bytes.Equal(body, tc.body) {
						t.Errorf("body %d bytes, want %d", len(body), len(tc.body))
					}
				})
			}
		})
	}
	t.Run("kpxe type", func(t *testing.T) {
		if got := firmwareType("undionly.kpxe"); got != "application/octet-stream" {
			t.Errorf("firmwareType = %q", got)
		}
	})
	t.Run("nil fs", func(t *testing.T) {
		h, _ := newTestHandler(t, Config{}, newFakeHosts(nil, nil), dirBlobs{t.TempDir()}, nil)
		srv := httptest.NewServer(h)
		defer srv.Close()
		if resp, _ := get(t, "GET", srv.URL+"/firmware/ipxe.efi", ""); resp.StatusCode != 404 {
			t.Errorf("status %d, want 404", resp.StatusCode)
		}
	})
}
