package bootagent

import (
	"crypto/sha256"
	"encoding/hex"
)

func testBlobDigest(b []byte) ([]byte, string) {
	sum := sha256.Sum256(b)
	return b, "sha256:" + hex.EncodeToString(sum[:])
}
