package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// progressReader reports how much of a known-size upload has been read: a
// bar on a terminal, else a line every 10% (for logs and CI).
type progressReader struct {
	r        io.Reader
	name     string
	total    int64
	done     int64
	bar      *progressbar.ProgressBar
	w        io.Writer
	lastTen  int64
	started  time.Time
	finished bool
}

func (a *app) progress(r io.Reader, name string, total int64) *progressReader {
	p := &progressReader{r: r, name: name, total: total, w: a.err, lastTen: -1, started: time.Now()}
	if a.isTTY {
		p.bar = progressbar.NewOptions64(total, progressbar.OptionSetWriter(a.err), progressbar.OptionSetDescription(name),
			progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(30), progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionShowCount(), progressbar.OptionOnCompletion(func() { fmt.Fprintln(a.err) }))
	}
	return p
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.bar != nil {
		p.bar.Add(n)
	} else if p.total > 0 {
		if ten := p.done * 10 / p.total; ten != p.lastTen {
			p.lastTen = ten
			fmt.Fprintf(p.w, "%s: %3d%% (%s of %s)\n", p.name, ten*10, human(p.done), human(p.total))
		}
	}
	if err == io.EOF && !p.finished {
		p.finished = true
		if p.bar != nil {
			p.bar.Finish()
		}
	}
	return n, err
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
