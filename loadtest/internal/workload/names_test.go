package workload

import "testing"

func TestNamesRoundTrip(t *testing.T) {
	n := Names{Prefix: "lt", Namespaces: 7}
	for _, i := range []int{0, 6, 7, 123456, 99999999} {
		got, ok := n.Index(n.Namespace(i), n.Name(i))
		if !ok || got != i {
			t.Errorf("Index(%s/%s) = %d, %v; want %d", n.Namespace(i), n.Name(i), got, ok, i)
		}
	}
	for _, tc := range [][2]string{
		{"lt-1", "ld-00000002"},        // wrong namespace for the index
		{"lt-baseline", "ld-00000000"}, // the baseline's namespace
		{"lt-0", "baseline-000000000"},
		{"lt-0", "ld-x"},
	} {
		if i, ok := n.Index(tc[0], tc[1]); ok {
			t.Errorf("Index(%s/%s) = %d; want not the harness's", tc[0], tc[1], i)
		}
	}
}

func TestNamesValidate(t *testing.T) {
	for _, tc := range []struct {
		n  Names
		ok bool
	}{
		{Names{Prefix: "loadtest", Namespaces: 10}, true},
		{Names{Prefix: "Load_Test", Namespaces: 10}, false},
		{Names{Prefix: "lt", Namespaces: 0}, false},
	} {
		if err := tc.n.Validate(); (err == nil) != tc.ok {
			t.Errorf("%+v: error %v, want ok %v", tc.n, err, tc.ok)
		}
	}
}
