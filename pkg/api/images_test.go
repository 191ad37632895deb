package api_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/immutableinfra/kiln/pkg/api"
	"github.com/immutableinfra/kiln/pkg/fleet"
)

func digestOf(b []byte) fleet.Digest {
	s := sha256.Sum256(b)
	return fleet.Digest("sha256:" + hex.EncodeToString(s[:]))
}

// blobCount counts the blob files of the env's image store.
func (e *env) blobCount() int {
	m, _ := filepath.Glob(filepath.Join(filepath.Dir(e.dbPath), "blobs", "sha256", "*"))
	return len(m)
}

func TestImport(t *testing.T) {
	e := newEnv(t)
	img1, img2 := makeSquashfs(t, "1"), makeSquashfs(t, "2")

	// Rootfs only: kilnd finds the kernel and builds the initramfs.
	f, _ := os.Open(img1)
	defer f.Close()
	res, err := e.c.ImportImage(e.ctx, "deb@1", "", " console=ttyS0 ", api.ImportFiles{Rootfs: f})
	if err != nil {
		t.Fatal(err)
	}
	im := res.Image
	fi, _ := os.Stat(img1)
	if !res.Created || im.Ref != "deb@1" || im.Name != "deb" || im.Version != "1" || im.Arch != fleet.ArchX86_64 || im.Cmdline != "console=ttyS0" {
		t.Fatalf("import: %+v", res)
	}
	if im.Rootfs.Digest != sha256File(t, img1) || im.Rootfs.Size != fi.Size() {
		t.Fatalf("rootfs %+v, want %s / %d", im.Rootfs, sha256File(t, img1), fi.Size())
	}
	if im.Kernel.Digest != digestOf([]byte("KERNEL "+kver)) || im.KernelPath != "boot/vmlinuz-"+kver || im.KernelVersion != kver {
		t.Fatalf("kernel from the rootfs: %+v %q %q", im.Kernel, im.KernelPath, im.KernelVersion)
	}
	if !im.InitrdBuilt || im.Initrd.IsZero() {
		t.Fatalf("initrd not built: %+v", im)
	}
	if n := e.blobCount(); n != 3 {
		t.Fatalf("%d blobs after the first import, want 3", n)
	}

	// Kernel and initrd given.
	kernel, initrd := []byte("MY KERNEL"), []byte("MY INITRD")
	g, _ := os.Open(img2)
	defer g.Close()
	res, err = e.c.ImportImage(e.ctx, "deb@2", fleet.ArchARM64, "", api.ImportFiles{Rootfs: g, Kernel: bytes.NewReader(kernel), Initrd: bytes.NewReader(initrd)})
	if err != nil {
		t.Fatal(err)
	}
	im2 := res.Image
	if !res.Created || im2.Arch != fleet.ArchARM64 || im2.Kernel.Digest != digestOf(kernel) || im2.Kernel.Size != int64(len(kernel)) ||
		im2.Initrd.Digest != digestOf(initrd) || im2.InitrdBuilt || im2.KernelPath != "" {
		t.Fatalf("import with kernel and initrd: %+v", im2)
	}

	for _, tc := range []struct {
		name   string
		ref    string
		rootfs func() io.Reader
		files  func(*api.ImportFiles)
		arch   string
		code   int
		want   string
		is     error
	}{
		{"identical re-import", "deb@1", file(t, img1), nil, "", 200, "", nil},
		{"conflicting re-import", "deb@1", file(t, img2), nil, "", 409, "exists with other content", fleet.ErrConflict},
		{"kernel changes content", "deb@1", file(t, img1), func(f *api.ImportFiles) { f.Kernel = strings.NewReader("other") }, "", 409, "other content", fleet.ErrConflict},
		{"not a squashfs", "deb@3", func() io.Reader { return strings.NewReader(strings.Repeat("not squashfs ", 1000)) }, nil, "", 400, "not a squashfs", fleet.ErrInvalid},
		{"empty rootfs", "deb@3", func() io.Reader { return strings.NewReader("") }, nil, "", 400, "not a squashfs", fleet.ErrInvalid},
		{"latest", "deb@latest", file(t, img1), nil, "", 400, "explicit version", fleet.ErrInvalid},
		{"no version", "deb", file(t, img1), nil, "", 400, "explicit version", fleet.ErrInvalid},
		{"bad name", "Deb@1", file(t, img1), nil, "", 400, "image name", fleet.ErrInvalid},
		{"bad arch", "deb@3", file(t, img1), nil, "sparc", 400, "arch", fleet.ErrInvalid},
		{"bad ref, big upload", "Deb@big", bigNoise(8 << 20), nil, "", 400, "image name", fleet.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.blobCount()
			files := api.ImportFiles{Rootfs: tc.rootfs()}
			if tc.files != nil {
				tc.files(&files)
			}
			res, err := e.c.ImportImage(e.ctx, tc.ref, tc.arch, "console=ttyS0", files)
			if tc.code == 200 {
				if err != nil || res.Created || res.Image.Rootfs != im.Rootfs || !res.Image.Created.Equal(im.Created) {
					t.Fatalf("re-import: %+v %v", res, err)
				}
			} else {
				wantStatus(t, err, tc.code, tc.want)
				if !errors.Is(err, tc.is) {
					t.Fatalf("%v does not match %v", err, tc.is)
				}
			}
			if after := e.blobCount(); after != before {
				t.Fatalf("blobs %d -> %d", before, after)
			}
			if tmp, _ := filepath.Glob(filepath.Join(filepath.Dir(e.dbPath), "blobs", "tmp", "*")); len(tmp) != 0 {
				t.Fatalf("temp files left: %v", tmp)
			}
		})
	}

	// List, show, latest.
	imgs, err := e.c.Images(e.ctx)
	if err != nil || len(imgs) != 2 || imgs[0].Ref != "deb@1" || imgs[1].Ref != "deb@2" {
		t.Fatalf("images: %+v %v", imgs, err)
	}
	for ref, want := range map[string]string{"deb@1": "deb@1", "deb@2": "deb@2", "deb@latest": "deb@2", "deb": "deb@2"} {
		got, err := e.c.Image(e.ctx, ref)
		if err != nil || got.Ref != want {
			t.Errorf("image %s: %s %v, want %s", ref, got.Ref, err, want)
		}
	}
	_, err = e.c.Image(e.ctx, "deb@-1")
	wantStatus(t, err, http.StatusBadRequest, "image version")

	// One import event per created image, none for the re-import.
	evs, _ := e.c.Events(e.ctx, "", "", -1)
	n := 0
	for _, ev := range evs {
		if ev.Kind == "image.import" {
			n++
			if ev.Actor != testActor || !strings.Contains(ev.Message, "imported deb@") {
				t.Errorf("import event: %+v", ev)
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d import events, want 2: %+v", n, evs)
	}
}

func file(t *testing.T, path string) func() io.Reader {
	return func() io.Reader {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
}

func bigNoise(n int) func() io.Reader {
	return func() io.Reader { return io.LimitReader(rand.Reader, int64(n)) }
}

// multipartBody builds an import upload by hand: parts in the given order.
func multipartBody(t *testing.T, parts [][2]string) (string, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p[0] == "meta" {
			w, err = mw.CreateFormField("meta")
		} else {
			w, err = mw.CreateFormFile(p[0], p[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, p[1])
	}
	mw.Close()
	return mw.FormDataContentType(), &buf
}

func TestImportMultipartErrors(t *testing.T) {
	e := newEnv(t)
	sq, err := os.ReadFile(makeSquashfs(t, "1"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := string(sq)
	meta := func(kernel, initrd bool) string {
		return fmt.Sprintf(`{"ref":"deb@1","kernel":%v,"initrd":%v}`, kernel, initrd)
	}
	for _, tc := range []struct {
		name  string
		parts [][2]string
		code  int
		want  string
	}{
		{"no parts", nil, 400, `first part must be "meta"`},
		{"rootfs first", [][2]string{{"rootfs", rootfs}, {"meta", meta(false, false)}}, 400, `first part must be "meta"`},
		{"bad meta", [][2]string{{"meta", `{"ref":`}, {"rootfs", rootfs}}, 400, "bad meta part"},
		{"rootfs missing", [][2]string{{"meta", meta(false, false)}}, 400, `part "rootfs" missing`},
		{"kernel instead of rootfs", [][2]string{{"meta", meta(true, false)}, {"kernel", "K"}, {"rootfs", rootfs}}, 400, `part "kernel" where "rootfs" was expected`},
		{"kernel missing", [][2]string{{"meta", meta(true, true)}, {"rootfs", rootfs}}, 400, `part "kernel" missing`},
		{"initrd before kernel", [][2]string{{"meta", meta(true, true)}, {"rootfs", rootfs}, {"initrd", "I"}, {"kernel", "K"}}, 400, `part "initrd" where "kernel" was expected`},
		{"initrd missing", [][2]string{{"meta", meta(true, true)}, {"rootfs", rootfs}, {"kernel", "K"}}, 400, `part "initrd" missing`},
		{"in order", [][2]string{{"meta", meta(true, true)}, {"rootfs", rootfs}, {"kernel", "K"}, {"initrd", "I"}}, 201, `"created": true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ct, body := multipartBody(t, tc.parts)
			code, out := e.raw("POST", "/api/v1/images", ct, body)
			var msg api.Error
			json.Unmarshal([]byte(out), &msg)
			if code != tc.code || !strings.Contains(msg.Error+out, tc.want) {
				t.Fatalf("%d %s; want %d containing %s", code, out, tc.code, tc.want)
			}
		})
	}
	if n := e.blobCount(); n != 3 {
		t.Fatalf("%d blobs; only the good upload should have stored its 3", n)
	}
}

func TestRemoveAndGC(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 4; i++ {
		e.importRootfs(fmt.Sprintf("deb@%d", i), makeSquashfs(t, fmt.Sprint(i)))
	}
	e.addHost("n1", "52:54:00:00:00:01", nil)
	if _, err := e.c.Assign(e.ctx, api.AssignRequest{Hosts: []string{"n1"}, Ref: "deb@1"}); err != nil {
		t.Fatal(err)
	}
	// An orphan blob: a verified-looking file no manifest names.
	orphan := []byte("orphan blob")
	od := digestOf(orphan)
	if err := os.WriteFile(filepath.Join(filepath.Dir(e.dbPath), "blobs", "sha256", od.Hex()), orphan, 0o444); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		ref  string
		code int
		want string
	}{
		{"deb", 400, "explicit NAME@VERSION"},
		{"deb@latest", 400, "explicit NAME@VERSION"},
		{"Deb@1", 400, "explicit NAME@VERSION"},
		{"deb@9", 404, "deb@9"},
		{"deb@1", 409, "used by 1 host(s) (n1)"},
	} {
		t.Run("rm "+tc.ref, func(t *testing.T) {
			_, err := e.c.RemoveImage(e.ctx, tc.ref)
			wantStatus(t, err, tc.code, tc.want)
		})
	}

	blobs := e.blobCount()
	im4, _ := e.c.Image(e.ctx, "deb@4")
	rm, err := e.c.RemoveImage(e.ctx, "deb@4")
	if err != nil {
		t.Fatal(err)
	}
	// The kernel blob is shared by every version; rootfs and initrd are not
	// (the initrd is built from the same kernel modules: shared too).
	if rm.Ref != "deb@4" || rm.BytesFreed < im4.Rootfs.Size || e.blobCount() >= blobs {
		t.Fatalf("rm: %+v, blobs %d -> %d", rm, blobs, e.blobCount())
	}
	if _, err := e.c.Image(e.ctx, "deb@4"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("removed image: %v", err)
	}
	if latest, _ := e.c.Image(e.ctx, "deb@latest"); latest.Ref != "deb@3" {
		t.Fatalf("latest after rm: %s", latest.Ref)
	}

	// GC keep 1: deb@3 stays (newest), deb@1 is kept (assigned), deb@2 goes.
	blobs = e.blobCount()
	dry, err := e.c.GC(e.ctx, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || strings.Join(dry.Images, ",") != "deb@2" || len(dry.OrphanBlobs) != 1 || dry.OrphanBlobs[0] != string(od) ||
		len(dry.Kept) != 1 || !strings.HasPrefix(dry.Kept[0], "deb@1") || dry.BytesFreed <= int64(len(orphan)) {
		t.Fatalf("dry run: %+v", dry)
	}
	if imgs, _ := e.c.Images(e.ctx); len(imgs) != 3 || e.blobCount() != blobs {
		t.Fatalf("the dry run removed something: %d images, blobs %d -> %d", len(imgs), blobs, e.blobCount())
	}
	real, err := e.c.GC(e.ctx, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if real.DryRun || strings.Join(real.Images, ",") != "deb@2" || len(real.OrphanBlobs) != 1 || real.BytesFreed != dry.BytesFreed {
		t.Fatalf("gc: %+v (dry run said %+v)", real, dry)
	}
	imgs, _ := e.c.Images(e.ctx)
	if len(imgs) != 2 || imgs[0].Ref != "deb@1" || imgs[1].Ref != "deb@3" {
		t.Fatalf("images after gc: %+v", imgs)
	}
	if again, _ := e.c.GC(e.ctx, 1, false); len(again.Images) != 0 || len(again.OrphanBlobs) != 0 || again.BytesFreed != 0 {
		t.Fatalf("second gc: %+v", again)
	}
	_, err = e.c.GC(e.ctx, -1, true)
	wantStatus(t, err, http.StatusBadRequest, "keep")

	evs, _ := e.c.Events(e.ctx, "", "", -1)
	var kinds []string
	for _, ev := range evs {
		if strings.HasPrefix(ev.Kind, "image.") && ev.Kind != "image.import" {
			kinds = append(kinds, ev.Kind)
		}
	}
	if strings.Join(kinds, ",") != "image.rm,image.gc,image.gc" {
		t.Fatalf("image events (a dry run records none): %v", kinds)
	}
}
