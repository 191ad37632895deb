package dhcp

import (
	"net/netip"
	"sync"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

type leaseState uint8

const (
	stateOffered  leaseState = iota + 1 // reserved in memory for OfferHold
	stateBound                          // persisted lease
	stateDeclined                       // persisted, no MAC, out of use until expires
	stateBusy                           // a store write for this address is in flight
	stateFixed                          // another host's fixed IP: in memory only, checked again after expires
)

type entry struct {
	mac      string
	host     string
	hostname string
	expires  time.Time
	state    leaseState
}

// pool is the in-memory lease index. Addresses are offsets from start. The
// index is the only authority on who owns an address; the store follows it.
//
// Finding a free address is amortised O(1): a cursor sweeps the range once,
// taking never-used addresses, and released addresses go to a free list.
// When the cursor wraps, one pass over the index moves expired entries to
// the free list.
type pool struct {
	mu       sync.Mutex
	start    uint32
	size     uint32 // number of addresses in the range
	skip     map[uint32]bool
	byIP     map[uint32]*entry
	byMAC    map[string]uint32
	cursor   uint32
	free     []uint32
	fullTill time.Time // after a failed full sweep, don't sweep again before this
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func newPool(p *Pool, serverIP netip.Addr) *pool {
	start, end := u32(p.Start), u32(p.End)
	pl := &pool{
		start: start,
		size:  end - start + 1,
		skip:  map[uint32]bool{},
		byIP:  map[uint32]*entry{},
		byMAC: map[string]uint32{},
	}
	// Never hand out the network, broadcast or server address.
	network := u32(p.Subnet.Masked().Addr())
	bcast := network | (1<<(32-p.Subnet.Bits()) - 1)
	never := []uint32{network, bcast}
	for _, a := range []netip.Addr{serverIP, p.Router} {
		if a.Is4() {
			never = append(never, u32(a))
		}
	}
	for _, v := range never {
		if v >= start && v <= end {
			pl.skip[v-start] = true
		}
	}
	return pl
}

func (p *pool) contains(a netip.Addr) (uint32, bool) {
	if !a.Is4() {
		return 0, false
	}
	v := u32(a)
	if v < p.start || v-p.start >= p.size {
		return 0, false
	}
	return v - p.start, true
}

// load fills the index from stored leases; leases outside the range are
// ignored (the pool was reconfigured).
func (p *pool) load(ls []fleet.Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range ls {
		off, ok := p.contains(l.IP)
		if !ok || p.skip[off] {
			continue
		}
		e := &entry{mac: l.MAC, host: l.Host, hostname: l.Hostname, expires: l.Expires, state: stateBound}
		if l.Declined || l.MAC == "" {
			e.mac, e.state = "", stateDeclined
		}
		if old, ok := p.byMAC[e.mac]; ok && e.mac != "" {
			// One MAC one lease: keep the one that lasts longer.
			if p.byIP[old].expires.After(e.expires) {
				continue
			}
			delete(p.byIP, old)
		}
		p.byIP[off] = e
		if e.mac != "" {
			p.byMAC[e.mac] = off
		}
	}
}

// available reports whether the address at off may be given to a new MAC.
func (p *pool) available(off uint32, now time.Time) bool {
	if p.skip[off] {
		return false
	}
	e := p.byIP[off]
	return e == nil || e.state != stateBusy && !now.Before(e.expires)
}

// take gives off to mac as an offer; the caller checked available.
func (p *pool) take(off uint32, mac string, now, until time.Time) {
	if e := p.byIP[off]; e != nil && e.mac != "" && e.mac != mac {
		if cur, ok := p.byMAC[e.mac]; ok && cur == off {
			delete(p.byMAC, e.mac)
		}
	}
	if old, ok := p.byMAC[mac]; ok && old != off {
		if e := p.byIP[old]; e != nil && e.state == stateOffered {
			delete(p.byIP, old)
			p.free = append(p.free, old)
		}
	}
	p.byIP[off] = &entry{mac: mac, expires: until, state: stateOffered}
	p.byMAC[mac] = off
}

// offer returns the address to offer mac: its current one, the requested
// one if free, or a free one. ok is false when the pool is exhausted.
func (p *pool) offer(mac string, requested netip.Addr, now time.Time, hold time.Duration) (netip.Addr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	until := now.Add(hold)
	if off, ok := p.byMAC[mac]; ok {
		e := p.byIP[off]
		switch {
		case e.state == stateBusy:
			return addr(p.start + off), true
		case e.state == stateBound && now.Before(e.expires):
			return addr(p.start + off), true
		case e.state == stateOffered || e.state == stateBound:
			// An expired lease or offer of this MAC: offer it again.
			e.state = stateOffered
			if e.expires.Before(until) {
				e.expires = until
			}
			return addr(p.start + off), true
		}
	}
	if off, ok := p.contains(requested); ok && p.available(off, now) {
		p.take(off, mac, now, until)
		return addr(p.start + off), true
	}
	for len(p.free) > 0 {
		off := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if p.available(off, now) {
			p.take(off, mac, now, until)
			return addr(p.start + off), true
		}
	}
	if now.Before(p.fullTill) {
		return netip.Addr{}, false
	}
	for range p.size {
		off := p.cursor
		p.cursor++
		if p.cursor == p.size {
			p.cursor = 0
			p.reclaim(now)
		}
		if p.available(off, now) {
			p.take(off, mac, now, until)
			return addr(p.start + off), true
		}
	}
	p.fullTill = now.Add(time.Second)
	return netip.Addr{}, false
}

// holdFixed takes ip, just offered to mac, out of use until until: it is
// another host's fixed IP. The hold is not persisted; once it expires the
// address is offered (and checked) again.
func (p *pool) holdFixed(mac string, ip netip.Addr, until time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.contains(ip)
	if !ok {
		return
	}
	e := p.byIP[off]
	if e == nil || e.mac != mac || (e.state != stateOffered && e.state != stateBound) {
		return
	}
	delete(p.byMAC, mac)
	*e = entry{state: stateFixed, expires: until}
}

// reclaim moves expired entries to the free list; called once per sweep.
func (p *pool) reclaim(now time.Time) {
	p.free = p.free[:0]
	for off, e := range p.byIP {
		if e.state != stateBusy && !now.Before(e.expires) {
			p.free = append(p.free, off)
		}
	}
}

// request claims ip for mac until now+lease and marks it busy while the
// caller persists it. ok is false when the address belongs to someone else
// (or is declined); the caller then NAKs.
func (p *pool) request(mac string, ip netip.Addr, now time.Time, lease time.Duration) (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.contains(ip)
	if !ok || p.skip[off] {
		return 0, false
	}
	e := p.byIP[off]
	mine := e != nil && e.mac == mac && (e.state == stateOffered || e.state == stateBound || e.state == stateBusy)
	if !mine && !p.available(off, now) {
		return 0, false
	}
	if !mine {
		p.take(off, mac, now, now)
		e = p.byIP[off]
	}
	if old, ok := p.byMAC[mac]; ok && old != off {
		// The MAC moves: its previous address is freed (the store drops it
		// with the new lease).
		delete(p.byIP, old)
		p.free = append(p.free, old)
	}
	p.byMAC[mac] = off
	e.state = stateBusy
	e.expires = now.Add(lease)
	return off, true
}

// commit ends a request: ok means the lease is durable and bound; otherwise
// the address is freed.
func (p *pool) commit(off uint32, mac, host, hostname string, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIP[off]
	if e == nil || e.mac != mac {
		return
	}
	if ok {
		e.state, e.host, e.hostname = stateBound, host, hostname
		return
	}
	delete(p.byIP, off)
	if cur, ok := p.byMAC[mac]; ok && cur == off {
		delete(p.byMAC, mac)
	}
	p.free = append(p.free, off)
}

// lease returns the stored form of the entry at off.
func (p *pool) lease(off uint32) fleet.Lease {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIP[off]
	l := fleet.Lease{IP: addr(p.start + off)}
	if e != nil {
		l.MAC, l.Host, l.Hostname, l.Expires, l.Declined = e.mac, e.host, e.hostname, e.expires, e.state == stateDeclined
	}
	return l
}

// cancel drops mac's pending offer (the client chose another server).
func (p *pool) cancel(mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if off, ok := p.byMAC[mac]; ok && p.byIP[off].state == stateOffered {
		delete(p.byIP, off)
		delete(p.byMAC, mac)
		p.free = append(p.free, off)
	}
}

// startRelease marks mac's address ip busy for deletion. ok is false when
// mac does not hold ip.
func (p *pool) startRelease(mac string, ip netip.Addr) (uint32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.contains(ip)
	if !ok {
		return 0, false
	}
	e := p.byIP[off]
	if e == nil || e.mac != mac || (e.state != stateBound && e.state != stateOffered) {
		return 0, false
	}
	e.state = stateBusy
	return off, true
}

// finishRelease frees off once its lease is deleted from the store.
func (p *pool) finishRelease(off uint32, mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e := p.byIP[off]; e != nil && e.mac == mac && e.state == stateBusy {
		delete(p.byIP, off)
		if cur, ok := p.byMAC[mac]; ok && cur == off {
			delete(p.byMAC, mac)
		}
		p.free = append(p.free, off)
	}
}

// decline takes ip out of use until now+hold if mac holds it (offered or
// bound) and returns the lease to persist.
func (p *pool) decline(mac string, ip netip.Addr, now time.Time, hold time.Duration) (fleet.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	off, ok := p.contains(ip)
	if !ok {
		return fleet.Lease{}, false
	}
	e := p.byIP[off]
	if e == nil || e.mac != mac || (e.state != stateBound && e.state != stateOffered) {
		return fleet.Lease{}, false
	}
	delete(p.byMAC, mac)
	*e = entry{state: stateDeclined, expires: now.Add(hold)}
	return fleet.Lease{IP: ip, Declined: true, Expires: e.expires}, true
}

// inUse counts bound, unexpired leases.
func (p *pool) inUse(now time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, e := range p.byIP {
		if (e.state == stateBound || e.state == stateBusy) && now.Before(e.expires) && e.mac != "" {
			n++
		}
	}
	return n
}
