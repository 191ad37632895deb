package tftp

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"net"
	"testing"
	"time"
)

// FuzzRequest sends random bytes as the body of an RRQ or WRQ (the first
// byte picks the opcode) to a running server over loopback and checks the
// one answer every request gets: a refusal is an ERROR packet from the
// listening port with the code the gate's rules give; an admitted request
// starts a transfer, whose first packet comes from another port and which
// the fuzzer then aborts. Each input uses a fresh client socket and waits
// for its answer, so inputs never pile up transfers on the server: a request
// refused as busy means a transfer slot leaked.
func FuzzRequest(f *testing.F) {
	seeds := [][]byte{
		rq(1, "f", "octet")[2:],
		rq(1, "/f", "octet", "blksize", "1468", "tsize", "0")[2:],
		rq(1, "../f", "octet")[2:],
		rq(2, "f", "netascii")[2:],
		rq(1, "f", "octet", "blksize")[2:],
		rq(1, "f", "octet", "blksize", "99999999999999999999")[2:],
		rq(1, "f", "OCTET", "blksize", "3")[2:],
		rq(1, "missing", "octet")[2:],
		{0},
		{},
	}
	for i, s := range seeds {
		f.Add(byte(i%2+1), s)
	}
	root := testRoot(map[string][]byte{"f": pattern(3000)})
	r := start(f, Config{
		Root:          root,
		Timeout:       20 * time.Millisecond,
		Retries:       1,
		MaxConcurrent: 64,
		MaxBlockSize:  8192,
	})
	f.Fuzz(func(t *testing.T, op byte, body []byte) {
		pkt := binary.BigEndian.AppendUint16(nil, uint16(op%2+1))
		pkt = append(pkt, body...)
		want, admitted := expect(t, root, pkt)

		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.WriteToUDP(pkt, r.addr); err != nil {
			t.Fatal(err)
		}
		// Well under the fuzzer's 10 s limit for one input.
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 65536)
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer to % x: %v", pkt, err)
		}
		p := packet(buf[:n])
		code, msg, isErr := p.errCode()
		if !admitted {
			if from.Port != r.addr.Port || !isErr || code != want {
				t.Fatalf("request % x: want ERROR %d from the listening port, got % x from port %d", pkt, want, p, from.Port)
			}
			return
		}
		if from.Port == r.addr.Port {
			t.Fatalf("request % x for a served file refused: ERROR %d %q", pkt, code, msg)
		}
		if !isErr {
			// Abort the transfer; its slot is free once the server reads this.
			if _, err := c.WriteToUDP(errPkt(0, "fuzz done"), from); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// expect applies the gate's rules to pkt: either the ERROR code of its
// refusal, or admitted when it asks for a file root serves.
func expect(t *testing.T, root fs.FS, pkt []byte) (code uint16, admitted bool) {
	req, err := parseRequest(pkt)
	switch {
	case err != nil:
		return codeIllegalOperation, false
	case req.write:
		return codeAccessViolation, false
	case req.mode != "octet" && req.mode != "netascii":
		return codeIllegalOperation, false
	}
	name, err := CleanName(req.name)
	if err != nil {
		if !errors.Is(err, ErrBadName) {
			t.Fatalf("CleanName error %v does not wrap ErrBadName", err)
		}
		return codeAccessViolation, false
	}
	if name == "" || name[0] == '/' || len(req.name) > MaxNameLen {
		t.Fatalf("CleanName(%q) = %q", req.name, name)
	}
	if fi, err := fs.Stat(root, name); err != nil || !fi.Mode().IsRegular() {
		return codeFileNotFound, false
	}
	return 0, true
}
