package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostsAssignRevertHistory(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("Sup3rS3cret!\n"), 0o600)
	d.ok("host", "add", "r1-n1", "--mac", "52:54:00:12:34:01", "--label", "rack=r1", "--bmc", "ipmi://admin@198.18.0.101:623", "--bmc-password-file", pw)
	d.ok("host", "add", "r1-n2", "--mac", "52-54-00-12-34-02", "--mac", "52:54:00:12:35:02", "--label", "rack=r1", "--ip", "198.18.1.2/15", "--gateway", "198.18.0.1")
	d.ok("host", "add", "r2-n1", "--mac", "52:54:00:12:34:03", "--label", "rack=r2")

	refused := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"duplicate mac", []string{"host", "add", "r9", "--mac", "52:54:00:12:34:01"}, 1, "mac 52:54:00:12:34:01 belongs to host r1-n1"},
		{"malformed mac", []string{"host", "add", "r9", "--mac", "52:54:00:zz"}, 1, `mac "52:54:00:zz"`},
		{"bad name", []string{"host", "add", "R9!", "--mac", "52:54:00:00:00:99"}, 1, "host name"},
		{"bad label", []string{"host", "add", "r9", "--mac", "52:54:00:00:00:99", "--label", "rack"}, 2, `label "rack" is not k=v`},
		{"bad ip", []string{"host", "add", "r9", "--mac", "52:54:00:00:00:99", "--ip", "198.18.0.300"}, 1, "ip"},
		{"password in bmc url", []string{"host", "add", "r9", "--mac", "52:54:00:00:00:99", "--bmc", "ipmi://admin:hunter2@10.0.0.1"}, 1, "bmc"},
		{"existing name", []string{"host", "add", "r1-n1", "--mac", "52:54:00:00:00:98"}, 1, "already exists"},
		{"usage", []string{"host", "show"}, 2, "takes 1 argument"},
		{"unknown host", []string{"host", "show", "nope"}, 1, "not found"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			r := d.kiln(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line containing %q", r.code, r.stderr, tc.code, tc.want)
			}
			if strings.Contains(r.stderr, "hunter2") {
				t.Fatal("the password from the URL was echoed")
			}
		})
	}

	img1 := squashfs(t, "1")
	img2 := squashfs(t, "2")
	imp := d.kiln("image", "import", "deb@1", "--rootfs", img1, "--cmdline", "console=ttyS0")
	if imp.code != 0 || !strings.Contains(imp.stderr, "uploading rootfs: 100%") {
		t.Fatalf("import: exit %d, no progress shown:\n%s", imp.code, imp.stderr)
	}
	d.ok("image", "import", "deb@2", "--rootfs", img2)
	var again struct {
		Created bool `json:"created"`
	}
	d.json(&again, "image", "import", "deb@1", "--rootfs", img1, "--cmdline", "console=ttyS0")
	if again.Created {
		t.Fatal("re-import of identical content reported created")
	}
	if r := d.kiln("image", "import", "deb@1", "--rootfs", img2); r.code != 1 || !strings.Contains(r.stderr, "exists with other content") {
		t.Fatalf("conflicting import: %d %s", r.code, r.stderr)
	}
	if r := d.kiln("image", "import", "deb@3", "--rootfs", pw); r.code != 1 || !strings.Contains(r.stderr, "not a squashfs") {
		t.Fatalf("non-squashfs import: %d %s", r.code, r.stderr)
	}

	var images []map[string]any
	d.json(&images, "image", "list")
	if len(images) != 2 {
		t.Fatalf("image list: %v", images)
	}
	for _, k := range []string{"ref", "name", "version", "arch", "rootfs", "kernel", "initrd", "created"} {
		if _, ok := images[0][k]; !ok {
			t.Errorf("image JSON lacks %q: %v", k, images[0])
		}
	}
	if rootfs, _ := images[0]["rootfs"].(map[string]any); rootfs["digest"] == nil || rootfs["size"] == nil {
		t.Errorf("rootfs lacks digest/size: %v", images[0]["rootfs"])
	}

	d.ok("assign", "--selector", "rack=r1", "deb@1", "--reason", "first rollout")
	d.ok("assign", "r1-n1", "deb@latest")
	var hosts []map[string]any
	d.json(&hosts, "host", "list", "--selector", "rack=r1")
	if len(hosts) != 2 {
		t.Fatalf("host list rack=r1: %d hosts", len(hosts))
	}
	for _, k := range []string{"name", "macs", "labels", "desired_image", "booted_image"} {
		if _, ok := hosts[0][k]; !ok {
			t.Errorf("host JSON lacks %q: %v", k, hosts[0])
		}
	}
	if hosts[0]["desired_image"] != "deb@2" || hosts[1]["desired_image"] != "deb@1" {
		t.Fatalf("desired images: %v / %v", hosts[0]["desired_image"], hosts[1]["desired_image"])
	}
	if r := d.kiln("image", "rm", "deb@1"); r.code != 1 || !strings.Contains(r.stderr, "in use") {
		t.Fatalf("rm of an assigned image: %d %s", r.code, r.stderr)
	}

	d.ok("revert", "r1-n1")
	var hist []map[string]any
	d.json(&hist, "history", "r1-n1")
	if len(hist) != 3 {
		t.Fatalf("history: %v", hist)
	}
	for _, k := range []string{"time", "from", "to", "actor", "reason"} {
		if _, ok := hist[0][k]; !ok {
			t.Errorf("history JSON lacks %q", k)
		}
	}
	if hist[2]["from"] != "deb@2" || hist[2]["to"] != "deb@1" || hist[0]["reason"] != "first rollout" {
		t.Fatalf("history after revert: %v", hist)
	}
	if r := d.kiln("revert", "r2-n1"); r.code != 1 || !strings.Contains(r.stderr, "no previous image") {
		t.Fatalf("revert without history: %d %s", r.code, r.stderr)
	}

	d.ok("host", "label", "r2-n1", "rack=r1", "role=db")
	d.ok("host", "label", "r2-n1", "role-")
	var h map[string]any
	d.json(&h, "host", "show", "r2-n1")
	if labels := h["labels"].(map[string]any); labels["rack"] != "r1" || labels["role"] != nil {
		t.Fatalf("labels: %v", labels)
	}

	// A mainboard swap and a password rotation keep the host's history;
	// "" moves r1-n2 from its fixed address to the pool.
	pw2 := filepath.Join(t.TempDir(), "pw2")
	os.WriteFile(pw2, []byte("R0tated-S3cret!\n"), 0o600)
	if out := d.ok("host", "set", "r1-n1", "--mac", "52:54:00:12:99:01", "--bmc-password-file", pw2); !strings.Contains(out, "52:54:00:12:99:01") {
		t.Fatalf("host set: %s", out)
	}
	if out := d.ok("host", "set", "r1-n2", "--ip", ""); !strings.Contains(out, "ip:") || !strings.Contains(out, "pool") {
		t.Fatalf("host set --ip \"\": %s", out)
	}
	if r := d.kiln("host", "set", "r1-n2", "--mac", "52:54:00:12:99:01"); r.code != 1 || !strings.Contains(r.stderr, "belongs to host r1-n1") {
		t.Fatalf("host set to a taken MAC: %d %s", r.code, r.stderr)
	}
	if r := d.kiln("host", "set", "r1-n2"); r.code != 1 || !strings.Contains(r.stderr, "nothing to change") {
		t.Fatalf("host set without flags: %d %s", r.code, r.stderr)
	}
	var histAfter []map[string]any
	d.json(&histAfter, "history", "r1-n1")
	if len(histAfter) != 3 {
		t.Fatalf("history after host set: %v", histAfter)
	}

	// The BMC passwords are nowhere to be seen.
	show := d.ok("host", "show", "r1-n1", "-o", "json")
	for where, text := range map[string]string{"host show": show, "kilnd log": d.log.String(), "events": d.ok("events", "-o", "json")} {
		if strings.Contains(text, "Sup3rS3cret") || strings.Contains(text, "R0tated-S3cret") {
			t.Fatalf("%s shows a BMC password", where)
		}
	}
	if !strings.Contains(show, `"has_password": true`) {
		t.Fatalf("host show does not say a password is stored: %s", show)
	}

	// History and assignments survive a restart.
	d.stop()
	d2 := startDaemon(t, d.dataDir)
	var hist2 []map[string]any
	d2.json(&hist2, "history", "r1-n1")
	if len(hist2) != 3 {
		t.Fatalf("history after restart: %v", hist2)
	}
	d2.ok("host", "rm", "r2-n1")
	var evs []map[string]any
	d2.json(&evs, "events", "--host", "r2-n1")
	if len(evs) < 2 {
		t.Fatalf("events of r2-n1: %v", evs)
	}
	gc := d2.ok("image", "gc", "--keep", "0", "--dry-run")
	if !strings.Contains(gc, "kept") {
		t.Fatalf("gc dry run: %s", gc)
	}
	backup := filepath.Join(t.TempDir(), "kiln.db")
	d2.ok("backup", backup)
	if fi, err := os.Stat(backup); err != nil || fi.Size() == 0 {
		t.Fatalf("backup: %v", err)
	}
}

func TestSecondDaemonFailsFast(t *testing.T) {
	dir := t.TempDir()
	startDaemon(t, dir)
	r := startFailing(t, dir)
	if r.code != 3 || !strings.Contains(r.stderr, "locked by another process") {
		t.Fatalf("second kilnd: exit %d: %s", r.code, r.stderr)
	}
}

// TestSeparateBootListener: with --boot-listen the boot endpoints move to
// their own listener and the API listener no longer serves them.
func TestSeparateBootListener(t *testing.T) {
	boot := freeAddr(t)
	d := startDaemon(t, t.TempDir(), "--boot-listen", boot)
	d.ok("host", "add", "h1", "--mac", "52:54:00:00:00:01")
	get := func(addr string) (int, string) {
		resp, err := http.Get("http://" + addr + "/boot/52:54:00:00:00:01.ipxe")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(boot); code != http.StatusOK || !strings.HasPrefix(body, "#!ipxe") || !strings.Contains(body, "exit") {
		t.Fatalf("boot listener: %d %q", code, body)
	}
	if code, _ := get(d.addr); code != http.StatusNotFound {
		t.Fatalf("API listener still serves boot scripts: %d", code)
	}
}
