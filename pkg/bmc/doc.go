// Package bmc controls host power and the next boot device through the hosts'
// baseboard management controllers, using bmclib (IPMI through ipmitool, and
// Redfish through bmclib's gofish provider).
//
// A Manager is the real implementation; Fake has the same method set for the
// tests of other packages. Both are safe for concurrent use.
//
// The Manager holds at most one open session per BMC (keyed by host:port):
// callers for the same BMC queue behind each other, because real BMCs lock
// out clients that open many sessions. Globally, at most Config.Concurrency
// BMC sessions are open at once. Every session is closed, even when the
// caller's context is cancelled. BMC passwords never appear in errors or log
// output: text coming back from bmclib is scrubbed before it is returned or
// logged.
package bmc
