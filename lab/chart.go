package main

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// The charts are 600 × 330 points: 800 × 440 pixels at the CSS 96 pixels
// per inch, the width of a README on GitHub.
const (
	chartWidth   = 600 * vg.Inch / 72
	chartHeight  = 330 * vg.Inch / 72
	legendWidth  = 125 * vg.Inch / 72 // right of the plot
	chartTextPts = 11
)

var (
	percentileColors = []color.Color{
		color.RGBA{0x9e, 0xca, 0xe1, 0xff}, // p50: light blue
		color.RGBA{0x42, 0x92, 0xc6, 0xff}, // p90
		color.RGBA{0x08, 0x45, 0x94, 0xff}, // p99: dark blue
	}
	fastColors = []color.Color{
		color.RGBA{0x9e, 0xca, 0xe1, 0xff},
		color.RGBA{0xc7, 0xe9, 0xc0, 0xff},
		color.RGBA{0xda, 0xda, 0xeb, 0xff},
		color.RGBA{0xfd, 0xd0, 0xa2, 0xff},
	}
	slowColor  = color.RGBA{0xd7, 0x30, 0x27, 0xff}
	textColor  = color.Gray{0x20}
	guideColor = color.Gray{0x60}
	// backgroundColor fills the whole chart, legend included, so that its
	// dark text reads on a dark page too.
	backgroundColor = color.White
)

// charts are the charts the lab writes into LAB_OUT, in this order; lab
// help lists them.
var charts = []struct {
	file, what string
	make       func(report) (*plot.Plot, *plot.Legend, error)
}{
	{"latency.svg", "p50, p90 and p99 latency per strategy", latencyChart},
	{"share.svg", "the share of the requests sent to each backend", shareChart},
	{"redis.svg", "Redis round trips per request", redisChart},
	{"sticky.svg", "the users whose answers all came from one backend", stickyChart},
}

// writeCharts writes the charts into dir and returns their paths.
func writeCharts(dir string, r report) ([]string, error) {
	var paths []string
	for _, c := range charts {
		p, l, err := c.make(r)
		if err != nil {
			return paths, fmt.Errorf("%s: %w", c.file, err)
		}
		path := filepath.Join(dir, c.file)
		if err := saveSVG(path, p, l); err != nil {
			return paths, fmt.Errorf("%s: %w", c.file, err)
		}
		paths = append(paths, path)
	}
	return paths, nil
}

// newPlot is a plot with the lab's fonts and a nominal X axis of strategies,
// titled with what it shows and, on a second line, the scenario it was
// measured in: what differs between the lab's runs, so that two charts of
// the same kind say how they differ.
func newPlot(title string, sc scenario, ylabel string, strategies []string) *plot.Plot {
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
	p := plot.New()
	p.Title.Text = title + "\n" + scenarioLine(sc)
	p.Title.TextStyle.Font.Size = 13
	p.Title.Padding = 6
	p.Y.Label.Text = ylabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = chartTextPts
		a.Tick.Label.Font.Size = chartTextPts
	}
	p.X.Tick.Label.Font.Size = 12
	p.NominalX(strategies...)
	p.X.Min, p.X.Max = -0.5, float64(len(strategies))-0.5
	p.X.Padding = 0
	p.BackgroundColor = nil // saveSVG paints the whole chart's
	return p
}

// scenarioLine says what a run measured: "315 req/s (75% of the pool's
// capacity), 1000 users, 20 s per strategy".
func scenarioLine(sc scenario) string {
	return fmt.Sprintf("%d req/s (%.0f%% of the pool's capacity), %d users, %s per strategy",
		sc.RateRPS, 100*sc.Load, sc.Users, fmtSeconds(sc.DurationS))
}

// fmtSeconds writes a duration given in seconds: "20 s", "1.5 s".
func fmtSeconds(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) + " s" }

// backendLegend names a backend and says what its LATENCY and CAPACITY
// are: "slow: 200 ms each,\n4 in service at once".
func backendLegend(b backendSpec) string {
	each := fmtMS(b.LatencyMS)
	if b.JitterMS > 0 {
		each += " + 0.." + fmtMS(b.JitterMS)
	}
	return fmt.Sprintf("%s: %s each,\n%d in service at once", b.Name, each, b.Capacity)
}

func newLegend() *plot.Legend {
	l := plot.NewLegend()
	l.TextStyle.Font.Size = chartTextPts
	l.Top, l.Left = true, true
	l.ThumbnailWidth = 14
	l.Padding = 4
	return &l
}

// latencyChart: p50, p90 and p99 per strategy, grouped bars on a log scale,
// with the request timeout drawn across.
func latencyChart(r report) (*plot.Plot, *plot.Legend, error) {
	strategies := make([]string, len(r.Results))
	values := [3][]float64{}
	lo, hi := math.Inf(1), r.Scenario.TimeoutS*1000
	for i, res := range r.Results {
		strategies[i] = res.Strategy
		for j, v := range []float64{res.P50MS, res.P90MS, res.P99MS} {
			v = max(v, 0.01) // a log scale has no 0
			values[j] = append(values[j], v)
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if len(strategies) == 0 {
		return nil, nil, errNoResults
	}
	p := newPlot("Latency per strategy", r.Scenario, "latency (log scale)", strategies)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = msTicks{}
	p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo)))
	p.Y.Max = hi * 2.5 // room for the labels above the tallest bars
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)

	// The timeout first, behind the bars that reach it.
	timeout := &hline{y: r.Scenario.TimeoutS * 1000}
	p.Add(timeout)
	l := newLegend()
	const barWidth = 22
	for j, name := range []string{"p50", "p90", "p99"} {
		b := &logBars{values: values[j], color: percentileColors[j], width: barWidth,
			offset: vg.Length(j-1) * (barWidth + 2)}
		p.Add(b)
		l.Add(name, b)
	}
	l.Add("timeout", timeout)
	return p, l, nil
}

// shareChart: the share of the requests each backend was sent, stacked per
// strategy, the slow backend at the bottom, with its share of the pool's
// capacity drawn across.
func shareChart(r report) (*plot.Plot, *plot.Legend, error) {
	strategies := make([]string, len(r.Results))
	for i, res := range r.Results {
		strategies[i] = res.Strategy
	}
	if len(strategies) == 0 {
		return nil, nil, errNoResults
	}
	p := newPlot("Share of the requests sent to each backend", r.Scenario, "share of requests", strategies)
	p.Y.Min, p.Y.Max = 0, 100
	p.Y.Tick.Marker = percentTicks{}

	// Slow first, so that it sits on the axis, where its share is easy to
	// read; then the fast ones.
	order := []backendSpec{}
	var slow backendSpec
	for _, b := range r.Scenario.Backends {
		if b.Name == r.Scenario.SlowBackend {
			slow = b
			continue
		}
		order = append(order, b)
	}
	order = append([]backendSpec{slow}, order...)

	l := newLegend()
	var below *plotter.BarChart
	var bars []*plotter.BarChart
	for i, b := range order {
		vals := make(plotter.Values, len(r.Results))
		for k, res := range r.Results {
			vals[k] = 100 * res.Share[b.Name]
		}
		bc, err := plotter.NewBarChart(vals, 56)
		if err != nil {
			return nil, nil, err
		}
		bc.Color = fastColors[(i-1+len(fastColors))%len(fastColors)]
		if i == 0 {
			bc.Color = slowColor
		}
		bc.LineStyle.Width = 0.5
		bc.LineStyle.Color = color.White
		if below != nil {
			bc.StackOn(below)
		}
		below = bc
		bars = append(bars, bc)
		p.Add(bc)
	}
	// The legend lists them top to bottom, as they are stacked.
	for i := len(order) - 1; i >= 0; i-- {
		b := order[i]
		l.Add(backendLegend(b), bars[i])
	}
	p.Add(&segmentLabels{bars: bars, emphasize: 0})
	fair := 100 * slow.CapacityRPS / r.Scenario.CapacityRPS
	capacity := &hline{y: fair, dashed: true}
	p.Add(capacity)
	l.Add(fmt.Sprintf("%s's share\nof capacity", slow.Name), capacity)
	return p, l, nil
}

// redisChart: Redis round trips per request sent, per strategy.
func redisChart(r report) (*plot.Plot, *plot.Legend, error) {
	return simpleBars(r, "Redis round trips per request, background work included", "round trips per request",
		"round trips", r.Scenario.RedisRoundTripsPerRequest, 1, func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) })
}

// stickyChart: the share of users who always met the same backend.
func stickyChart(r report) (*plot.Plot, *plot.Legend, error) {
	pct := map[string]float64{}
	for k, v := range r.Scenario.StickyUsers {
		pct[k] = 100 * v
	}
	p, l, err := simpleBars(r, "Users whose answers all came from one backend", "share of users",
		"sticky users", pct, 100, func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + "%" })
	if err == nil {
		p.Y.Max = 115
		p.Y.Tick.Marker = percentTicks{}
	}
	return p, l, err
}

// simpleBars is one bar per strategy of value[strategy], labelled with
// label(value), on a linear axis from 0 to at least least.
func simpleBars(r report, title, ylabel, legend string, value map[string]float64, least float64,
	label func(float64) string) (*plot.Plot, *plot.Legend, error) {
	strategies := make([]string, len(r.Results))
	vals := make(plotter.Values, len(r.Results))
	for i, res := range r.Results {
		strategies[i] = res.Strategy
		vals[i] = value[res.Strategy]
	}
	if len(strategies) == 0 {
		return nil, nil, errNoResults
	}
	p := newPlot(title, r.Scenario, ylabel, strategies)
	p.Y.Min = 0
	p.Y.Max = max(least, slices.Max(vals)) * 1.15
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil
	p.Add(grid)
	bc, err := plotter.NewBarChart(vals, 56)
	if err != nil {
		return nil, nil, err
	}
	bc.Color = percentileColors[1]
	bc.LineStyle.Width = 0
	p.Add(bc, &barLabels{bars: bc, label: label, size: 10, gap: 3})
	l := newLegend()
	l.Add(legend, bc)
	return p, l, nil
}

// barLabels writes each bar's value above it, in size points, gap points
// up, bars offset from their group's centre (grouped bars) included.
type barLabels struct {
	bars      *plotter.BarChart
	label     func(float64) string
	size, gap vg.Length
}

func (b *barLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	sty := textStyle(b.size)
	sty.XAlign = draw.XCenter
	for i, v := range b.bars.Values {
		c.FillText(sty, vg.Point{X: trX(float64(i)) + b.bars.Offset, Y: trY(v) + b.gap}, b.label(v))
	}
}

// saveSVG draws p with the legend l to its right on a background that
// covers them both, and writes it to path.
func saveSVG(path string, p *plot.Plot, l *plot.Legend) error {
	return saveSVGLegend(path, p, l, legendWidth)
}

// saveSVGLegend is saveSVG with a legend legendWidth wide.
func saveSVGLegend(path string, p *plot.Plot, l *plot.Legend, legendWidth vg.Length) error {
	c := vgsvg.New(chartWidth, chartHeight)
	dc := draw.New(c)
	dc.FillPolygon(backgroundColor, []vg.Point{{X: 0, Y: 0}, {X: chartWidth, Y: 0}, {X: chartWidth, Y: chartHeight}, {X: 0, Y: chartHeight}})
	p.Draw(draw.Crop(dc, 0, -legendWidth, 0, 0))
	// Level with the top of the plot area, below the title.
	top := p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding + 8
	l.Draw(draw.Crop(dc, chartWidth-legendWidth+8, 0, 0, -top))
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		return err
	}
	// The fonts are not embedded: name fallbacks for viewers without
	// Liberation Sans, which has Arial's metrics.
	svg := strings.ReplaceAll(buf.String(), "font-family:Liberation Sans;",
		"font-family:'Liberation Sans',Arimo,Arial,Helvetica,sans-serif;")
	return os.WriteFile(path, []byte(svg), 0o644)
}

// logBars is one bar per strategy (x = 0, 1, ...) from the bottom of a log
// Y axis up to its value, labelled with the value: plotter.BarChart starts
// its bars at 0, which a log scale cannot show.
type logBars struct {
	values []float64
	color  color.Color
	width  vg.Length
	offset vg.Length
}

func (b *logBars) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	sty := textStyle(8)
	sty.XAlign = draw.XCenter
	for i, v := range b.values {
		x := trX(float64(i)) + b.offset
		top := trY(v)
		pts := []vg.Point{{X: x - b.width/2, Y: c.Min.Y}, {X: x - b.width/2, Y: top},
			{X: x + b.width/2, Y: top}, {X: x + b.width/2, Y: c.Min.Y}}
		c.FillPolygon(b.color, c.ClipPolygonY(pts))
		c.FillText(sty, vg.Point{X: x, Y: top + 2}, compactMS(v))
	}
}

func (b *logBars) DataRange() (xmin, xmax, ymin, ymax float64) {
	ymin, ymax = math.Inf(1), math.Inf(-1)
	for _, v := range b.values {
		ymin, ymax = min(ymin, v), max(ymax, v)
	}
	return 0, float64(len(b.values) - 1), ymin, ymax
}

func (b *logBars) Thumbnail(c *draw.Canvas) {
	r := c.Rectangle
	c.FillPolygon(b.color, []vg.Point{r.Min, {X: r.Min.X, Y: r.Max.Y}, r.Max, {X: r.Max.X, Y: r.Min.Y}})
}

// hline is a horizontal line across the plot at y, named in the legend.
type hline struct {
	y      float64
	dashed bool
}

func (h *hline) style() draw.LineStyle {
	ls := draw.LineStyle{Color: guideColor, Width: 1.5}
	if h.dashed {
		ls.Dashes = []vg.Length{4, 3}
	}
	return ls
}

func (h *hline) Plot(c draw.Canvas, p *plot.Plot) {
	_, trY := p.Transforms(&c)
	if y := trY(h.y); c.ContainsY(y) {
		c.StrokeLine2(h.style(), c.Min.X, y, c.Max.X, y)
	}
}

func (h *hline) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(h.style(), c.Min.X, y, c.Max.X, y)
}

// segmentLabels writes each stacked segment's share inside it, when it is
// tall enough to hold the text; the emphasized one (the slow backend) is
// always labelled, above its segment when that is too thin.
type segmentLabels struct {
	bars      []*plotter.BarChart
	emphasize int
}

func (s *segmentLabels) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, bc := range s.bars {
		for k, v := range bc.Values {
			base := 0.0
			for _, under := range s.bars[:i] {
				base += under.Values[k]
			}
			lo, hi := trY(base), trY(base+v)
			sty := textStyle(9)
			sty.XAlign, sty.YAlign = draw.XCenter, draw.YCenter
			y := (lo + hi) / 2
			switch {
			case hi-lo >= 13:
				if i == s.emphasize {
					sty.Color = color.White
				}
			case i == s.emphasize:
				sty.YAlign = draw.YBottom
				y = hi + 2
			default:
				continue
			}
			c.FillText(sty, vg.Point{X: trX(float64(k)), Y: y}, fmt.Sprintf("%.1f%%", v))
		}
	}
}

func textStyle(size vg.Length) text.Style {
	return text.Style{Color: textColor, Font: font.From(plot.DefaultFont, size), Handler: plot.DefaultTextHandler}
}

// msTicks labels a log axis in milliseconds at each power of ten, with
// unlabelled minor ticks at 2..9 times it.
type msTicks struct{}

func (msTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for decade := math.Pow(10, math.Floor(math.Log10(lo))); decade <= hi; decade *= 10 {
		for i := 1; i < 10; i++ {
			v := decade * float64(i)
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			t := plot.Tick{Value: v}
			if i == 1 {
				t.Label = fmtMS(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

// percentTicks labels 0..100 every 20 %.
type percentTicks struct{}

func (percentTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for v := 0.0; v <= 100; v += 10 {
		t := plot.Tick{Value: v}
		if int(v)%20 == 0 {
			t.Label = strconv.Itoa(int(v)) + "%"
		}
		ticks = append(ticks, t)
	}
	return ticks
}

// fmtMS writes a duration given in milliseconds for an axis: "0.1 ms",
// "10 ms", "1 s".
func fmtMS(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + " ms"
}

// compactMS writes a bar's value in milliseconds with about three digits:
// "0.42", "8.1", "23", "5000".
func compactMS(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
