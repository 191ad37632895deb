package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
)

// TFTP opcodes (RFC 1350, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opERROR = 5
)

// TFTP error codes (RFC 1350).
const (
	codeNotDefined       = 0
	codeFileNotFound     = 1
	codeAccessViolation  = 2
	codeIllegalOperation = 4
)

var (
	errNotRequest = errors.New("not a read or write request")
	errMalformed  = errors.New("malformed request")
)

// request is a parsed RRQ or WRQ.
type request struct {
	write bool
	name  string // as received, not yet cleaned
	mode  string // lower-cased
	// blksize is the requested block size as decimal digits, "" if absent
	// or not a number.
	blksize string
	tsize   bool // the client asked for the transfer size
}

// parseRequest parses an RRQ/WRQ datagram: opcode, then NUL-terminated
// filename, mode and option/value pairs (RFC 2347). Option names and the mode
// are case-insensitive; options other than blksize and tsize are dropped.
func parseRequest(b []byte) (request, error) {
	if len(b) < 2 {
		return request{}, errNotRequest
	}
	op := binary.BigEndian.Uint16(b)
	if op != opRRQ && op != opWRQ {
		return request{}, errNotRequest
	}
	body := b[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return request{}, errMalformed
	}
	fields := bytes.Split(body[:len(body)-1], []byte{0})
	if len(fields) < 2 || len(fields)%2 != 0 {
		return request{}, errMalformed
	}
	r := request{
		write: op == opWRQ,
		name:  string(fields[0]),
		mode:  strings.ToLower(string(fields[1])),
	}
	for i := 2; i+1 < len(fields); i += 2 {
		switch strings.ToLower(string(fields[i])) {
		case "blksize":
			v := string(fields[i+1])
			if n, err := strconv.Atoi(v); err == nil && n > 0 && len(v) <= 5 {
				r.blksize = strconv.Itoa(n)
			}
		case "tsize":
			r.tsize = true
		}
	}
	return r, nil
}

// appendRRQ encodes the canonical RRQ handed to pin/tftp: the cleaned name,
// the mode and only the options it should negotiate, lower-cased.
func appendRRQ(dst []byte, name, mode, blksize string, tsize bool) []byte {
	dst = binary.BigEndian.AppendUint16(dst, opRRQ)
	dst = append(append(dst, name...), 0)
	dst = append(append(dst, mode...), 0)
	if blksize != "" {
		dst = append(append(dst, "blksize\x00"...), blksize...)
		dst = append(dst, 0)
	}
	if tsize {
		dst = append(dst, "tsize\x000\x00"...)
	}
	return dst
}

// appendError encodes an ERROR packet.
func appendError(dst []byte, code uint16, msg string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, opERROR)
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(append(dst, msg...), 0)
}
