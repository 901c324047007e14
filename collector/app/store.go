package app

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/collector/store/spooled"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
)

// esOpenTimeout bounds connecting to Elasticsearch and installing the
// templates at start, so a dead cluster is a prompt one-line error.
const esOpenTimeout = 60 * time.Second

// openStore opens the configured backend (cfg is validated) and returns it
// with the name logged at start. reg may be nil (token create).
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger, reg prometheus.Registerer) (store.Store, string, error) {
	if cfg.Elasticsearch == "" {
		path := cfg.SQLitePath()
		st, err := sqlite.Open(path, sqlite.Options{Logger: log})
		return st, config.SQLiteScheme + path, err
	}
	ctx, cancel := context.WithTimeout(ctx, esOpenTimeout)
	defer cancel()
	st, err := elasticsearch.Open(ctx, elasticsearch.Options{URL: cfg.Elasticsearch, Logger: log, Registry: reg})
	if err != nil {
		return nil, "", err
	}
	// While Elasticsearch is down, batches go to a disk spool in the data
	// dir and are replayed when it answers (collector/store/spooled).
	sp, err := spooled.Wrap(st, spooled.Options{Dir: filepath.Join(cfg.DataDir, "store-spool"), Log: log, Registerer: reg})
	if err != nil {
		st.Close()
		return nil, "", err
	}
	return sp, "elasticsearch:" + st.Namespace(), nil
}
