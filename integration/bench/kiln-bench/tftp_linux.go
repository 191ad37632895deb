package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// tftpBlksize is the block size every client asks for (fits a 1500 MTU).
const tftpBlksize = "1468"

// tftp times fetches of ipxe.efi and a big file (32 MiB, 8 MiB with -quick)
// by 1 and 16 concurrent clients (atftp and curl) from kilnd (its own TFTP
// server, the big file through --tftp-assets), dnsmasq (--enable-tftp) and
// tftpd-hpa. The time of a batch is from the first client's start to the
// last one's end; every client must succeed with the full size.
func (r *runner) tftp(ctx context.Context) error {
	if err := need("dnsmasq", "in.tftpd", "atftp", "curl", "ss"); err != nil {
		return err
	}
	p, err := r.newPair(ctx, "t")
	if err != nil {
		return err
	}
	root := filepath.Join(r.work, "tftp-root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	ipxe, err := os.ReadFile(filepath.Join(r.cfg.Repo, "firmware", "ipxe.efi"))
	if err != nil {
		return fmt.Errorf("firmware: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, "ipxe.efi"), ipxe, 0o644); err != nil {
		return err
	}
	bigSize := int64(32 << 20)
	if r.cfg.Quick {
		bigSize = 8 << 20
	}
	bigName := fmt.Sprintf("big-%dM.bin", bigSize>>20)
	if err := randomFile(filepath.Join(root, bigName), bigSize); err != nil {
		return err
	}
	files := []struct {
		name string
		size int64
	}{{"ipxe.efi", int64(len(ipxe))}, {bigName, bigSize}}

	waitTFTP := func(ctx context.Context, pr *proc, err error) (*proc, error) {
		if err != nil {
			return nil, err
		}
		if err := r.waitListen(ctx, pr, p.srvNS, "udp", 69, 20*time.Second); err != nil {
			pr.Stop()
			return nil, err
		}
		return pr, nil
	}
	type server struct {
		name  string
		start func(ctx context.Context) (*proc, error)
	}
	servers := []server{
		{Kiln, func(ctx context.Context) (*proc, error) {
			dir, err := os.MkdirTemp(r.work, "kilnd-tftp-")
			if err != nil {
				return nil, err
			}
			pr, err := r.startKilnd(ctx, p.srvNS, dir, "--interface", p.srvIf, "--advertise-ip", serverIP, "--dhcp-mode", "off", "--tftp-assets", root)
			return waitTFTP(ctx, pr, err)
		}},
		{"dnsmasq", func(ctx context.Context) (*proc, error) {
			pr, err := r.start(p.srvNS, "dnsmasq-tftp", nil, "dnsmasq", "-d", "--conf-file=/dev/null", "--port=0", "--interface="+p.srvIf, "--bind-interfaces",
				"--enable-tftp", "--tftp-root="+root, "--tftp-max=64", "--user=root", "--group=root", "--pid-file="+filepath.Join(r.work, "dnsmasq-tftp.pid"))
			return waitTFTP(ctx, pr, err)
		}},
		{"tftpd-hpa", func(ctx context.Context) (*proc, error) {
			pr, err := r.start(p.srvNS, "tftpd-hpa", nil, "in.tftpd", "-L", "-u", "root", "-s", root, "-a", serverIP+":69")
			return waitTFTP(ctx, pr, err)
		}},
	}
	const sec = "tftp"
	metric := func(file string, n int, tool string) string {
		return fmt.Sprintf("%s ×%d %s", file, n, tool)
	}
	peers := []Peer{{"dnsmasq", 0, 1.0}, {Name: "tftpd-hpa"}}
	for _, f := range files {
		for _, n := range []int{1, 16} {
			for _, tool := range []string{"atftp", "curl"} {
				r.res.Declare(Metric{Section: sec, Name: metric(f.name, n, tool), Unit: "ms", Peers: peers})
			}
		}
	}
	for rep := 0; rep < r.cfg.Reps; rep++ {
		for _, s := range servers {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			pr, err := s.start(ctx)
			if err != nil {
				return err
			}
			for _, f := range files {
				for _, n := range []int{1, 16} {
					for _, tool := range []string{"atftp", "curl"} {
						d, err := r.tftpBatch(ctx, p, tool, f.name, f.size, n)
						if err != nil {
							pr.Stop()
							return fmt.Errorf("%s: %w\nserver log:\n%s", s.name, err, pr.Log())
						}
						ms := float64(d.Microseconds()) / 1000
						r.res.Add(sec, metric(f.name, n, tool), s.name, ms)
						r.logf("tftp %-9s %s: %.1f ms (%.1f MB/s)", s.name, metric(f.name, n, tool), ms, float64(f.size*int64(n))/d.Seconds()/1e6)
					}
				}
			}
			pr.Stop()
		}
	}
	r.res.Note("tftp: blksize %s, no windowsize; ipxe.efi is %d bytes; kilnd serves its embedded firmware and --tftp-assets, dnsmasq --enable-tftp, tftpd-hpa in.tftpd -s; times from first start to last end of the batch.", tftpBlksize, len(ipxe))
	return nil
}

// tftpBatch fetches file with n concurrent clients and returns the wall
// time of the batch.
func (r *runner) tftpBatch(ctx context.Context, p pair, tool, file string, size int64, n int) (time.Duration, error) {
	bound := 60*time.Second + time.Duration(size*int64(n)/(1<<20))*time.Second // >= 1 MiB/s
	var wg sync.WaitGroup
	errs := make([]error, n)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch tool {
			case "curl":
				out, errOut, err := r.client(ctx, p.cliNS, bound, "curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{size_download}",
					"--tftp-blksize", tftpBlksize, "tftp://"+serverIP+"/"+file)
				if err != nil {
					errs[i] = fmt.Errorf("curl %s: %w: %s", file, err, strings.TrimSpace(errOut))
				} else if got, _ := strconv.ParseInt(strings.TrimSpace(out), 10, 64); got != size {
					errs[i] = fmt.Errorf("curl %s: got %s bytes, want %d", file, out, size)
				}
			case "atftp":
				// atftp's exit status is not reliable: write to a file and check its size.
				local := filepath.Join(r.work, fmt.Sprintf("atftp-%d", i))
				defer os.Remove(local)
				_, errOut, err := r.client(ctx, p.cliNS, bound, "atftp", "--option", "blksize "+tftpBlksize, "-g", "-r", file, "-l", local, serverIP)
				st, serr := os.Stat(local)
				switch {
				case err != nil:
					errs[i] = fmt.Errorf("atftp %s: %w: %s", file, err, strings.TrimSpace(errOut))
				case serr != nil || st.Size() != size:
					errs[i] = fmt.Errorf("atftp %s: incomplete file (%v): %s", file, serr, strings.TrimSpace(errOut))
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(t0)
	for _, err := range errs {
		if err != nil {
			return d, err
		}
	}
	return d, nil
}
