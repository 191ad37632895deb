package httpboot

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/immutableinfra/kiln/pkg/fleet"
)

// blobCacheControl marks blobs as immutable: a digest names one content
// forever, so any cache may keep it.
const blobCacheControl = "public, max-age=31536000, immutable"

// validHex reports whether s is 64 lowercase hex digits.
func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// serveBlob answers GET and HEAD /blobs/sha256/<hex> with the verified blob,
// through http.ServeContent on the *os.File (Range, If-None-Match, If-Range;
// the body goes out with sendfile).
func (h *Handler) serveBlob(w http.ResponseWriter, r *http.Request) {
	hex := r.PathValue("hex")
	if !validHex(hex) {
		http.Error(w, "bad digest: want /blobs/sha256/<64 lowercase hex digits>", http.StatusBadRequest)
		return
	}
	d := fleet.Digest("sha256:" + hex)
	f, err := h.blobs.Open(d)
	switch {
	case errors.Is(err, fleet.ErrNotFound):
		http.Error(w, "blob not found", http.StatusNotFound)
		return
	case err != nil:
		h.log.Error("open blob", "digest", d, "err", err)
		http.Error(w, "cannot open blob", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	hd := w.Header()
	hd.Set("ETag", `"`+string(d)+`"`)
	hd.Set("Cache-Control", blobCacheControl)
	hd.Set("Content-Type", "application/octet-stream")
	// The zero modtime leaves Last-Modified out: the ETag is the validator.
	http.ServeContent(w, r, "", time.Time{}, f)
}

// firmwareType returns the Content-Type of a firmware file. UEFI HTTP boot
// (EDK2's HttpBootDxe) refuses a boot file whose Content-Type is present but
// not application/efi, so .efi files must carry it.
func firmwareType(name string) string {
	if strings.EqualFold(path.Ext(name), ".efi") {
		return "application/efi"
	}
	return "application/octet-stream"
}

// serveFirmware answers GET and HEAD /firmware/<name> from the firmware
// fs.FS. Only plain files at the root of the FS are served; anything else,
// including every name with a path separator or dot segment, is 404.
func (h *Handler) serveFirmware(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if h.fw == nil || !fs.ValidPath(name) || name == "." || strings.ContainsAny(name, "/\\") {
		http.NotFound(w, r)
		return
	}
	f, err := h.fw.Open(name)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			h.log.Error("open firmware", "name", name, "err", err)
		}
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	content, ok := f.(io.ReadSeeker)
	if !ok {
		data, err := io.ReadAll(f)
		if err != nil {
			h.log.Error("read firmware", "name", name, "err", err)
			http.Error(w, "cannot read firmware", http.StatusInternalServerError)
			return
		}
		content = bytes.NewReader(data)
	}
	w.Header().Set("Content-Type", firmwareType(name))
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", st.ModTime(), content)
}
