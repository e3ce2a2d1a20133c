package main

import "testing"

func TestGCSettings(t *testing.T) {
	env := func(vals map[string]string) func(string) string {
		return func(k string) string { return vals[k] }
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		ram     uint64
		percent int
		limit   int64
	}{
		{"defaults", nil, 24 << 30, ringGCPercent, 6 << 30},
		{"small machine: the limit's floor", nil, 1 << 30, ringGCPercent, minSoftLimit},
		{"memory unknown: no limit", nil, 0, ringGCPercent, -1},
		{"GOGC chosen", map[string]string{"GOGC": "off"}, 24 << 30, -1, 6 << 30},
		{"GOMEMLIMIT chosen", map[string]string{"GOMEMLIMIT": "1GiB"}, 24 << 30, ringGCPercent, -1},
		{"both chosen", map[string]string{"GOGC": "50", "GOMEMLIMIT": "1GiB"}, 24 << 30, -1, -1},
	} {
		percent, limit := gcSettings(env(tc.env), tc.ram)
		if percent != tc.percent || limit != tc.limit {
			t.Errorf("%s: got GC percent %d and limit %d, want %d and %d", tc.name, percent, limit, tc.percent, tc.limit)
		}
	}
}
