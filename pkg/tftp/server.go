// Package tftp is kiln's read-only TFTP server (RFC 1350 with the RFC 2347
// option extension: blksize per RFC 2348, tsize per RFC 2349), serving the
// iPXE binaries and other boot files from an fs.FS.
//
// Transfers run on github.com/pin/tftp/v3. In front of it sits a gate that
// reads every request first: write requests, bad names, unknown modes,
// missing files and requests beyond Config.MaxConcurrent are answered with a
// TFTP error packet from the listening socket and never reach the library;
// admitted requests are re-encoded canonically (clean name, lower-case mode,
// only blksize and tsize). The timeout (RFC 2349) and windowsize (RFC 7440)
// options are not negotiated (pin/tftp v3.2.0 does not implement them): they
// are ignored, which RFC 2347 allows, and Config.Timeout applies.
package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// errShutdown is the reason sent to clients whose transfer is aborted by a
// shutdown.
var errShutdown = errors.New("server shutting down")

// Server is a read-only TFTP server. It is safe for concurrent use; Serve may
// be called several times, concurrently, on different conns (one per
// listening address), and the Config.MaxConcurrent bound covers them all.
type Server struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics
	inflight atomic.Int64
}

// New validates cfg (errors wrap ErrInvalidConfig and name the field) and
// returns a Server. log may be nil (discard). Metrics (kiln_tftp_*) are
// registered on reg unless it is nil; registering twice on one Registerer
// fails, so give each Server its own or wrap it with labels.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: log, m: m}, nil
}

// Serve answers TFTP requests arriving on conn, a listening UDP socket
// (usually port 69), until ctx is cancelled or reading conn fails. Each
// admitted transfer runs on its own ephemeral UDP port, as RFC 1350 requires.
//
// On cancellation Serve stops reading requests, aborts transfers in flight at
// their next block (the client receives an error packet; a transfer waiting
// for a silent client ends after at most about Timeout*Retries), waits for
// every transfer goroutine to end, closes conn and returns nil. If reading
// conn fails, Serve shuts down the same way and returns an error wrapping
// ErrListener. Serve always closes conn before it returns.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	if conn == nil {
		return fmt.Errorf("tftp: Serve: nil conn")
	}
	stop := make(chan struct{}) // closed once shutdown starts: aborts transfers
	g := &gate{
		s:       s,
		conn:    conn,
		buf:     make([]byte, 65536),
		parked:  make(chan struct{}),
		release: make(chan struct{}),
		broken:  make(chan struct{}),
	}
	lib := pintftp.NewServer(s.readHandler(stop), nil)
	lib.SetTimeout(s.cfg.Timeout)
	lib.SetRetries(s.cfg.Retries)
	// Retransmit right after Timeout; the library's default adds a random
	// sleep of up to one second per retry.
	lib.SetBackoff(func(int) time.Duration { return 0 })
	if s.cfg.MaxBlockSize > MinBlockSize {
		// Grant up to MaxBlockSize regardless of the interface MTU (the
		// gate hides the socket from the library's MTU probing anyway).
		lib.SetBlockSizeNegotiation(false)
		lib.SetBlockSize(s.cfg.MaxBlockSize)
	}
	// With MaxBlockSize == 512 MTU clamping stays on and, since the
	// library sees no *net.UDPConn, it clamps every transfer to 512.
	lib.SetHook(g)

	libDone := make(chan error, 1)
	go func() { libDone <- lib.Serve(g) }()

	var libErr error
	libReturned := false
	select {
	case <-ctx.Done():
	case <-g.broken:
	case libErr = <-libDone:
		libReturned = true
	}
	close(stop)
	if !libReturned {
		// Park the library's read loop outside handlePacket so that no
		// transfer can start while Shutdown waits for the running ones.
		g.stopping.Store(true)
		_ = conn.SetReadDeadline(time.Now())
		select {
		case <-g.parked:
		case libErr = <-libDone:
			libReturned = true
		}
	}
	lib.Shutdown() // closes conn (through g), waits for transfers
	close(g.release)
	if !libReturned {
		libErr = <-libDone
	}
	_ = conn.Close()
	if err := g.err(); err != nil {
		return fmt.Errorf("%w: %w", ErrListener, err)
	}
	if libErr != nil {
		return fmt.Errorf("tftp: serve: %w", libErr)
	}
	return nil
}

// reserve takes a transfer slot, or reports false when MaxConcurrent are in
// flight.
func (s *Server) reserve() bool {
	for {
		n := s.inflight.Load()
		if n >= int64(s.cfg.MaxConcurrent) {
			return false
		}
		if s.inflight.CompareAndSwap(n, n+1) {
			s.m.inflight.Inc()
			return true
		}
	}
}

func (s *Server) unreserve() {
	s.inflight.Add(-1)
	s.m.inflight.Dec()
}

func (s *Server) refuse(reason string) {
	s.m.requests.WithLabelValues(OutcomeRefused).Inc()
	s.m.refused.WithLabelValues(reason).Inc()
}

// readHandler returns the pin/tftp read handler. It runs in the library's
// per-transfer goroutine and owns the slot the gate reserved for it.
func (s *Server) readHandler(stop <-chan struct{}) func(string, io.ReaderFrom) error {
	return func(name string, rf io.ReaderFrom) error {
		defer s.unreserve()
		start := time.Now()
		client := ""
		if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
			a := ot.RemoteAddr()
			client = a.String()
		}
		log := s.log.With("client", client, "file", name)

		f, size, err := s.open(name)
		if err != nil {
			// The gate checked the name and Stat; this is a race with a
			// changing Root or a broken file.
			if errors.Is(err, fs.ErrNotExist) {
				s.m.requests.WithLabelValues(OutcomeNotFound).Inc()
			} else {
				s.m.requests.WithLabelValues(OutcomeError).Inc()
			}
			log.Warn("tftp: open failed", "err", err)
			return errors.New("file not found")
		}
		defer f.Close()
		if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
			ot.SetSize(size) // only used when the client asked for tsize
		}
		// pin/tftp reads one block at a time: buffer, so that a 1468-byte
		// block is not a read syscall of its own.
		n, err := rf.ReadFrom(&stopReader{r: bufio.NewReaderSize(f, readBuffer), stop: stop})
		d := time.Since(start)
		s.m.bytes.Add(float64(n))
		s.m.duration.Observe(d.Seconds())
		if err != nil {
			s.m.requests.WithLabelValues(OutcomeError).Inc()
			log.Warn("tftp: transfer failed", "bytes", n, "size", size, "duration", d, "err", err)
			return err
		}
		s.m.requests.WithLabelValues(OutcomeOK).Inc()
		log.Info("tftp: sent", "bytes", n, "duration", d)
		return nil
	}
}

// open opens a regular file of Root by its cleaned name.
func (s *Server) open(name string) (fs.File, int64, error) {
	f, err := s.cfg.Root.Open(name)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return f, fi.Size(), nil
}

// readBuffer is the file read size of a transfer (about 45 blocks of 1468).
const readBuffer = 64 << 10

// stopReader fails reads once stop is closed, which makes pin/tftp abort
// the transfer with an error packet at the next block.
type stopReader struct {
	r    io.Reader
	stop <-chan struct{}
}

func (r *stopReader) Read(p []byte) (int, error) {
	select {
	case <-r.stop:
		return 0, errShutdown
	default:
		return r.r.Read(p)
	}
}

// gate is the net.PacketConn handed to pin/tftp. Its ReadFrom screens each
// request, answers refusals itself and passes admitted read requests on,
// re-encoded. It also implements pintftp.Hook to release the slot of a
// request the library failed to start.
type gate struct {
	s    *Server
	conn net.PacketConn
	buf  []byte // only used by ReadFrom, which the library calls from one goroutine

	// pending is true between handing an admitted request to the library
	// and its next ReadFrom call: a failure reported through the Hook in
	// that window means the request's handler will never run.
	pending atomic.Bool

	stopping   atomic.Bool
	parkOnce   sync.Once
	parked     chan struct{} // closed when ReadFrom parks during shutdown
	release    chan struct{} // closed when a parked ReadFrom may return
	brokenOnce sync.Once
	broken     chan struct{} // closed when reading conn failed
	mu         sync.Mutex
	readErr    error
}

func (g *gate) err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readErr
}

func (g *gate) fail(err error) {
	g.mu.Lock()
	if g.readErr == nil {
		g.readErr = err
	}
	g.mu.Unlock()
	g.stopping.Store(true)
	g.brokenOnce.Do(func() { close(g.broken) })
}

// ReadFrom returns the next admitted read request, canonically encoded.
func (g *gate) ReadFrom(p []byte) (int, net.Addr, error) {
	g.pending.Store(false)
	for {
		if g.stopping.Load() {
			g.parkOnce.Do(func() { close(g.parked) })
			<-g.release
			return 0, nil, net.ErrClosed
		}
		n, addr, err := g.conn.ReadFrom(g.buf)
		if err != nil {
			if g.stopping.Load() {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			g.s.log.Error("tftp: reading listener failed", "err", err)
			g.fail(err)
			continue
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue // the library needs a *net.UDPAddr
		}
		out := g.screen(g.buf[:n], ua, p[:0])
		if out == nil {
			continue
		}
		if len(out) > len(p) {
			// Cannot happen for names within MaxNameLen; refuse rather
			// than hand the library a truncated request.
			g.s.unreserve()
			g.s.refuse(ReasonMalformed)
			g.reply(ua, codeIllegalOperation, "request too long")
			continue
		}
		g.pending.Store(true)
		return copy(p, out), ua, nil
	}
}

// screen decides what to do with one datagram. It answers refusals itself
// and returns nil, or reserves a slot and returns the request to hand on.
func (g *gate) screen(pkt []byte, from *net.UDPAddr, dst []byte) []byte {
	s := g.s
	req, err := parseRequest(pkt)
	if errors.Is(err, errNotRequest) {
		// Stray DATA/ACK/ERROR on the listening port: not ours to answer.
		s.log.Debug("tftp: dropped non-request packet", "client", from.String(), "len", len(pkt))
		return nil
	}
	if err != nil {
		s.refuse(ReasonMalformed)
		s.log.Warn("tftp: refused malformed request", "client", from.String(), "len", len(pkt))
		g.reply(from, codeIllegalOperation, "malformed request")
		return nil
	}
	log := s.log.With("client", from.String(), "file", quoteName(req.name))
	if req.write {
		s.refuse(ReasonWrite)
		log.Warn("tftp: refused write request (read-only server)")
		g.reply(from, codeAccessViolation, "access violation: read-only server")
		return nil
	}
	if req.mode != "octet" && req.mode != "netascii" {
		s.refuse(ReasonMode)
		log.Warn("tftp: refused unsupported mode", "mode", quoteName(req.mode))
		g.reply(from, codeIllegalOperation, "unsupported transfer mode")
		return nil
	}
	name, err := CleanName(req.name)
	if err != nil {
		s.refuse(ReasonBadName)
		log.Warn("tftp: refused bad file name", "err", err)
		g.reply(from, codeAccessViolation, "access violation: invalid file name")
		return nil
	}
	fi, err := fs.Stat(s.cfg.Root, name)
	switch {
	case err == nil && fi.Mode().IsRegular():
	case err == nil || errors.Is(err, fs.ErrNotExist):
		s.m.requests.WithLabelValues(OutcomeNotFound).Inc()
		log.Info("tftp: file not found")
		g.reply(from, codeFileNotFound, "file not found")
		return nil
	case errors.Is(err, fs.ErrPermission):
		s.refuse(ReasonPermission)
		log.Warn("tftp: refused, permission denied", "err", err)
		g.reply(from, codeAccessViolation, "access violation")
		return nil
	default:
		s.m.requests.WithLabelValues(OutcomeError).Inc()
		log.Warn("tftp: stat failed", "err", err)
		g.reply(from, codeNotDefined, "internal error")
		return nil
	}
	if !s.reserve() {
		s.refuse(ReasonBusy)
		log.Warn("tftp: refused, too many transfers in flight", "max_concurrent", s.cfg.MaxConcurrent)
		g.reply(from, codeNotDefined, "server busy, try again later")
		return nil
	}
	// tsize for netascii would be the converted size, which is unknown
	// up front: do not offer it.
	tsize := req.tsize && req.mode == "octet"
	log.Debug("tftp: admitted", "blksize", req.blksize, "tsize", tsize, "size", strconv.FormatInt(fi.Size(), 10))
	return appendRRQ(dst, name, req.mode, req.blksize, tsize)
}

// reply sends an ERROR packet from the listening socket.
func (g *gate) reply(to *net.UDPAddr, code uint16, msg string) {
	if _, err := g.conn.WriteTo(appendError(nil, code, msg), to); err != nil {
		g.s.log.Debug("tftp: sending error packet failed", "client", to.String(), "err", err)
	}
}

// quoteName makes a client-supplied string safe and short for a log line.
func quoteName(name string) string {
	const max = 80
	if len(name) > max {
		return strconv.Quote(name[:max]) + "..."
	}
	return strconv.Quote(name)
}

// OnSuccess implements pintftp.Hook; transfers are accounted in the handler.
func (g *gate) OnSuccess(pintftp.TransferStats) {}

// OnFailure implements pintftp.Hook. A failure without a remote address
// comes from the library's request loop; right after an admitted request it
// means the transfer never started (e.g. no ephemeral port), so its slot is
// released here.
func (g *gate) OnFailure(st pintftp.TransferStats, err error) {
	if st.RemoteAddr != nil || !g.pending.CompareAndSwap(true, false) {
		return
	}
	g.s.unreserve()
	g.s.m.requests.WithLabelValues(OutcomeError).Inc()
	g.s.log.Error("tftp: could not start transfer", "err", err)
}

// WriteTo implements net.PacketConn.
func (g *gate) WriteTo(p []byte, addr net.Addr) (int, error) { return g.conn.WriteTo(p, addr) }

// Close implements net.PacketConn; pin/tftp calls it from Shutdown.
func (g *gate) Close() error { return g.conn.Close() }

// LocalAddr implements net.PacketConn.
func (g *gate) LocalAddr() net.Addr { return g.conn.LocalAddr() }

// SetDeadline implements net.PacketConn.
func (g *gate) SetDeadline(t time.Time) error { return g.conn.SetDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (g *gate) SetReadDeadline(t time.Time) error { return g.conn.SetReadDeadline(t) }

// SetWriteDeadline implements net.PacketConn.
func (g *gate) SetWriteDeadline(t time.Time) error { return g.conn.SetWriteDeadline(t) }
