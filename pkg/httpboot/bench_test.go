package httpboot

import (
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// BenchmarkBlobDownload downloads a 64 MiB blob over loopback from parallel
// clients. Sub-benchmarks: the instrumented Handler (sendfile through the
// recorder's ReadFrom), plain http.ServeContent without any wrapper (the
// baseline), and the Handler behind a wrapper that hides ReadFrom (what a
// careless metrics wrapper costs: a userspace copy). MB/s is per download.
func BenchmarkBlobDownload(b *testing.B) {
	const size = 64 << 20
	dir := b.TempDir()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	d := putBlob(b, dir, data)
	h, _ := newTestHandler(b, Config{}, newFakeHosts(nil, nil), dirBlobs{dir}, nil)
	bare := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(dir + "/" + d.Hex())
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	})
	hide := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(plainWriter{w}, r) })
	for _, bc := range []struct {
		name string
		h    http.Handler
	}{{"handler", h}, {"bare-servecontent", bare}, {"no-readerfrom", hide}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := httptest.NewServer(bc.h)
			defer srv.Close()
			url := srv.URL + "/blobs/sha256/" + d.Hex()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			b.SetBytes(size)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := client.Get(url)
					if err != nil {
						b.Error(err)
						return
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err != nil || n != size {
						b.Errorf("read %d bytes: %v", n, err)
						return
					}
				}
			})
		})
	}
}
