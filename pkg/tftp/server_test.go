package tftp

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/immutableinfra/kiln/firmware"
	pintftp "github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var firmwareNames = []string{firmware.BIOS, firmware.EFIx64, firmware.SNPx64}

// TestPinClient fetches every firmware file with pin/tftp's client at each
// blksize and checks content and tsize.
func TestPinClient(t *testing.T) {
	r := start(t, Config{Root: firmware.FS(), MaxBlockSize: 8192})
	for _, name := range firmwareNames {
		want, err := fs.ReadFile(firmware.FS(), name)
		if err != nil {
			t.Fatal(err)
		}
		for _, blk := range []int{0, 512, 1468, 8192} {
			t.Run(name+"/blksize="+strconv.Itoa(blk), func(t *testing.T) {
				c, err := pintftp.NewClient(r.addr.String())
				if err != nil {
					t.Fatal(err)
				}
				c.SetTimeout(2 * time.Second)
				if blk != 0 {
					c.SetBlockSize(blk)
				}
				c.RequestTSize(true)
				wt, err := c.Receive(name, "octet")
				if err != nil {
					t.Fatal(err)
				}
				size, ok := wt.(interface{ Size() (int64, bool) }).Size()
				if !ok || size != int64(len(want)) {
					t.Errorf("tsize = %d, %v; want %d", size, ok, len(want))
				}
				var buf bytes.Buffer
				n, err := wt.WriteTo(&buf)
				if err != nil {
					t.Fatal(err)
				}
				if n != int64(len(want)) || !bytes.Equal(buf.Bytes(), want) {
					t.Fatalf("got %d bytes, want %d identical bytes", n, len(want))
				}
			})
		}
	}
	waitFor(t, "transfers accounted", func() bool { return testutil.ToFloat64(r.srv.m.inflight) == 0 })
	if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(OutcomeOK)); got != float64(len(firmwareNames)*4) {
		t.Errorf("requests{ok} = %v, want %d", got, len(firmwareNames)*4)
	}
}

// TestNegotiation checks the OACK on the wire: blksize is clamped to
// MaxBlockSize, tsize carries the real size, unknown options are ignored.
func TestNegotiation(t *testing.T) {
	file := pattern(100_000)
	tests := []struct {
		name     string
		maxBlock int
		opts     []string
		want     map[string]string // nil: no OACK expected
	}{
		{"no options", 0, nil, nil},
		{"blksize 512", 0, []string{"blksize", "512"}, map[string]string{"blksize": "512"}},
		{"blksize 1468", 0, []string{"blksize", "1468"}, map[string]string{"blksize": "1468"}},
		{"blksize 8192 clamped to default", 0, []string{"blksize", "8192"}, map[string]string{"blksize": "1468"}},
		{"blksize 8192 allowed", 8192, []string{"blksize", "8192"}, map[string]string{"blksize": "8192"}},
		{"blksize clamped to 512", 512, []string{"blksize", "1468"}, map[string]string{"blksize": "512"}},
		{"upper-case option names", 0, []string{"BLKSIZE", "1024", "TSize", "0"}, map[string]string{"blksize": "1024", "tsize": "100000"}},
		{"tsize only", 0, []string{"tsize", "0"}, map[string]string{"tsize": "100000"}},
		{"timeout and windowsize ignored", 0, []string{"timeout", "3", "windowsize", "8", "blksize", "1468"}, map[string]string{"blksize": "1468"}},
		{"garbage blksize ignored", 0, []string{"blksize", "huge", "tsize", "0"}, map[string]string{"tsize": "100000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, Config{Root: testRoot(map[string][]byte{"f.bin": file}), MaxBlockSize: tt.maxBlock})
			c := newRaw(t)
			got, oack := c.fetch(r.addr, "f.bin", tt.opts...)
			if !bytes.Equal(got, file) {
				t.Fatalf("content differs: got %d bytes", len(got))
			}
			if tt.want == nil {
				if oack != nil {
					t.Fatalf("unexpected OACK %v", oack)
				}
				return
			}
			if len(oack) != len(tt.want) {
				t.Fatalf("OACK %v, want %v", oack, tt.want)
			}
			for k, v := range tt.want {
				if oack[k] != v {
					t.Fatalf("OACK %v, want %v", oack, tt.want)
				}
			}
		})
	}
}

// TestRefusals checks each refusal on the wire: the error code, that the
// transfer never starts, the metrics, and that the server keeps serving.
func TestRefusals(t *testing.T) {
	root := testRoot(map[string][]byte{
		"ok.bin":         []byte("fine"),
		"dir/nested.bin": []byte("nested"),
		"Case.bin":       []byte("case"),
	})
	long := strings.Repeat("a", 256)
	tests := []struct {
		name     string
		pkt      []byte
		code     uint16
		outcome  string
		reason   string // "" for not_found
		noAnswer bool
	}{
		{"write request", rq(2, "ok.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonWrite, false},
		{"write request new file", rq(2, "new.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonWrite, false},
		{"dotdot", rq(1, "../etc/passwd", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"dotdot inside", rq(1, "dir/../ok.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"dotdot after slash", rq(1, "/../ok.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"absolute double slash", rq(1, "//etc/passwd", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"absolute host path", rq(1, "/etc/passwd", "octet"), codeFileNotFound, OutcomeNotFound, "", false},
		{"backslash", rq(1, `dir\nested.bin`, "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"backslash dotdot", rq(1, `..\ok.bin`, "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"empty name", rq(1, "", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"only slash", rq(1, "/", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"dot", rq(1, ".", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"trailing slash", rq(1, "dir/", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"double inner slash", rq(1, "dir//nested.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"256 bytes", rq(1, long, "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"control char", rq(1, "ok\x01.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"invalid utf8", rq(1, "ok\xff.bin", "octet"), codeAccessViolation, OutcomeRefused, ReasonBadName, false},
		{"NUL inside name", append(append([]byte{0, 1}, "ok\x00.bin\x00"...), "octet\x00"...), codeIllegalOperation, OutcomeRefused, ReasonMalformed, false},
		{"missing mode", append([]byte{0, 1}, "ok.bin\x00"...), codeIllegalOperation, OutcomeRefused, ReasonMalformed, false},
		{"no terminating NUL", append([]byte{0, 1}, "ok.bin\x00octet"...), codeIllegalOperation, OutcomeRefused, ReasonMalformed, false},
		{"mail mode", rq(1, "ok.bin", "mail"), codeIllegalOperation, OutcomeRefused, ReasonMode, false},
		{"missing file", rq(1, "nope.bin", "octet"), codeFileNotFound, OutcomeNotFound, "", false},
		{"directory", rq(1, "dir", "octet"), codeFileNotFound, OutcomeNotFound, "", false},
		{"case folded", rq(1, "case.bin", "octet"), codeFileNotFound, OutcomeNotFound, "", false},
		{"firmware case folded", rq(1, "IPXE.EFI", "octet"), codeFileNotFound, OutcomeNotFound, "", false},
		{"stray ACK", ack(1), 0, "", "", true},
		{"one byte", []byte{1}, 0, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := start(t, Config{Root: root})
			c := newRaw(t)
			c.send(tt.pkt, r.addr)
			if tt.noAnswer {
				if p, _, err := c.tryRecv(300 * time.Millisecond); err == nil {
					t.Fatalf("unexpected answer % x", p)
				}
			} else {
				p, from := c.recv()
				code, msg, ok := p.errCode()
				if !ok {
					t.Fatalf("want ERROR %d, got % x", tt.code, p)
				}
				if code != tt.code {
					t.Fatalf("error code %d (%q), want %d", code, msg, tt.code)
				}
				if from.Port != r.addr.Port {
					t.Errorf("refusal from port %d, want the listening port %d", from.Port, r.addr.Port)
				}
				if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(tt.outcome)); got != 1 {
					t.Errorf("requests{%s} = %v, want 1", tt.outcome, got)
				}
				if tt.reason != "" {
					if got := testutil.ToFloat64(r.srv.m.refused.WithLabelValues(tt.reason)); got != 1 {
						t.Errorf("refused{%s} = %v, want 1", tt.reason, got)
					}
				}
			}
			if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(OutcomeOK)); got != 0 {
				t.Errorf("requests{ok} = %v, want 0", got)
			}
			// Still serving.
			got, _ := newRaw(t).fetch(r.addr, "/dir/nested.bin")
			if string(got) != "nested" {
				t.Fatalf("after refusal: got %q", got)
			}
		})
	}
}

// TestPinClientWriteRefused checks that a real client's upload fails and
// nothing is written.
func TestPinClientWriteRefused(t *testing.T) {
	r := start(t, Config{Root: firmware.FS()})
	c, err := pintftp.NewClient(r.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(1)
	_, err = c.Send("ipxe.efi", "octet")
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Send = %v, want a read-only error", err)
	}
}

// TestTransferMetrics checks bytes, duration and in-flight after transfers.
func TestTransferMetrics(t *testing.T) {
	file := pattern(70_000)
	r := start(t, Config{Root: testRoot(map[string][]byte{"f": file})})
	for range 3 {
		newRaw(t).fetch(r.addr, "f", "blksize", "1468")
	}
	waitFor(t, "in-flight back to 0", func() bool { return testutil.ToFloat64(r.srv.m.inflight) == 0 })
	if got := testutil.ToFloat64(r.srv.m.bytes); got != 3*70_000 {
		t.Errorf("sent bytes = %v, want %d", got, 3*70_000)
	}
	if got := testutil.CollectAndCount(r.srv.m.duration); got != 1 {
		t.Errorf("duration series = %d", got)
	}
	if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(OutcomeOK)); got != 3 {
		t.Errorf("requests{ok} = %v, want 3", got)
	}
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if mf.GetName() == "kiln_tftp_transfer_duration_seconds" {
			if c := mf.GetMetric()[0].GetHistogram().GetSampleCount(); c != 3 {
				t.Errorf("duration sample count = %d, want 3", c)
			}
		}
	}
	for _, n := range []string{"kiln_tftp_requests_total", "kiln_tftp_refused_total", "kiln_tftp_sent_bytes_total", "kiln_tftp_transfer_duration_seconds", "kiln_tftp_transfers_in_flight"} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
}

// waitFor polls cond for up to 10s; it bounds waiting for the server's
// goroutines to finish bookkeeping, it does not measure speed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMaxConcurrent holds transfers open by not acking, checks the next
// request is refused as busy, then that a freed slot is reusable.
func TestMaxConcurrent(t *testing.T) {
	r := start(t, Config{Root: testRoot(map[string][]byte{"f": pattern(5000)}), MaxConcurrent: 2, Timeout: 5 * time.Second})
	type held struct {
		c    *raw
		port *net.UDPAddr
	}
	var hs []held
	for range 2 {
		c := newRaw(t)
		c.send(rq(1, "f", "octet"), r.addr)
		p, from := c.recv()
		if n, _, ok := p.data(); !ok || n != 1 {
			t.Fatalf("want DATA 1, got % x", p)
		}
		hs = append(hs, held{c, from})
	}
	if got := testutil.ToFloat64(r.srv.m.inflight); got != 2 {
		t.Fatalf("in flight = %v, want 2", got)
	}
	c := newRaw(t)
	c.send(rq(1, "f", "octet"), r.addr)
	p, _ := c.recv()
	if code, msg, ok := p.errCode(); !ok || code != codeNotDefined || !strings.Contains(msg, "busy") {
		t.Fatalf("third transfer: got % x, want ERROR 0 busy", p)
	}
	if got := testutil.ToFloat64(r.srv.m.refused.WithLabelValues(ReasonBusy)); got != 1 {
		t.Fatalf("refused{busy} = %v", got)
	}
	// The client aborts the first transfer; its slot comes back.
	hs[0].c.send(errPkt(0, "client gave up"), hs[0].port)
	waitFor(t, "a free slot", func() bool { return testutil.ToFloat64(r.srv.m.inflight) == 1 })
	got, _ := newRaw(t).fetch(r.addr, "f")
	if !bytes.Equal(got, pattern(5000)) {
		t.Fatal("content differs after slot freed")
	}
	if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(OutcomeError)); got != 1 {
		t.Errorf("requests{error} = %v, want 1 (the aborted transfer)", got)
	}
	hs[1].c.send(errPkt(0, "client gave up"), hs[1].port)
}

// TestShutdownInFlight cancels while a transfer waits for an ACK: the
// transfer is aborted with an error packet at the next block and Serve
// returns nil with nothing left in flight.
func TestShutdownInFlight(t *testing.T) {
	for _, silent := range []bool{false, true} {
		t.Run("client silent="+strconv.FormatBool(silent), func(t *testing.T) {
			r := start(t, Config{Root: testRoot(map[string][]byte{"f": pattern(1 << 20)}), Timeout: 200 * time.Millisecond, Retries: 3})
			c := newRaw(t)
			c.send(rq(1, "f", "octet"), r.addr)
			p, from := c.recv()
			if n, _, ok := p.data(); !ok || n != 1 {
				t.Fatalf("want DATA 1, got % x", p)
			}
			r.cancel()
			if !silent {
				// Keep acking whatever arrives until the server says stop.
				for {
					c.send(ack(1), from)
					p, _ = c.recv()
					if code, msg, ok := p.errCode(); ok {
						if !strings.Contains(msg, "shutting down") {
							t.Errorf("abort message %d %q", code, msg)
						}
						break
					}
					if n, _, _ := p.data(); n != 1 {
						c.send(ack(n), from)
					}
				}
			}
			if err := r.stop(t); err != nil {
				t.Fatalf("Serve = %v, want nil", err)
			}
			if got := testutil.ToFloat64(r.srv.m.inflight); got != 0 {
				t.Errorf("in flight after Serve returned = %v", got)
			}
			if got := testutil.ToFloat64(r.srv.m.requests.WithLabelValues(OutcomeError)); got != 1 {
				t.Errorf("requests{error} = %v, want 1", got)
			}
			// The listening socket is closed.
			c2 := newRaw(t)
			c2.send(rq(1, "f", "octet"), r.addr)
			if p, _, err := c2.tryRecv(200 * time.Millisecond); err == nil {
				t.Fatalf("answer after shutdown: % x", p)
			}
		})
	}
}

// brokenConn is a net.PacketConn whose reads fail once broken.
type brokenConn struct {
	net.PacketConn
	mu     sync.Mutex
	broken bool
}

var errNIC = errors.New("nic went away")

func (b *brokenConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := b.PacketConn.ReadFrom(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.broken {
		return 0, nil, errNIC
	}
	return n, a, err
}

func TestListenerFailure(t *testing.T) {
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	bc := &brokenConn{PacketConn: conn}
	srv, err := New(Config{Root: testRoot(map[string][]byte{"f": []byte("x")})}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), bc) }()
	addr := conn.LocalAddr().(*net.UDPAddr)
	if got, _ := newRaw(t).fetch(addr, "f"); string(got) != "x" {
		t.Fatalf("got %q", got)
	}
	bc.mu.Lock()
	bc.broken = true
	bc.mu.Unlock()
	newRaw(t).send(rq(1, "f", "octet"), addr) // wakes the read
	select {
	case err := <-done:
		if !errors.Is(err, ErrListener) || !errors.Is(err, errNIC) {
			t.Fatalf("Serve = %v, want ErrListener wrapping the read error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return after the listener broke")
	}
}

func TestServeNilConn(t *testing.T) {
	srv, err := New(Config{Root: firmware.FS()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(context.Background(), nil); err == nil {
		t.Fatal("Serve(nil) = nil")
	}
}

// TestTwoServesShareLimit checks MaxConcurrent spans Serve calls.
func TestTwoServesShareLimit(t *testing.T) {
	srv, err := New(Config{Root: testRoot(map[string][]byte{"f": pattern(4096)}), MaxConcurrent: 1}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var addrs []*net.UDPAddr
	var wg sync.WaitGroup
	for range 2 {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, conn.LocalAddr().(*net.UDPAddr))
		wg.Go(func() {
			if err := srv.Serve(ctx, conn); err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	defer func() { cancel(); wg.Wait() }()
	c := newRaw(t)
	c.send(rq(1, "f", "octet"), addrs[0])
	p0, held := c.recv()
	if p0.op() != 3 {
		t.Fatalf("want DATA, got % x", p0)
	}
	defer c.send(errPkt(0, "done"), held)
	c2 := newRaw(t)
	c2.send(rq(1, "f", "octet"), addrs[1])
	p, _ := c2.recv()
	if code, _, ok := p.errCode(); !ok || code != codeNotDefined {
		t.Fatalf("second server: got % x, want busy", p)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" = valid
	}{
		{"defaults", Config{Root: firmware.FS()}, ""},
		{"nil root", Config{}, "Root"},
		{"negative timeout", Config{Root: firmware.FS(), Timeout: -1}, "Timeout"},
		{"negative retries", Config{Root: firmware.FS(), Retries: -1}, "Retries"},
		{"negative max concurrent", Config{Root: firmware.FS(), MaxConcurrent: -1}, "MaxConcurrent"},
		{"block too small", Config{Root: firmware.FS(), MaxBlockSize: 511}, "MaxBlockSize"},
		{"block too big", Config{Root: firmware.FS(), MaxBlockSize: 65465}, "MaxBlockSize"},
		{"block 512", Config{Root: firmware.FS(), MaxBlockSize: 512}, ""},
		{"block max", Config{Root: firmware.FS(), MaxBlockSize: 65464}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg, nil, nil)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.cfg.Timeout != DefaultTimeout || s.cfg.Retries != DefaultRetries || s.cfg.MaxConcurrent != DefaultMaxConcurrent {
					t.Errorf("defaults not applied: %+v", s.cfg)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tt.field+":") {
				t.Fatalf("New = %v, want ErrInvalidConfig naming %s", err, tt.field)
			}
		})
	}
}

func TestNewRegistersOnce(t *testing.T) {
	r := start(t, Config{Root: firmware.FS()})
	if _, err := New(Config{Root: firmware.FS()}, nil, r.reg); err == nil {
		t.Fatal("second New on the same registry succeeded")
	}
}

// TestNetascii checks that netascii converts line ends and offers no tsize
// (the converted size is not known up front).
func TestNetascii(t *testing.T) {
	r := start(t, Config{Root: testRoot(map[string][]byte{"t.txt": []byte("a\nb\n")})})
	c := newRaw(t)
	c.send(rq(1, "t.txt", "NetASCII", "tsize", "0", "blksize", "600"), r.addr)
	p, from := c.recv()
	o, err := p.oack()
	if err != nil {
		t.Fatalf("want OACK, got % x", p)
	}
	if _, ok := o["tsize"]; ok || o["blksize"] != "600" {
		t.Errorf("OACK %v, want blksize only", o)
	}
	c.send(ack(0), from)
	p, from = c.recv()
	n, data, ok := p.data()
	if !ok || n != 1 || string(data) != "a\r\nb\r\n" {
		t.Fatalf("got % x, want DATA 1 with CRLF line ends", p)
	}
	c.send(ack(1), from)
}
