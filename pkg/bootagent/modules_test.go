package bootagent

import (
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// The virtio/loop/squashfs/overlay set TESTBED.md lists, as depmod writes it.
const virtioDep = `kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
kernel/drivers/block/loop.ko:
kernel/fs/squashfs/squashfs.ko:
kernel/fs/overlayfs/overlay.ko:
`

func TestModuleOrder(t *testing.T) {
	tests := []struct {
		name    string
		dep     string
		want    []string // module names in order; nil with wantErr
		wantErr error
		errHas  string
	}{
		{name: "virtio set", dep: virtioDep, want: []string{
			"loop", "failover", "net_failover", "virtio_net",
			"virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci", "overlay", "squashfs",
		}},
		{name: "chain listed backwards", dep: "c.ko: b.ko a.ko\nb.ko: a.ko\na.ko:\n", want: []string{"a", "b", "c"}},
		{name: "dependency without own line", dep: "x.ko: y-dep.ko\n", want: []string{"y_dep", "x"}},
		{name: "blank lines and comments", dep: "# generated\n\nb.ko: a.ko\n", want: []string{"a", "b"}},
		{name: "cycle", dep: "a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n", wantErr: ErrModuleCycle, errHas: "a -> b -> c -> a"},
		{name: "self cycle", dep: "a.ko: a.ko\n", wantErr: ErrModuleCycle, errHas: "a -> a"},
		{name: "malformed line", dep: "a.ko b.ko\n", wantErr: ErrModulesDep, errHas: "line 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deps, err := ParseModulesDep(strings.NewReader(tt.dep))
			var order []string
			if err == nil {
				order, err = deps.Order()
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %v naming %q", err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			names := make([]string, len(order))
			for i, m := range order {
				names[i] = ModuleName(m)
			}
			if !slices.Equal(names, tt.want) {
				t.Errorf("order = %v, want %v", names, tt.want)
			}
			// Independently of the exact order: every module after its deps.
			pos := map[string]int{}
			for i, m := range order {
				pos[m] = i
			}
			for m, ds := range deps {
				for _, d := range ds {
					if pos[d] >= pos[m] {
						t.Errorf("%s loaded before its dependency %s", m, d)
					}
				}
			}
		})
	}
}

func TestModuleOrderDeterministic(t *testing.T) {
	first := ""
	for i := range 20 {
		deps, err := ParseModulesDep(strings.NewReader(virtioDep))
		if err != nil {
			t.Fatal(err)
		}
		order, err := deps.Order()
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(order, ",")
		if i == 0 {
			first = got
		} else if got != first {
			t.Fatalf("run %d: order %s differs from %s", i, got, first)
		}
	}
}

func TestPlanModules(t *testing.T) {
	full := fstest.MapFS{"modules.dep": {Data: []byte(virtioDep)}}
	for _, l := range strings.Split(strings.TrimSpace(virtioDep), "\n") {
		m, _, _ := strings.Cut(l, ":")
		full[m] = &fstest.MapFile{Data: []byte("\x7fELF")}
	}
	missing := fstest.MapFS{}
	for k, v := range full {
		if k != "kernel/net/core/failover.ko" {
			missing[k] = v
		}
	}
	tests := []struct {
		name    string
		fs      fstest.MapFS
		wantN   int
		wantErr error
		errHas  string
	}{
		{name: "all present", fs: full, wantN: 9},
		{name: "missing file", fs: missing, wantErr: ErrModuleMissing, errHas: "kernel/net/core/failover.ko"},
		{name: "no modules.dep", fs: fstest.MapFS{}, wantErr: fs.ErrNotExist, errHas: "modules.dep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order, err := PlanModules(tt.fs)
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("err = %v, want %v naming %q", err, tt.wantErr, tt.errHas)
				}
			default:
				if err != nil || len(order) != tt.wantN {
					t.Fatalf("order = %v, err = %v", order, err)
				}
			}
		})
	}
}
