package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/immutableinfra/kiln/firmware"
	"github.com/prometheus/client_golang/prometheus"
)

// running is a Server serving on a loopback socket for one test.
type running struct {
	srv    *Server
	reg    *prometheus.Registry
	addr   *net.UDPAddr
	cancel context.CancelFunc
	done   chan error

	once sync.Once
	err  error
}

// stop cancels the server and returns what Serve returned.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			r.err = errors.New("Serve did not return 30s after cancel")
		}
	})
	return r.err
}

// start runs a Server with cfg on 127.0.0.1:0 and stops it at cleanup.
func start(t testing.TB, cfg Config) *running {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startOn(t, cfg, conn)
}

func startOn(t testing.TB, cfg Config, conn net.PacketConn) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{srv: srv, reg: reg, addr: conn.LocalAddr().(*net.UDPAddr), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, conn) }()
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// testRoot is firmware.FS() overlaid with a few test files.
func testRoot(extra map[string][]byte) fs.FS {
	m := fstest.MapFS{}
	for name, data := range extra {
		m[name] = &fstest.MapFile{Data: data, Mode: 0o644}
	}
	return Overlay(m, firmware.FS())
}

// pattern returns n deterministic, non-repeating-looking bytes.
func pattern(n int) []byte {
	b := make([]byte, n)
	var x uint32 = 2463534242
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// raw is a hand-driven TFTP client on a loopback socket, for checking the
// wire format (error codes, OACK) that real clients hide.
type raw struct {
	t    testing.TB
	conn *net.UDPConn
}

func newRaw(t testing.TB) *raw {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, conn: c}
}

func (r *raw) send(pkt []byte, to *net.UDPAddr) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDP(pkt, to); err != nil {
		r.t.Fatal(err)
	}
}

// recv returns the next packet, failing the test if none comes in 10s.
func (r *raw) recv() (packet, *net.UDPAddr) {
	r.t.Helper()
	p, from, err := r.tryRecv(10 * time.Second)
	if err != nil {
		r.t.Fatalf("no answer: %v", err)
	}
	return p, from
}

func (r *raw) tryRecv(d time.Duration) (packet, *net.UDPAddr, error) {
	buf := make([]byte, 65536)
	_ = r.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := r.conn.ReadFromUDP(buf)
	if err != nil {
		return nil, nil, err
	}
	return packet(buf[:n]), from, nil
}

// rq builds an RRQ (op 1) or WRQ (op 2) with option/value pairs.
func rq(op uint16, name, mode string, opts ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, op)
	for _, s := range append([]string{name, mode}, opts...) {
		b = append(append(b, s...), 0)
	}
	return b
}

func ack(block uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 4), block)
}

func errPkt(code uint16, msg string) []byte {
	b := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, 5), code)
	return append(append(b, msg...), 0)
}

type packet []byte

func (p packet) op() uint16 {
	if len(p) < 2 {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

// errCode returns the code and message of an ERROR packet.
func (p packet) errCode() (uint16, string, bool) {
	if p.op() != 5 || len(p) < 5 {
		return 0, "", false
	}
	return binary.BigEndian.Uint16(p[2:]), strings.TrimRight(string(p[4:]), "\x00"), true
}

// oack returns the options of an OACK packet.
func (p packet) oack() (map[string]string, error) {
	if p.op() != 6 {
		return nil, errors.New("not an OACK")
	}
	f := bytes.Split(bytes.TrimSuffix(p[2:], []byte{0}), []byte{0})
	m := map[string]string{}
	for i := 0; i+1 < len(f); i += 2 {
		m[string(f[i])] = string(f[i+1])
	}
	return m, nil
}

// data returns the block number and payload of a DATA packet.
func (p packet) data() (uint16, []byte, bool) {
	if p.op() != 3 || len(p) < 4 {
		return 0, nil, false
	}
	return binary.BigEndian.Uint16(p[2:]), p[4:], true
}

// fetch downloads name over the raw client with the given options, acking
// every block, and returns the content and the OACK options (nil if none).
func (r *raw) fetch(server *net.UDPAddr, name string, opts ...string) ([]byte, map[string]string) {
	r.t.Helper()
	r.send(rq(1, name, "octet", opts...), server)
	var out []byte
	var oack map[string]string
	blk := 512
	want := uint16(1)
	for {
		p, from := r.recv()
		if code, msg, ok := p.errCode(); ok {
			r.t.Fatalf("fetch %q: error %d %q", name, code, msg)
		}
		if o, err := p.oack(); err == nil {
			oack = o
			if v, ok := o["blksize"]; ok {
				blk = atoi(r.t, v)
			}
			r.send(ack(0), from)
			continue
		}
		n, payload, ok := p.data()
		if !ok {
			r.t.Fatalf("fetch %q: unexpected packet % x", name, p)
		}
		if n != want {
			continue // duplicate after a retransmit
		}
		out = append(out, payload...)
		r.send(ack(n), from)
		if len(payload) > blk {
			r.t.Fatalf("block of %d bytes, blksize %d", len(payload), blk)
		}
		if len(payload) < blk {
			return out, oack
		}
		want++
	}
}

func atoi(t testing.TB, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("not a number: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}
