package sqlite

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/storetest"
)

// TestSharedSuite runs the behaviour every backend shares (the same suite
// runs against Elasticsearch in collector/store/elasticsearch).
func TestSharedSuite(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		s, err := Open(filepath.Join(t.TempDir(), "tw.db"), Options{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
