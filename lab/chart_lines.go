package main

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// The charts of the scenarios after slow: lines over time or over a
// number, and grouped bars, with the slow scenario's fonts, sizes and
// background (chart.go).

// wideLegend is the legend's least width in these charts: each entry
// names its knobs, such as PROXY_RETRY_ON=per-try-timeout, and a longer
// line widens it (saveChart).
const wideLegend = 205 * vg.Inch / 72

// seriesColors tell the variants of a chart apart, in order
// (ColorBrewer's Set1, readable on white).
var seriesColors = []color.Color{
	color.RGBA{0x37, 0x7e, 0xb8, 0xff}, // blue
	color.RGBA{0xe4, 0x1a, 0x1c, 0xff}, // red
	color.RGBA{0x4d, 0xaf, 0x4a, 0xff}, // green
	color.RGBA{0x98, 0x4e, 0xa3, 0xff}, // purple
	color.RGBA{0xff, 0x7f, 0x00, 0xff}, // orange
	color.RGBA{0xa6, 0x56, 0x28, 0xff}, // brown
}

// newFreePlot is a plot with the lab's fonts, titled with what it shows
// and, on a second line, the scenario it was measured in.
func newFreePlot(title, subtitle, xlabel, ylabel string) *plot.Plot {
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	p := plot.New()
	p.Title.Text = title + "\n" + subtitle
	p.Title.TextStyle.Font.Size = 13
	p.Title.Padding = 6
	p.X.Label.Text, p.Y.Label.Text = xlabel, ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = chartTextPts
		a.Tick.Label.Font.Size = chartTextPts
	}
	p.BackgroundColor = nil // saveSVG paints the whole chart's
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)
	return p
}

// series is one line: its legend (naming the knob), and its points.
type series struct {
	name   string
	xs, ys []float64
	dashed bool
	color  color.Color // nil: the next of seriesColors
}

// vmark is a vertical line across the plot at x, such as the moment a
// backend went down, labelled at its top.
type vmark struct {
	x     float64
	label string
}

func (m vmark) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	x := trX(m.x)
	if !c.ContainsX(x) {
		return
	}
	ls := draw.LineStyle{Color: guideColor, Width: 1, Dashes: []vg.Length{3, 3}}
	c.StrokeLine2(ls, x, c.Min.Y, x, c.Max.Y)
	sty := textStyle(9)
	sty.XAlign, sty.YAlign = draw.XLeft, draw.YTop
	c.FillText(sty, vg.Point{X: x + 3, Y: c.Max.Y - 2}, m.label)
}

// lineChart draws each series as a line with its points marked, and the
// marks across.
func lineChart(p *plot.Plot, lines []series, marks []vmark) (*plot.Plot, *plot.Legend, error) {
	if len(lines) == 0 {
		return nil, nil, errNoResults
	}
	l := newLegend()
	for i, s := range lines {
		pts := make(plotter.XYs, len(s.xs))
		for k := range s.xs {
			pts[k].X, pts[k].Y = s.xs[k], s.ys[k]
		}
		ln, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", s.name, err)
		}
		c := s.color
		if c == nil {
			c = seriesColors[i%len(seriesColors)]
		}
		ln.Color, ln.Width = c, 2
		if s.dashed {
			ln.Dashes = []vg.Length{5, 3}
		}
		sc.Color, sc.Radius, sc.Shape = c, 2.5, draw.CircleGlyph{}
		if len(pts) > 60 { // a time series: the line alone
			sc.Radius = 0
		}
		p.Add(ln, sc)
		l.Add(s.name, ln, sc)
	}
	for _, m := range marks {
		p.Add(m)
	}
	return p, l, nil
}

// barGroup is one series of grouped bars: its legend and one value per
// group.
type barGroup struct {
	name   string
	values []float64
	color  color.Color // nil: the next of seriesColors
}

// groupedBars draws, for each group on a nominal X axis, one bar per
// series side by side, labelled with label(value).
func groupedBars(p *plot.Plot, groups []string, bars []barGroup, label func(float64) string) (*plot.Plot, *plot.Legend, error) {
	if len(bars) == 0 || len(groups) == 0 {
		return nil, nil, errNoResults
	}
	p.NominalX(groups...)
	p.X.Min, p.X.Max = -0.5, float64(len(groups))-0.5
	p.X.Padding = 0
	width := vg.Length(math.Min(36, 260/float64(len(bars)*len(groups))))
	l := newLegend()
	var labels []plot.Plotter // drawn after every bar, so that none covers a label
	for i, b := range bars {
		bc, err := plotter.NewBarChart(plotter.Values(b.values), width)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", b.name, err)
		}
		c := b.color
		if c == nil {
			c = seriesColors[i%len(seriesColors)]
		}
		bc.Color, bc.LineStyle.Width = c, 0
		bc.Offset = (vg.Length(i) - vg.Length(len(bars)-1)/2) * (width + 2)
		p.Add(bc)
		labels = append(labels, &barLabels{bars: bc, label: label, size: 8, gap: 2})
		l.Add(b.name, bc)
	}
	p.Add(labels...)
	return p, l, nil
}

// pct writes a fraction as a percentage: "25.1%".
func pct(v float64) string { return fmt.Sprintf("%.1f%%", v) }

// secondsLine is a line of one value per second of a timed run, each drawn
// at the middle of its second.
func secondsLine(name string, values []float64) series {
	s := series{name: name}
	for i, v := range values {
		s.xs = append(s.xs, float64(i)+0.5)
		s.ys = append(s.ys, v)
	}
	return s
}

// timelineChart draws lines over a timed run of runS seconds, its events
// marked where they happened, and writes it as dir/file.
func timelineChart(dir, file string, p *plot.Plot, lines []series, events []eventDoc, runS float64) ([]string, error) {
	var marks []vmark
	for _, e := range events {
		marks = append(marks, vmark{x: e.AtS, label: e.What})
	}
	p, l, err := lineChart(p, lines, marks)
	if err == nil {
		p.X.Min, p.X.Max = 0, runS
	}
	path, err := saveChart(dir, file, p, l, err)
	if err != nil {
		return nil, err
	}
	return []string{path}, nil
}

// saveChart makes a chart and writes it as dir/file.
func saveChart(dir, file string, p *plot.Plot, l *plot.Legend, err error) (string, error) {
	if err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	path := filepath.Join(dir, file)
	// As wide as its longest line needs, so that no knob is cut off.
	width := max(wideLegend, l.Rectangle(draw.Canvas{}).Size().X+16)
	if err := saveSVGLegend(path, p, l, width); err != nil {
		return "", fmt.Errorf("%s: %w", file, err)
	}
	return path, nil
}
