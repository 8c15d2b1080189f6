package source_test

import (
	"testing"

	"github.com/kubeshard/kubeshard/pkg/largedata/source"
	"github.com/kubeshard/kubeshard/pkg/largedata/source/sourcetest"
)

func TestMemory(t *testing.T) {
	m := source.NewMemory(nil)
	sourcetest.Run(t, m, func(_ *testing.T, stream string, fields map[string]string) string {
		return m.Add(stream, fields)
	})
}
