package tftp

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"
)

// FuzzRequest sends random bytes as the body of an RRQ or WRQ (the first
// byte picks the opcode) to a running server over loopback, checks the
// exported name validation on the same bytes, and every 64 inputs (and on
// the first) proves the server still answers a real request.
func FuzzRequest(f *testing.F) {
	seeds := [][]byte{
		rq(1, "f", "octet")[2:],
		rq(1, "/f", "octet", "blksize", "1468", "tsize", "0")[2:],
		rq(1, "../f", "octet")[2:],
		rq(2, "f", "netascii")[2:],
		rq(1, "f", "octet", "blksize")[2:],
		rq(1, "f", "octet", "blksize", "99999999999999999999")[2:],
		{0},
		{},
	}
	for i, s := range seeds {
		f.Add(byte(i%2+1), s)
	}
	r := start(f, Config{
		Root:          testRoot(map[string][]byte{"f": pattern(3000)}),
		Timeout:       20 * time.Millisecond,
		Retries:       1,
		MaxConcurrent: 1024,
		MaxBlockSize:  8192,
	})
	client, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { client.Close() })
	probe, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { probe.Close() })
	n := 0
	f.Fuzz(func(t *testing.T, op byte, body []byte) {
		pkt := binary.BigEndian.AppendUint16(nil, uint16(op%2+1))
		pkt = append(pkt, body...)
		if _, err := client.WriteToUDP(pkt, r.addr); err != nil {
			t.Fatal(err)
		}
		// The exported validation never panics and only returns valid
		// paths.
		if req, err := parseRequest(pkt); err == nil {
			if name, err := CleanName(req.name); err == nil {
				if len(name) == 0 || name[0] == '/' || len(req.name) > MaxNameLen {
					t.Fatalf("CleanName(%q) = %q", req.name, name)
				}
			} else if !errors.Is(err, ErrBadName) {
				t.Fatalf("CleanName error %v does not wrap ErrBadName", err)
			}
		}
		drain(client)
		if n%64 == 0 {
			alive(t, probe, r.addr)
		}
		n++
	})
}

// drain discards answers to fuzz packets so the socket buffer stays empty.
func drain(c *net.UDPConn) {
	buf := make([]byte, 65536)
	for {
		_ = c.SetReadDeadline(time.Now())
		if _, _, err := c.ReadFromUDP(buf); err != nil {
			return
		}
	}
}

// alive requests a known file and expects DATA block 1, then aborts.
func alive(t *testing.T, c *net.UDPConn, server *net.UDPAddr) {
	t.Helper()
	drain(c)
	if _, err := c.WriteToUDP(rq(1, "f", "octet"), server); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("server not serving: %v", err)
		}
		p := packet(buf[:n])
		if _, _, isErr := p.errCode(); isErr && from.Port != server.Port {
			continue // a late echo from an earlier probe's aborted transfer
		}
		if blk, _, ok := p.data(); !ok || blk != 1 {
			t.Fatalf("server not serving: got % x", p)
		}
		if _, err := c.WriteToUDP(errPkt(0, "probe done"), from); err != nil {
			t.Fatal(err)
		}
		return
	}
}
