package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []scaleStep
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "5@30s", want: []scaleStep{{5, 30 * time.Second}}},
		{in: "5@0s, 4@2m", want: []scaleStep{{5, 0}, {4, 2 * time.Minute}}},
		{in: "5", wantErr: true},
		{in: "five@30s", wantErr: true},
		{in: "5@soon", wantErr: true},
		{in: "-1@1s", wantErr: true},
		{in: "5@2m,4@1m", wantErr: true},
	} {
		got, err := parseSchedule(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseSchedule(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("parseSchedule(%q) = %v, want %v", tc.in, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("parseSchedule(%q) = %v, want %v", tc.in, got, tc.want)
			}
		}
	}
}

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []faultStep
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "kill@30s", want: []faultStep{{faultKill, 30 * time.Second}}},
		{in: "kill@30s, stop@2m,apiserver-restart@5m", want: []faultStep{{faultKill, 30 * time.Second}, {faultStop, 2 * time.Minute}, {faultAPIServer, 5 * time.Minute}}},
		{in: "kill", wantErr: true},
		{in: "reboot@1m", wantErr: true},
		{in: "kill@soon", wantErr: true},
		{in: "kill@-1s", wantErr: true},
		{in: "stop@2m,kill@1m", wantErr: true},
	} {
		got, err := parseFaults(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseFaults(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("parseFaults(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestClientFlagsRejectZeroQPS(t *testing.T) {
	for _, tc := range []struct {
		qps   float64
		burst int
		ok    bool
	}{
		{1000, 2000, true},
		{-1, 0, true},
		{0, 10, false},
		{-5, 10, false},
		{10, 0, false},
	} {
		f := clientFlags{qps: tc.qps, burst: tc.burst}
		if err := f.validate(); (err == nil) != tc.ok {
			t.Errorf("qps %v burst %d: error %v, want ok %v", tc.qps, tc.burst, err, tc.ok)
		}
	}
}

// --postgres starts a store beside the local cluster, --storage,
// --apiserver-args and --peer-snapshots configure the local cluster, --faults
// signals its processes; with a given cluster none of them is the harness's
// to choose.
// (It also checks that a scale is given time to settle: --rebalance-timeout
// must be positive.)
func TestRunRefusesLocalClusterFlagsWithAKubeconfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
	}{
		{[]string{"--postgres"}, true},
		{[]string{"--postgres", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--kubeconfig", "some.kubeconfig"}, true},
		{[]string{"--storage", "kine"}, true},
		{[]string{"--storage", "kine", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--storage", "sqlite"}, false},
		{[]string{"--apiserver-args", "--watch-cache-sizes=largedata.data.kubeshard.dev#0"}, true},
		{[]string{"--apiserver-args", "--v=2", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--apiserver-env", "GOGC=400"}, true},
		{[]string{"--apiserver-env", "GOGC=400", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--faults", "kill@30s"}, true},
		{[]string{"--faults", "kill@30s", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--faults", "kill@30s", "--fault-objects", "0"}, false},
		{[]string{"--fault-objects", "0"}, true}, // no faults: nothing to create
		{[]string{"--peer-snapshots"}, true},
		{[]string{"--peer-snapshots", "--kubeconfig", "some.kubeconfig"}, false},
		{[]string{"--rebalance-timeout", "0s"}, false},
		{[]string{"--rebalance-timeout", "30m"}, true},
	} {
		sc := &scenario{}
		fs := newFlagSet("run", "")
		sc.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if err := sc.validate(); (err == nil) != tc.ok {
			t.Errorf("run %v: error %v, want ok %v", tc.args, err, tc.ok)
		}
	}
}
