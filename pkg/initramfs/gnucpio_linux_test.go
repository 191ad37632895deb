package initramfs

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/immutableinfra/kiln/pkg/testtool"
)

// TestGNUCpio checks the archive against an independent implementation: GNU
// cpio must list the same members as List, and extracting with it must give
// the same file contents, modes and (as root) the console device node.
func TestGNUCpio(t *testing.T) {
	cpio := testtool.Need(t, "cpio")
	var buf bytes.Buffer
	if _, err := Build(&buf, Options{Init: fakeInit, Root: fakeRoot(t), KernelVersion: testKver}); err != nil {
		t.Fatal(err)
	}
	raw := gunzip(t, buf.Bytes())
	ents, data := readArchive(t, buf.Bytes())

	t.Run("list", func(t *testing.T) {
		cmd := exec.Command(cpio, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -t: %v", err)
		}
		got := strings.Fields(string(out))
		var want []string
		for _, e := range ents {
			want = append(want, e.Name)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("cpio -t lists\n%s\nList gives\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})

	t.Run("extract", func(t *testing.T) {
		dir := t.TempDir()
		args := []string{"-i", "-d", "--quiet", "--no-absolute-filenames", "-D", dir}
		root := os.Geteuid() == 0
		if !root {
			args = append(args, "-f", "dev/console") // mknod needs root
		}
		cmd := exec.Command(cpio, args...)
		cmd.Stdin = bytes.NewReader(raw)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cpio -i: %v\n%s", err, out)
		}
		var extracted []string
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || p == dir {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			extracted = append(extracted, rel)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(extracted)
		var want []string
		for _, e := range ents {
			if e.Name == "dev/console" && !root {
				continue
			}
			want = append(want, e.Name)
		}
		if strings.Join(extracted, " ") != strings.Join(want, " ") {
			t.Errorf("extracted %v\nwant %v", extracted, want)
		}
		for _, e := range ents {
			p := filepath.Join(dir, e.Name)
			fi, err := os.Lstat(p)
			if err != nil {
				if e.Name == "dev/console" && !root {
					continue
				}
				t.Errorf("%s: %v", e.Name, err)
				continue
			}
			if fi.Mode().Type() != e.Mode.Type() || fi.Mode().Perm() != e.Mode.Perm() {
				t.Errorf("%s: extracted mode %v, archive %v", e.Name, fi.Mode(), e.Mode)
			}
			switch {
			case e.Mode.IsRegular():
				b, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(b, data[e.Name]) {
					t.Errorf("%s: extracted content differs (%d vs %d bytes, %v)", e.Name, len(b), len(data[e.Name]), err)
				}
			case e.Mode&fs.ModeCharDevice != 0:
				st := fi.Sys().(*syscall.Stat_t)
				if maj, min := (st.Rdev>>8)&0xfff, st.Rdev&0xff|(st.Rdev>>12)&0xfff00; maj != 5 || min != 1 {
					t.Errorf("%s: extracted device %d,%d, want 5,1", e.Name, maj, min)
				}
			}
		}
	})
}
