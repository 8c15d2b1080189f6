// Command ringbench measures pkg/ring against a plain buraksezer/consistent ring
// built with the same options: how evenly objects spread over members, and how
// many slots move when one member joins or leaves. It prints Markdown tables and
// a PASS/FAIL line, and exits non-zero on FAIL.
//
//	go run ./test/bench/ringbench [-keys 1000000] [-slots 1024] [-max-members 64] [-seed 1]
package main

import (
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/buraksezer/consistent"

	"github.com/kubeshard/kubeshard/pkg/ring"
)

// Targets from the design: the busiest member holds at most 1.25 x the mean,
// scaling by one member moves at most 1.15 x the ideal 1/(N+1) of the slots, and
// no slot moves between two members that both stay.
const (
	maxBalance  = 1.25
	maxMovement = 1.15
)

type config struct {
	keys, slots, maxMembers int
	seed                    uint64
}

func main() {
	var cfg config
	flag.IntVar(&cfg.keys, "keys", 1_000_000, "number of random namespace/name keys for the balance table")
	flag.IntVar(&cfg.slots, "slots", ring.DefaultSlots, "number of slots")
	flag.IntVar(&cfg.maxMembers, "max-members", 64, "largest member count N; the movement table covers N -> N+1 for N = 1..max-members")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the random keys")
	flag.Parse()

	ok, err := run(os.Stdout, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ringbench:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

func run(w io.Writer, cfg config) (bool, error) {
	if cfg.keys < 1 || cfg.slots < 1 || cfg.maxMembers < 1 || cfg.maxMembers >= cfg.slots {
		return false, fmt.Errorf("need keys >= 1, slots >= 1 and 1 <= max-members < slots, got %+v", cfg)
	}
	opts := ring.Options{Slots: cfg.slots}

	balanceOK, err := balanceTable(w, cfg, opts)
	if err != nil {
		return false, err
	}
	movementOK, err := movementTable(w, cfg, opts)
	if err != nil {
		return false, err
	}
	if err := timings(w, cfg, opts); err != nil {
		return false, err
	}

	ok := balanceOK && movementOK
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%s: balance <= %.2f, movement <= %.2f, cross moves = 0 (pkg/ring)\n", verdict, maxBalance, maxMovement)
	return ok, nil
}

// pods returns op-0 ... op-(n-1), the member names of a StatefulSet, which are
// also the names that tripped consistent v0.10.0.
func pods(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("op-%d", i)
	}
	return names
}

type member string

func (m member) String() string { return string(m) }

// plainOwners is the baseline: the owner of each slot in a bounded-load consistent
// ring over members, with the options ring.Assign uses for its preferences.
func plainOwners(members []string, slots int) ring.Assignment {
	ms := make([]consistent.Member, len(members))
	for i, m := range members {
		ms[i] = member(m)
	}
	c := consistent.New(ms, consistent.Config{
		Hasher:            ring.Hasher{},
		PartitionCount:    slots,
		ReplicationFactor: ring.DefaultReplicationFactor,
		Load:              ring.DefaultLoadFactor,
	})
	owners := make(ring.Assignment, slots)
	for s := range owners {
		owners[s] = c.GetPartitionOwner(s).String()
	}
	return owners
}

func balanceTable(w io.Writer, cfg config, opts ring.Options) (bool, error) {
	// Random objects spread over a few hundred namespaces, like a busy cluster.
	rng := rand.New(rand.NewPCG(cfg.seed, cfg.seed))
	perSlot := make([]int, cfg.slots)
	for range cfg.keys {
		ns := fmt.Sprintf("team-%d", rng.IntN(300))
		name := fmt.Sprintf("largedata-%016x", rng.Uint64())
		perSlot[ring.Slot(ns, name, cfg.slots)]++
	}

	fmt.Fprintf(w, "## Balance: busiest member's objects / mean (%d keys, %d slots, target <= %.2f)\n\n", cfg.keys, cfg.slots, maxBalance)
	fmt.Fprintln(w, "| members | pkg/ring | plain consistent | pkg/ring slots per member | plain slots per member |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|")
	ok := true
	for _, n := range []int{2, 3, 4, 8, 16, 32, 64} {
		if n > cfg.maxMembers {
			break
		}
		members := pods(n)
		ours, err := ring.Assign(nil, members, opts)
		if err != nil {
			return false, fmt.Errorf("assigning %d members: %w", n, err)
		}
		plain := plainOwners(members, cfg.slots)
		oursRatio, oursLo, oursHi := spread(ours, members, perSlot, cfg.keys)
		plainRatio, plainLo, plainHi := spread(plain, members, perSlot, cfg.keys)
		ok = ok && oursRatio <= maxBalance
		fmt.Fprintf(w, "| %d | %.3f | %.3f | %d-%d | %d-%d |\n", n, oursRatio, plainRatio, oursLo, oursHi, plainLo, plainHi)
	}
	return ok, nil
}

// spread returns the busiest member's object count over the mean, and the
// fewest and most slots a member owns.
func spread(a ring.Assignment, members []string, perSlot []int, keys int) (float64, int, int) {
	objects := make(map[string]int)
	for s, owner := range a {
		objects[owner] += perSlot[s]
	}
	counts := a.Counts()
	busiest, lo, hi := 0, len(a), 0
	for _, m := range members {
		busiest = max(busiest, objects[m])
		lo, hi = min(lo, counts[m]), max(hi, counts[m])
	}
	return float64(busiest) / (float64(keys) / float64(len(members))), lo, hi
}

// change is one membership change: slots moved relative to the ideal, and moves
// between two members that are in both member sets.
type change struct {
	ratio float64
	cross int
}

func measure(before, after ring.Assignment, staying []string, ideal float64) change {
	stays := make(map[string]bool, len(staying))
	for _, m := range staying {
		stays[m] = true
	}
	moves := ring.Diff(before, after)
	c := change{ratio: float64(len(moves)) / ideal}
	for _, m := range moves {
		if stays[m.From] && stays[m.To] {
			c.cross++
		}
	}
	return c
}

func movementTable(w io.Writer, cfg config, opts ring.Options) (bool, error) {
	fmt.Fprintf(w, "\n## Movement: slots moved / ideal (ideal = %d/(N+1)), cross = moves between two staying members (target <= %.2f, cross 0)\n\n", cfg.slots, maxMovement)
	fmt.Fprintln(w, "| N -> N+1 | ideal | join ours | join plain (cross) | leave last ours | leave last plain (cross) | leave middle ours | leave middle plain (cross) | ours cross |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|")

	var worstOurs, worstPlain float64
	oursCross, plainCross := 0, 0
	for n := 1; n <= cfg.maxMembers; n++ {
		small, large := pods(n), pods(n+1)
		ideal := float64(cfg.slots) / float64(n+1)

		smallRing, err := ring.Assign(nil, small, opts)
		if err != nil {
			return false, fmt.Errorf("assigning %d members: %w", n, err)
		}
		largeRing, err := ring.Assign(nil, large, opts)
		if err != nil {
			return false, fmt.Errorf("assigning %d members: %w", n+1, err)
		}
		joined, err := ring.Assign(smallRing, large, opts)
		if err != nil {
			return false, fmt.Errorf("joining member %d: %w", n+1, err)
		}
		smallPlain, largePlain := plainOwners(small, cfg.slots), plainOwners(large, cfg.slots)
		row := []change{measure(smallRing, joined, small, ideal), measure(smallPlain, largePlain, small, ideal)}

		byName := slices.Sorted(slices.Values(large))
		for _, leaver := range []string{byName[len(byName)-1], byName[len(byName)/2]} {
			staying := slices.DeleteFunc(slices.Clone(large), func(m string) bool { return m == leaver })
			left, err := ring.Assign(largeRing, staying, opts)
			if err != nil {
				return false, fmt.Errorf("removing %s: %w", leaver, err)
			}
			row = append(row, measure(largeRing, left, staying, ideal), measure(largePlain, plainOwners(staying, cfg.slots), staying, ideal))
		}

		rowCross := 0
		for i, c := range row {
			if i%2 == 0 {
				worstOurs = max(worstOurs, c.ratio)
				rowCross += c.cross
			} else {
				worstPlain = max(worstPlain, c.ratio)
				plainCross += c.cross
			}
		}
		oursCross += rowCross
		fmt.Fprintf(w, "| %d -> %d | %.1f | %.3f | %.3f (%d) | %.3f | %.3f (%d) | %.3f | %.3f (%d) | %d |\n",
			n, n+1, ideal, row[0].ratio, row[1].ratio, row[1].cross, row[2].ratio, row[3].ratio, row[3].cross, row[4].ratio, row[5].ratio, row[5].cross, rowCross)
	}
	fmt.Fprintf(w, "\nWorst movement: pkg/ring %.3f, plain consistent %.3f. Cross moves in total: pkg/ring %d, plain consistent %d.\n",
		worstOurs, worstPlain, oursCross, plainCross)
	return worstOurs <= maxMovement && oursCross == 0, nil
}

func timings(w io.Writer, cfg config, opts ring.Options) error {
	members := pods(cfg.maxMembers)
	current, err := ring.Assign(nil, members[:len(members)-1], opts)
	if err != nil {
		return fmt.Errorf("assigning %d members: %w", len(members)-1, err)
	}
	sink := 0
	slot := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink += ring.Slot("team-payments", "largedata-0123456789", cfg.slots)
		}
	})
	// The same key, already built: what Slot would cost if it could afford to
	// allocate the key.
	key := []byte("team-payments/largedata-0123456789")
	hashOnly := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink += int(ring.Hasher{}.Sum64(key) % uint64(cfg.slots))
		}
	})
	assign := func(current ring.Assignment) testing.BenchmarkResult {
		return testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				_, _ = ring.Assign(current, members, opts)
			}
		})
	}
	fresh, join := assign(nil), assign(current)
	plain := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			plainOwners(members, cfg.slots)
		}
	})
	_ = sink

	ms := func(r testing.BenchmarkResult) float64 { return float64(r.NsPerOp()) / float64(time.Millisecond) }
	fmt.Fprintf(w, "\n## Cost (P=%d, N=%d)\n\n", cfg.slots, cfg.maxMembers)
	fmt.Fprintln(w, "| operation | time | allocs/op |")
	fmt.Fprintln(w, "|--|--:|--:|")
	perOp := func(r testing.BenchmarkResult) float64 { return float64(r.T.Nanoseconds()) / float64(r.N) }
	fmt.Fprintf(w, "| Slot(namespace, name) | %.1f ns | %d |\n", perOp(slot), slot.AllocsPerOp())
	fmt.Fprintf(w, "| xxhash of the prebuilt key (baseline) | %.1f ns | %d |\n", perOp(hashOnly), hashOnly.AllocsPerOp())
	fmt.Fprintf(w, "| Assign, fresh ring | %.2f ms | |\n", ms(fresh))
	fmt.Fprintf(w, "| Assign, one member joined | %.2f ms | |\n", ms(join))
	fmt.Fprintf(w, "| plain consistent.New + owners (baseline) | %.2f ms | |\n", ms(plain))
	fmt.Fprintf(w, "\nSlot costs %.2f x hashing a prebuilt key; Assign costs %.2f x building the plain consistent ring it starts from.\n",
		perOp(slot)/perOp(hashOnly), float64(fresh.NsPerOp())/float64(plain.NsPerOp()))
	return nil
}
