// Package progress draws the harness's live progress bars: count, rate, ETA
// and, in the description, the errors so far.
package progress

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Bar is one progress bar. A nil *Bar draws nothing, so callers need no
// checks when progress output is off.
type Bar struct {
	bar  *progressbar.ProgressBar
	what string
}

// New starts a bar of total steps named what, drawn on w; nil w draws nothing.
func New(w io.Writer, total int, what string) *Bar {
	if w == nil {
		return nil
	}
	return &Bar{what: what, bar: progressbar.NewOptions(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("obj"),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)}
}

// Set moves the bar to n done, with errors shown next to its name.
func (b *Bar) Set(n int, errors int64) {
	if b == nil {
		return
	}
	if errors > 0 {
		b.bar.Describe(fmt.Sprintf("%s (%d errors)", b.what, errors))
	}
	_ = b.bar.Set(n)
}

// Finish draws the bar one last time and ends its line.
func (b *Bar) Finish() {
	if b == nil {
		return
	}
	if b.bar.IsFinished() {
		return
	}
	// Exit keeps the count where it is (Finish would fill the bar) and ends
	// the line through the completion callback.
	_ = b.bar.Exit()
}
