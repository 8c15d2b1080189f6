package workload

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Label and annotation keys the harness puts on what it creates.
const (
	// LabelRun, on every namespace and object the harness creates, holds the
	// run's prefix; cleanup deletes what carries it.
	LabelRun = "loadtest.kubeshard.dev/run"
	// AnnotationSentAt is the client's clock, in Unix nanoseconds, when it
	// sent the spec write that produced the object's current generation.
	AnnotationSentAt = "loadtest.kubeshard.dev/sent-at"
)

const namePrefix = "ld-"

// Names maps object indexes to namespaces and names: object i is
// "<Prefix>-<i mod Namespaces>/ld-<i, 8 digits>".
type Names struct {
	// Prefix starts every namespace name and is the LabelRun value.
	Prefix string
	// Namespaces is how many namespaces the objects are spread over.
	Namespaces int
}

// Validate reports a prefix or namespace count that cannot work.
func (n Names) Validate() error {
	if n.Namespaces < 1 {
		return fmt.Errorf("namespaces must be at least 1, not %d", n.Namespaces)
	}
	longest := n.Namespace(n.Namespaces - 1)
	if errs := validation.IsDNS1123Label(longest); len(errs) > 0 {
		return fmt.Errorf("prefix %q gives invalid namespace names such as %q: %s", n.Prefix, longest, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(n.Prefix); len(errs) > 0 {
		return fmt.Errorf("prefix %q is not a valid label value: %s", n.Prefix, strings.Join(errs, "; "))
	}
	return nil
}

// Namespace returns the namespace of object i, or the i-th namespace.
func (n Names) Namespace(i int) string { return fmt.Sprintf("%s-%d", n.Prefix, i%n.Namespaces) }

// Name returns the name of object i.
func (n Names) Name(i int) string { return fmt.Sprintf("%s%08d", namePrefix, i) }

// BaselineNamespace holds the objects of the bare client-go baseline.
func (n Names) BaselineNamespace() string { return n.Prefix + "-baseline" }

// Index returns the index of the object namespace/name, and false for an
// object the harness did not name (such as a baseline object).
func (n Names) Index(namespace, name string) (int, bool) {
	digits, ok := strings.CutPrefix(name, namePrefix)
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(digits)
	if err != nil || i < 0 || n.Namespaces < 1 || n.Namespace(i) != namespace {
		return 0, false
	}
	return i, true
}

// SentAt reads AnnotationSentAt; false when it is missing or malformed.
func SentAt(annotations map[string]string) (time.Time, bool) {
	v, ok := annotations[AnnotationSentAt]
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

func stamp(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }
