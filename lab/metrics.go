package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// requestsMetric is the dispatcher's counter of requests by the backend it
// chose: the only record of where a request went when its answer never
// came back (the client gave up first).
const requestsMetric = "spread_requests_total"

// picks reads the dispatcher's /metrics and returns how many requests it has
// sent to each backend, by the backend's URL, whatever the status.
func (d *dispatcher) picks(ctx context.Context) (map[string]int64, error) {
	body, err := get(ctx, http.DefaultClient, d.admin, "/metrics")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return parsePicks(body)
}

// get GETs base+path with client and returns the body of a 200 answer; any
// other status is an error that names the path.
func get(ctx context.Context, client *http.Client, base, path string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return resp.Body, nil
}

// parsePicks sums the samples of requestsMetric by their backend label, in
// Prometheus's text exposition format. Requests answered without a backend
// (label "") are left out.
func parsePicks(r io.Reader) (map[string]int64, error) {
	samples, err := parseMetrics(r, requestsMetric)
	if err != nil {
		return nil, err
	}
	if len(samples[requestsMetric]) == 0 {
		return nil, fmt.Errorf("no %s samples in the dispatcher's /metrics", requestsMetric)
	}
	picks := map[string]int64{}
	for _, s := range samples[requestsMetric] {
		if b := s.labels["backend"]; b != "" {
			picks[b] += int64(s.value)
		}
	}
	return picks, nil
}

// promSample is one sample of a metric with labels.
type promSample struct {
	labels map[string]string
	value  float64
}

// parseMetrics reads Prometheus's text exposition format and returns the
// samples of the metrics named, by name. Only samples with labels
// (`name{...} value`) are read: every metric the lab reads has them.
func parseMetrics(r io.Reader, names ...string) (map[string][]promSample, error) {
	out := map[string][]promSample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		name, rest, ok := strings.Cut(line, "{")
		if !ok || !slices.Contains(names, name) {
			continue
		}
		labels, value, err := parseSample(rest)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		out[name] = append(out[name], promSample{labels, value})
	}
	return out, sc.Err()
}

// parseSample reads `name="value",...} number` (what follows a metric's
// opening brace), unescaping \\, \" and \n in label values.
func parseSample(s string) (map[string]string, float64, error) {
	labels := map[string]string{}
	for {
		s = strings.TrimLeft(s, " ,")
		if rest, ok := strings.CutPrefix(s, "}"); ok {
			f := strings.Fields(rest)
			if len(f) == 0 {
				return nil, 0, fmt.Errorf("no value")
			}
			v, err := strconv.ParseFloat(f[0], 64)
			return labels, v, err
		}
		name, rest, ok := strings.Cut(s, `="`)
		if !ok {
			return nil, 0, fmt.Errorf("want name=\"value\"")
		}
		var val strings.Builder
		i := 0
		for ; i < len(rest) && rest[i] != '"'; i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				switch rest[i] {
				case 'n':
					val.WriteByte('\n')
				default:
					val.WriteByte(rest[i])
				}
				continue
			}
			val.WriteByte(rest[i])
		}
		if i == len(rest) {
			return nil, 0, fmt.Errorf("unterminated label value")
		}
		labels[strings.TrimSpace(name)] = val.String()
		s = rest[i+1:]
	}
}
