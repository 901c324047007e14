package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/config"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/collector/store/elasticsearch"
	"github.com/tillwatch/tillwatch/collector/store/spooled"
	"github.com/tillwatch/tillwatch/collector/store/sqlite"
	"github.com/tillwatch/tillwatch/internal/atomicfile"
	"github.com/tillwatch/tillwatch/internal/cfgfile"
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
	st, err := elasticsearch.Open(ctx, elasticsearch.Options{URL: cfg.Elasticsearch, Namespace: cfg.ElasticsearchNamespace,
		Logger: log, Registry: reg})
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

// StoreFile, in the data dir, names the store `run` last opened. The other
// subcommands that open the store refuse to use a different one: a token
// written to a SQLite file that a collector running on Elasticsearch never
// reads is refused at enrolment as "unknown token", long after the mistake.
const StoreFile = "store"

// storeID names cfg's store for StoreFile: the absolute SQLite path, or the
// Elasticsearch URL without credentials.
func storeID(cfg config.Config) string {
	if cfg.Elasticsearch == "" {
		p, err := filepath.Abs(cfg.SQLitePath())
		if err != nil {
			p = cfg.SQLitePath()
		}
		return config.SQLiteScheme + p
	}
	u, err := url.Parse(cfg.Elasticsearch)
	if err != nil {
		return "elasticsearch:" + cfg.Elasticsearch
	}
	u.User = nil
	id := "elasticsearch:" + strings.TrimSuffix(u.String(), "/")
	if cfg.ElasticsearchNamespace != "" {
		id += " namespace " + cfg.ElasticsearchNamespace // another namespace is another store
	}
	return id
}

// recordStore writes StoreFile for the other subcommands to compare with.
func recordStore(cfg config.Config) error {
	if err := atomicfile.Write(filepath.Join(cfg.DataDir, StoreFile), []byte(storeID(cfg)+"\n"), 0o600); err != nil {
		return fmt.Errorf("record the store in the data dir: %w", err)
	}
	return nil
}

// openCLIStore opens the store for a subcommand other than run (token
// create, ...) after checking that it is the store run last used with this
// data dir; a data dir run never used is fine (tokens before first start).
func openCLIStore(ctx context.Context, cfg config.Config) (store.Store, error) {
	// Created here if the collector never ran, so tokens can be made
	// before first start; 0700 like pki does.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, StoreFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if ran, want := strings.TrimSpace(string(b)), storeID(cfg); ran != want {
			return nil, cfgfile.Usagef("the collector with data dir %s runs on %s, but this command would use %s: pass the same -c, --store or --elasticsearch as run", cfg.DataDir, ran, want)
		}
	}
	st, _, err := openStore(ctx, cfg, nil, nil)
	return st, err
}
