package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// randomFile writes size pseudo-random (incompressible) bytes to path.
func randomFile(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	rng := rand.NewChaCha8([32]byte{'k', 'i', 'l', 'n'})
	if _, err := io.CopyN(w, rng, size); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// benchRootfs returns a squashfs of about size bytes that kiln accepts as
// an image: incompressible data, a fake kernel at /boot/vmlinuz-bench and
// lib/modules/bench/modules.dep. It is cached in cfg.Cache by size.
func (r *runner) benchRootfs(ctx context.Context, size int64) (string, error) {
	out := filepath.Join(r.cfg.Cache, fmt.Sprintf("bench-rootfs-%dM.squashfs", size>>20))
	if st, err := os.Stat(out); err == nil && st.Size() >= size {
		return out, nil
	}
	if err := need("mksquashfs"); err != nil {
		return "", err
	}
	tree, err := os.MkdirTemp(r.work, "rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tree)
	for _, d := range []string{"boot", "lib/modules/bench", "data"} {
		if err := os.MkdirAll(filepath.Join(tree, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := randomFile(filepath.Join(tree, "boot/vmlinuz-bench"), 1<<20); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tree, "lib/modules/bench/modules.dep"), nil, 0o644); err != nil {
		return "", err
	}
	if err := randomFile(filepath.Join(tree, "data/blob"), size-(1<<20)); err != nil {
		return "", err
	}
	r.logf("http: building a %d MiB squashfs (cached in %s)", size>>20, r.cfg.Cache)
	tmp := out + ".tmp"
	os.Remove(tmp)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if o, err := exec.CommandContext(cctx, "mksquashfs", tree, tmp, "-noappend", "-noI", "-noD", "-noF", "-noX", "-no-xattrs", "-quiet").CombinedOutput(); err != nil {
		return "", fmt.Errorf("mksquashfs: %w: %s", err, o)
	}
	return out, os.Rename(tmp, out)
}

const nginxConf = `worker_processes auto;
user root;
daemon off;
master_process on;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	default_type application/octet-stream;
	server {
		listen %[2]s;
		location /blobs/sha256/ { alias %[3]s/; }
		location / { root %[4]s; }
	}
}
`

// startNginx serves blobDir under /blobs/sha256/ and docRoot under / on
// listen (ADDR:PORT) inside ns, with sendfile on.
func (r *runner) startNginx(ctx context.Context, ns, listen, blobDir, docRoot string) (*proc, error) {
	if err := need("nginx"); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(r.work, "nginx-")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, dir, listen, blobDir, docRoot)), 0o644); err != nil {
		return nil, err
	}
	pr, err := r.start(ns, "nginx", nil, "nginx", "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	if err != nil {
		return nil, err
	}
	_, port, _ := strings.Cut(listen, ":")
	pn, _ := strconv.Atoi(port)
	if err := r.waitListen(ctx, pr, ns, "tcp", pn, 20*time.Second); err != nil {
		pr.Stop()
		return nil, fmt.Errorf("%w\nerror.log:\n%s", err, tailFile(filepath.Join(dir, "error.log"), 20))
	}
	return pr, nil
}

// wrkRange is a wrk script asking for random 128 KiB ranges of a blob of
// size bytes.
const wrkRange = `local size = %d
local chunk = 131072
local n = math.floor(size / chunk)
function setup(thread) thread:set("seed", math.random(1, 1000000)) end
function init(args) math.randomseed(seed) end
request = function()
	local off = math.random(0, n - 1) * chunk
	return wrk.format("GET", nil, {["Range"] = "bytes=" .. off .. "-" .. (off + chunk - 1)})
end
`

// http compares kilnd's blob serving with nginx (sendfile) on the same file:
// 1, 8 and 32 parallel full downloads (curl -Z in the client namespace), and
// random 128 KiB Range reads with wrk.
func (r *runner) http(ctx context.Context) error {
	if err := need("curl", "wrk", "nginx", "mksquashfs", "ss"); err != nil {
		return err
	}
	size := int64(1 << 30)
	wrkDur := 10
	if r.cfg.Quick {
		size, wrkDur = 64<<20, 3
	}
	rootfs, err := r.benchRootfs(ctx, size)
	if err != nil {
		return err
	}
	p, err := r.newPair(ctx, "h")
	if err != nil {
		return err
	}
	data := filepath.Join(r.work, "kilnd-http")
	k, err := r.startKilnd(ctx, p.srvNS, data)
	if err != nil {
		return err
	}
	r.logf("http: importing %s into kilnd", filepath.Base(rootfs))
	if _, err := r.kiln(ctx, p.srvNS, data, 10*time.Minute, "image", "import", "bench@1", "--rootfs", rootfs, "--cmdline", "console=ttyS0"); err != nil {
		k.Stop()
		return fmt.Errorf("%w\nkilnd log:\n%s", err, k.Log())
	}
	out, err := r.kiln(ctx, p.srvNS, data, time.Minute, "image", "show", "bench@1", "-o", "json")
	k.Stop()
	if err != nil {
		return err
	}
	var img struct {
		Rootfs struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal([]byte(out), &img); err != nil || !strings.HasPrefix(img.Rootfs.Digest, "sha256:") {
		return fmt.Errorf("kiln image show: %v: %.300s", err, out)
	}
	hex := strings.TrimPrefix(img.Rootfs.Digest, "sha256:")
	blobDir := filepath.Join(data, "blobs", "sha256")
	st, err := os.Stat(filepath.Join(blobDir, hex))
	if err != nil {
		return fmt.Errorf("blob of bench@1: %w", err)
	}
	size = st.Size()
	// Warm the page cache so that both servers read from memory.
	if f, err := os.Open(filepath.Join(blobDir, hex)); err == nil {
		io.Copy(io.Discard, f)
		f.Close()
	}
	luaPath := filepath.Join(r.work, "range.lua")
	if err := os.WriteFile(luaPath, []byte(fmt.Sprintf(wrkRange, size)), 0o644); err != nil {
		return err
	}

	type server struct {
		name  string
		url   string
		start func(ctx context.Context) (*proc, error)
	}
	servers := []server{
		{Kiln, "http://" + serverIP + ":8080/blobs/sha256/" + hex, func(ctx context.Context) (*proc, error) { return r.startKilnd(ctx, p.srvNS, data) }},
		{"nginx", "http://" + serverIP + ":80/blobs/sha256/" + hex, func(ctx context.Context) (*proc, error) {
			return r.startNginx(ctx, p.srvNS, serverIP+":80", blobDir, r.work)
		}},
	}
	const sec = "http"
	mbps := func(n int) string { return fmt.Sprintf("%d parallel downloads, aggregate", n) }
	cpuGB := func(n int) string { return fmt.Sprintf("%d parallel downloads, server CPU", n) }
	clients := []int{1, 8, 32}
	for _, n := range clients {
		peer := Peer{Name: "nginx"}
		if n == 32 {
			peer.Min = 0.9
		}
		r.res.Declare(Metric{Section: sec, Name: mbps(n), Unit: "MB/s", Higher: true, Peers: []Peer{peer}})
	}
	for _, n := range clients {
		peer := Peer{Name: "nginx"}
		if n == 32 {
			peer.Max = 1.0
		}
		r.res.Declare(Metric{Section: sec, Name: cpuGB(n), Unit: "CPU s/GB", Peers: []Peer{peer}})
	}
	const wrkRPS, wrkCPU = "random 128 KiB Range reads, 16 connections", "random 128 KiB Range reads, server CPU"
	r.res.Declare(Metric{Section: sec, Name: wrkRPS, Unit: "req/s", Higher: true, Peers: []Peer{{Name: "nginx"}}})
	r.res.Declare(Metric{Section: sec, Name: wrkCPU, Unit: "CPU s/GB", Peers: []Peer{{Name: "nginx"}}})

	for rep := 0; rep < r.cfg.Reps; rep++ {
		for _, s := range servers {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			pr, err := s.start(ctx)
			if err != nil {
				return err
			}
			for _, n := range clients {
				args := []string{"curl", "-sS", "--fail", "-Z", "--parallel-max", strconv.Itoa(n), "--parallel-immediate", "-w", "%{size_download}\\n"}
				for i := 0; i < n; i++ {
					args = append(args, "-o", "/dev/null", s.url)
				}
				bound := 2*time.Minute + time.Duration(size*int64(n)/(20<<20))*time.Second // >= 20 MiB/s
				c0 := cpuSeconds(pr.Pid())
				t0 := time.Now()
				out, errOut, err := r.client(ctx, p.cliNS, bound, args...)
				d := time.Since(t0)
				cpu := cpuSeconds(pr.Pid()) - c0
				if err != nil {
					pr.Stop()
					return fmt.Errorf("%s, %d downloads: %w: %s\nserver log:\n%s", s.name, n, err, strings.TrimSpace(errOut), pr.Log())
				}
				var total int64
				for _, f := range strings.Fields(out) {
					v, _ := strconv.ParseInt(f, 10, 64)
					total += v
				}
				if total != size*int64(n) {
					pr.Stop()
					return fmt.Errorf("%s, %d downloads: got %d bytes, want %d", s.name, n, total, size*int64(n))
				}
				gb := float64(total) / 1e9
				r.res.Add(sec, mbps(n), s.name, float64(total)/1e6/d.Seconds())
				r.res.Add(sec, cpuGB(n), s.name, cpu/gb)
				r.logf("http %-5s %2d downloads of %d MiB: %.0f MB/s, server CPU %.2f s (%.3f s/GB)", s.name, n, size>>20, float64(total)/1e6/d.Seconds(), cpu, cpu/gb)
			}
			c0 := cpuSeconds(pr.Pid())
			out, errOut, err := r.client(ctx, p.cliNS, time.Duration(wrkDur+60)*time.Second, "wrk", "-t", "2", "-c", "16", "-d", strconv.Itoa(wrkDur)+"s", "-s", luaPath, s.url)
			cpu := cpuSeconds(pr.Pid()) - c0
			if err != nil {
				pr.Stop()
				return fmt.Errorf("%s: wrk: %w: %s", s.name, err, errOut)
			}
			w, err := ParseWrk(out)
			if err != nil {
				pr.Stop()
				return fmt.Errorf("%s: %w:\n%s", s.name, err, out)
			}
			if w.Non2xx > 0 || w.Requests == 0 {
				pr.Stop()
				return fmt.Errorf("%s: wrk: %d of %d responses were not 2xx:\n%s", s.name, w.Non2xx, w.Requests, out)
			}
			gb := float64(w.Requests) * 131072 / 1e9
			r.res.Add(sec, wrkRPS, s.name, w.ReqPerSec)
			r.res.Add(sec, wrkCPU, s.name, cpu/gb)
			r.logf("http %-5s wrk ranges: %.0f req/s, %.0f MB/s, %d socket errors, server CPU %.3f s/GB", s.name, w.ReqPerSec, w.BytesPerSec/1e6, w.Errors, cpu/gb)
			pr.Stop()
		}
	}
	r.res.Note("http: blob of %d MiB in the page cache; curl -Z (one client process) in the client namespace; CPU = utime+stime of the server's process tree (kilnd; nginx master+workers, worker_processes auto, sendfile on, tcp_nopush on) per GB served; wrk -t2 -c16 %ds.", size>>20, wrkDur)
	return nil
}
