package report

import (
	"fmt"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

func charts(dir string, r Report) error {
	for _, c := range []struct {
		file string
		draw func(Report) (*plot.Plot, error)
	}{
		{FileLatency, latencyChart},
		{FileObjects, memberChart("Objects per member", "objects", func(m memberPoint) float64 { return float64(m.objects) })},
		{FileMemory, memberChart("Resident memory per member", "MiB", func(m memberPoint) float64 { return m.rss / (1 << 20) })},
		{FileCPU, memberChart("CPU per member", "cores", func(m memberPoint) float64 { return m.cpu })},
	} {
		p, err := c.draw(r)
		if err != nil {
			return fmt.Errorf("drawing %s: %w", c.file, err)
		}
		if err := p.Save(20*vg.Centimeter, 12*vg.Centimeter, filepath.Join(dir, c.file)); err != nil {
			return fmt.Errorf("writing %s: %w", c.file, err)
		}
	}
	return nil
}

func newPlot(title, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since start"
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

func latencyChart(r Report) (*plot.Plot, error) {
	p := newPlot("Time to reconciled (generations reconciled per 10 s)", "seconds")
	var p50, p90, p99 plotter.XYs
	for _, b := range r.LatencyTimeline {
		p50 = append(p50, plotter.XY{X: b.At, Y: b.P50})
		p90 = append(p90, plotter.XY{X: b.At, Y: b.P90})
		p99 = append(p99, plotter.XY{X: b.At, Y: b.P99})
	}
	if err := plotutil.AddLines(p, "p50", p50, "p90", p90, "p99", p99); err != nil {
		return nil, err
	}
	return p, events(p, r.Events)
}

type memberPoint struct {
	objects  int
	rss, cpu float64
}

func memberChart(title, y string, value func(memberPoint) float64) func(Report) (*plot.Plot, error) {
	return func(r Report) (*plot.Plot, error) {
		p := newPlot(title, y)
		series := map[string]plotter.XYs{}
		var names []string
		for _, s := range r.Timeline {
			for _, m := range s.Members {
				if _, ok := series[m.Name]; !ok {
					names = append(names, m.Name)
				}
				series[m.Name] = append(series[m.Name], plotter.XY{X: s.At, Y: value(memberPoint{objects: m.Objects, rss: m.RSS, cpu: m.CPU})})
			}
		}
		var lines []any
		for _, n := range names {
			lines = append(lines, n, series[n])
		}
		if err := plotutil.AddLines(p, lines...); err != nil {
			return nil, err
		}
		return p, events(p, r.Events)
	}
}

// events draws a dashed vertical line at every event, labelled in the legend.
func events(p *plot.Plot, evs []Event) error {
	ymax := p.Y.Max
	if ymax <= 0 {
		ymax = 1
	}
	for i, e := range evs {
		l, err := plotter.NewLine(plotter.XYs{{X: e.At, Y: 0}, {X: e.At, Y: ymax}})
		if err != nil {
			return err
		}
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		l.Color = color.Gray{Y: uint8(60 + 40*(i%3))}
		p.Add(l)
		p.Legend.Add(e.What, l)
	}
	return nil
}
