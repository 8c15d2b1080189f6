package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
)

// Read reads and merges the journals at paths, ordered by start time. A
// partial last line (the process was killed while writing it) is skipped;
// any other line that is not an entry is an error.
func Read(paths ...string) ([]Entry, error) {
	var entries []Entry
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading journal: %w", err)
		}
		data = data[:bytes.LastIndexByte(data, '\n')+1]
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for n := 1; sc.Scan(); n++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var e Entry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				return nil, fmt.Errorf("journal %s, line %d: %w", path, n, err)
			}
			entries = append(entries, e)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading journal %s: %w", path, err)
		}
	}
	slices.SortStableFunc(entries, func(a, b Entry) int { return a.Start.Compare(b.Start) })
	return entries, nil
}
