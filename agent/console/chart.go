package console

import (
	"fmt"
	"time"

	"github.com/galaxy/rtmanager/internal/db/dbsqlc"
)

// chart is a bar chart drawn as SVG by the activity template: one bar per
// minute, stacked by series.
type chart struct {
	Title            string
	Width, Height    float64
	Left, Top, PlotH float64
	YLabelX, XLabelY float64
	Bars             []bar
	Ticks            []tick
	Grid             []gridLine
	Legend           []legendItem
	Total            int64
}

type bar struct {
	X, Y, W, H float64
	Fill       string
	Title      string
}

type tick struct {
	X     float64
	Label string
}

type gridLine struct {
	Y     float64
	Label string
}

type legendItem struct {
	Name, Fill string
	Total      int64
}

// series is one stacked part of every bar.
type series struct {
	name, fill string
	counts     map[time.Time]int64
}

const (
	chartWidth  = 960
	chartLeft   = 44
	chartTop    = 8
	chartPlotH  = 150
	chartBottom = 22
)

// buildChart lays out one bar per minute from since to now.
func buildChart(title string, since, now time.Time, ss []series) chart {
	since, now = since.UTC().Truncate(time.Minute), now.UTC().Truncate(time.Minute)
	n := int(now.Sub(since)/time.Minute) + 1
	c := chart{Title: title, Width: chartWidth, Height: chartTop + chartPlotH + chartBottom, Left: chartLeft, Top: chartTop, PlotH: chartPlotH,
		YLabelX: chartLeft - 6, XLabelY: chartTop + chartPlotH + 16}
	var max int64
	for i := range n {
		m := since.Add(time.Duration(i) * time.Minute)
		var sum int64
		for _, s := range ss {
			sum += s.counts[m]
		}
		max = maxInt(max, sum)
	}
	top := niceCeil(max)
	slot := float64(chartWidth-chartLeft-4) / float64(n)
	for i := range n {
		m := since.Add(time.Duration(i) * time.Minute)
		x := chartLeft + float64(i)*slot
		y := float64(chartTop + chartPlotH)
		for _, s := range ss {
			v := s.counts[m]
			if v == 0 {
				continue
			}
			h := float64(v) / float64(top) * chartPlotH
			y -= h
			c.Bars = append(c.Bars, bar{X: x, Y: y, W: max1(slot - 1), H: h, Fill: s.fill,
				Title: fmt.Sprintf("%s UTC: %d %s", m.Format("15:04"), v, s.name)})
		}
		if m.Minute()%30 == 0 && (n <= 6*60 || m.Minute() == 0) && x < chartWidth-24 {
			c.Ticks = append(c.Ticks, tick{X: x, Label: m.Format("15:04")})
		}
	}
	for _, f := range []int64{0, 2, 4} {
		v := top * f / 4
		c.Grid = append(c.Grid, gridLine{Y: chartTop + chartPlotH - float64(v)/float64(top)*chartPlotH, Label: fmt.Sprint(v)})
	}
	for _, s := range ss {
		var t int64
		for _, v := range s.counts {
			t += v
		}
		c.Total += t
		c.Legend = append(c.Legend, legendItem{Name: s.name, Fill: s.fill, Total: t})
	}
	return c
}

func jobsChart(rows []dbsqlc.ConsoleJobsPerMinuteRow, since, now time.Time) chart {
	ss := []series{
		{name: "succeeded", fill: "#2f9e44", counts: map[time.Time]int64{}},
		{name: "failed", fill: "#e03131", counts: map[time.Time]int64{}},
		{name: "cancelled", fill: "#868e96", counts: map[time.Time]int64{}},
	}
	for _, r := range rows {
		for i := range ss {
			if ss[i].name == r.Status {
				ss[i].counts[r.Minute.UTC()] += r.N
			}
		}
	}
	return buildChart("Jobs finished per minute", since, now, ss)
}

func eventsChart(rows []dbsqlc.ConsoleEventsPerMinuteRow, since, now time.Time) chart {
	s := series{name: "events", fill: "#1c7ed6", counts: map[time.Time]int64{}}
	for _, r := range rows {
		s.counts[r.Minute.UTC()] += r.N
	}
	return buildChart("Outbox events per minute", since, now, []series{s})
}

// niceCeil rounds a chart's maximum up to 1, 2 or 5 times a power of ten
// (at least 4, and even, so that the grid's middle line is a whole number).
func niceCeil(v int64) int64 {
	if v <= 4 {
		return 4
	}
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if m*p >= v && (m*p)%2 == 0 {
				return m * p
			}
		}
		if p > v {
			return v + v%2
		}
	}
}

func maxInt(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

func max1(v float64) float64 {
	if v < 1 {
		return 1
	}
	return v
}
