// Package httpboot serves kilnd's HTTP boot endpoints: the per-host iPXE
// script, the immutable content-addressed blobs the script and kiln-init
// download, the iPXE firmware for UEFI HTTP boot, and the boot reports hosts
// send back (docs/boot-protocol.md is the contract).
//
// Routes (Go 1.22 ServeMux patterns; GET patterns answer HEAD too):
//
//	GET  /boot/{mac}.ipxe        the host's iPXE script (no-store)
//	GET  /blobs/sha256/{hex}     a blob: Range, ETag, If-None-Match, immutable
//	GET  /firmware/{name}        an iPXE binary from the firmware fs.FS
//	POST /boot/report            a boot phase report, Authorization: Bearer <token>
//
// A Handler is an http.Handler on its own ServeMux; Mount adds the same routes
// to a mux shared with other handlers (kilnd's /api/v1), and Serve runs them
// alone on a listener.
//
// MAC addresses in script URLs: iPXE writes ${net0/mac} lowercase and colon
// separated, which is the canonical form. Any other form fleet.NormalizeMAC
// accepts (upper case, dashes) is normalised rather than refused, so that a
// hand-written chain URL works; the normalised MAC is what the script puts in
// kiln.mac. A string that is not an Ethernet MAC gets 400.
package httpboot
