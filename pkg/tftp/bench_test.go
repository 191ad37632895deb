package tftp

import (
	"bytes"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"
)

// BenchmarkTransfer1MiB fetches a 1 MiB file over loopback with pin/tftp's
// client at blksize 1468; -benchmem and MB/s come from b.SetBytes.
func BenchmarkTransfer1MiB(b *testing.B) {
	file := pattern(1 << 20)
	r := start(b, Config{Root: testRoot(map[string][]byte{"1m.bin": file})})
	c, err := pintftp.NewClient(r.addr.String())
	if err != nil {
		b.Fatal(err)
	}
	c.SetBlockSize(1468)
	c.SetTimeout(time.Second)
	var buf bytes.Buffer
	b.SetBytes(int64(len(file)))
	b.ResetTimer()
	for b.Loop() {
		buf.Reset()
		wt, err := c.Receive("1m.bin", "octet")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := wt.WriteTo(&buf); err != nil {
			b.Fatal(err)
		}
		if buf.Len() != len(file) {
			b.Fatalf("got %d bytes", buf.Len())
		}
	}
}
