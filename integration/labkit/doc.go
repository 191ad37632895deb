// Package labkit builds a virtual rack on one Linux machine: a private
// network namespace with a bridge on 198.18.0.0/15, kilnd serving it, and
// QEMU hosts (SeaBIOS+iPXE or OVMF) each behind its own ipmi_sim BMC whose
// chassis_control program powers the VM and honours "next boot from
// network". Nothing is routed out of the namespace.
//
// It serves `make lab` (cmd/kiln-lab) and the integration tests. It needs
// root, iproute2, qemu-system-x86, ovmf, openipmi and ipmitool.
package labkit
