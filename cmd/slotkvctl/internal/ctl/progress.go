package ctl

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// isTerminal reports whether w is a terminal with a size, where progress
// is drawn as bars refreshed in place; elsewhere (a pipe, a file, a CI log)
// it is written as one plain line per update. A terminal of no rows (a
// pseudo-terminal nobody sized) would show no bar at all.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	width, height, err := term.GetSize(int(f.Fd()))
	return err == nil && width > 0 && height > 0
}

// follow opens a watch stream and hands every message to show until the
// stream ends, then returns the last message. A stream cut by a restarting
// service (Unavailable) is opened again, a second apart, up to 30 times.
func follow[R any](ctx context.Context, what string, open func() (grpc.ServerStreamingClient[R], error), show func(*R)) (*R, error) {
	var last *R
	for attempt := 0; ; attempt++ {
		s, err := open()
		if err != nil {
			return nil, err
		}
		for {
			msg, err := s.Recv()
			if err == io.EOF {
				if last == nil {
					return nil, fmt.Errorf("watch of %s ended without news", what)
				}
				return last, nil
			}
			if err != nil {
				if status.Code(err) == codes.Unavailable && attempt < 30 && ctx.Err() == nil {
					select {
					case <-ctx.Done():
						return nil, ctx.Err()
					case <-time.After(time.Second):
					}
					break
				}
				return nil, err
			}
			last = msg
			show(msg)
		}
	}
}

// barScale is the total of every drawn bar: callers give a fraction, which
// is drawn in thousandths, and a bar completes only when its item is done,
// not when an estimate of its total is reached.
const barScale = 1000

// barWidth is the most columns a drawn bar takes.
const barWidth = 30

// bars draws progress bars with mpb, one per key in the order first seen:
// a label before the bar, the fill, and a text after it, all set by the
// caller as news arrives.
type bars struct {
	p    *mpb.Progress
	byID map[string]*bar
	ids  []string
}

type bar struct {
	b           *mpb.Bar
	label, text atomic.Pointer[string]
}

// newBars draws on w. Refresh is forced: the caller says w is a terminal
// (and tests render into a buffer).
func newBars(ctx context.Context, w io.Writer) *bars {
	return &bars{
		p: mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithAutoRefresh(), mpb.WithRefreshRate(200*time.Millisecond),
			// The line's width where the terminal's is unknown (a buffer).
			mpb.WithWidth(120)),
		byID: map[string]*bar{},
	}
}

// set updates bar id (adding it on first use): frac of it is drawn, and
// done completes it.
func (bs *bars) set(id, label string, frac float64, done bool, text string) {
	b, ok := bs.byID[id]
	if !ok {
		b = &bar{}
		b.label.Store(&label)
		b.text.Store(&text)
		// The texts come first in the line's width; the bar gets the rest,
		// at most barWidth.
		b.b = bs.p.New(barScale, mpb.BarStyle(), mpb.BarWidth(barWidth),
			mpb.PrependDecorators(
				decor.Any(func(decor.Statistics) string { return *b.label.Load() }, decor.WCSyncSpaceR),
				decor.Percentage(decor.WC{W: 6}),
			),
			mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return *b.text.Load() })),
		)
		bs.byID[id] = b
		bs.ids = append(bs.ids, id)
	}
	b.label.Store(&label)
	b.text.Store(&text)
	switch {
	case done:
		b.b.SetCurrent(barScale)
	case frac > 0:
		// At most 99% until done: an estimate may be reached early.
		b.b.SetCurrent(int64(math.Min(0.99, frac) * barScale))
	}
}

// close stops the bars that did not complete (they stay drawn as they
// were) and waits for the last frame.
func (bs *bars) close() {
	for _, id := range bs.ids {
		bs.byID[id].b.Abort(false)
	}
	bs.p.Wait()
}

// fraction is done/total in [0, 1], 0 when the total is unknown.
func fraction(done, total uint64) float64 {
	if total == 0 {
		return 0
	}
	return math.Min(1, float64(done)/float64(total))
}

// plainBar draws frac as "[#####.....]" for the one-line output.
func plainBar(frac float64) string {
	const width = 20
	filled := int(frac * width)
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}
