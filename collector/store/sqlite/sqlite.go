// Package sqlite is the collector's embedded store: one SQLite database file
// (pure Go, modernc.org/sqlite) in WAL mode. Writes go through a single
// connection so concurrent ingest queues in Go instead of failing with
// SQLITE_BUSY; reads use a small pool that WAL lets run beside the writer.
//
// One file per concern: this one opens the database; schema.go migrates
// it; tokens.go, hosts.go (enrolment, heartbeats, the host list),
// events.go (ingest, alert queries, sequences) and commands.go implement
// store.Store on its tables; stmts.go, groupcommit.go and checkpoint.go
// are the write path's plumbing.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tillwatch/tillwatch/collector/store"
)

// busyTimeout covers other processes (tillwatch-collector token create)
// writing while the collector runs; within this process writes never wait
// on SQLite's lock because they share one connection.
const busyTimeout = 10 * time.Second

// Options tunes Open. The zero value is usable.
type Options struct {
	// Now is the clock for created_at, enrolled_at and last_seen; nil means
	// time.Now.
	Now func() time.Time
	// Readers is the size of the read pool; 0 means 4.
	Readers int
	// Logger receives the store's warnings; nil means slog.Default().
	Logger *slog.Logger
}

// Store implements store.Store on a SQLite file.
type Store struct {
	w   *sql.DB // exactly one connection: the writer
	r   *sql.DB // readers (query_only)
	g   *groupCommit
	c   *checkpointer
	st  *stmts
	now func() time.Time

	// creds remembers confirmed agent credentials: a sensor's every
	// request (long-poll, acknowledgement, batch) would otherwise read
	// the tokens table. A revocation reaches it at once when made through
	// this store, within store.CredentialWindow when made by another
	// process on the same file (the generation is polled).
	creds     *store.CredentialCache
	stopCreds context.CancelFunc
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates its
// schema to the current version.
func Open(path string, opts Options) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	readers := opts.Readers
	if readers <= 0 {
		readers = 4
	}
	s := &Store{now: now}
	if err := s.openWriter(abs); err != nil {
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(abs, connReader))
	if err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	s.r = r
	c, err := sql.Open("sqlite", dsn(abs, connCheckpointer))
	if err != nil {
		s.w.Close()
		s.r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", abs, err)
	}
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st, err := prepareStmts(context.Background(), s.r, s.w)
	if err != nil {
		c.Close()
		s.r.Close()
		s.w.Close()
		return nil, err
	}
	s.st = st
	s.c = newCheckpointer(c, log)
	s.g = newGroupCommit(s.w)
	s.creds = store.NewCredentialCache(s.CredentialsGeneration, s.now)
	cctx, cancel := context.WithCancel(context.Background())
	s.stopCreds = cancel
	go s.creds.Run(cctx)
	return s, nil
}

// openWriter opens the single writer connection and migrates the schema.
// SQLite answers SQLITE_BUSY without waiting on busy_timeout in a few
// first-open races (two connections switching a brand-new file to WAL, or
// one reading while another runs WAL recovery: SQLite refuses rather than
// risk a deadlock), so a busy first open is retried from scratch until
// busyTimeout has passed; every other error is final.
func (s *Store) openWriter(abs string) error {
	deadline := time.Now().Add(busyTimeout)
	for attempt := 1; ; attempt++ {
		w, err := sql.Open("sqlite", dsn(abs, connWriter))
		if err != nil {
			return fmt.Errorf("sqlite: open %s: %w", abs, err)
		}
		w.SetMaxOpenConns(1)
		w.SetMaxIdleConns(1)
		w.SetConnMaxLifetime(0)
		s.w = w
		err = s.migrate(context.Background())
		if err == nil {
			return nil
		}
		w.Close()
		if !isBusy(err) || time.Now().After(deadline) {
			return fmt.Errorf("sqlite: %s: %w", abs, err)
		}
		// Jittered so racing openers do not collide again in lock step.
		time.Sleep(time.Duration(attempt*5+rand.IntN(20)) * time.Millisecond)
	}
}

// isBusy reports SQLITE_BUSY or SQLITE_LOCKED, including their extended codes.
func isBusy(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return true
	}
	return false
}

// connRole is what a connection is opened for.
type connRole int

const (
	connWriter connRole = iota
	connReader
	connCheckpointer
)

// dsn builds a file: URI; the path is escaped because SQLite parses %, ? and
// # in URIs.
func dsn(path string, role connRole) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(path))
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	// NORMAL is durable across process crashes in WAL mode; only a power
	// loss can drop the last transactions, which sensors resend from their
	// spool because they only drop events after our answer.
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	switch role {
	case connReader:
		q.Add("_pragma", "query_only(1)")
	case connWriter:
		// Take the write lock at BEGIN so a transaction never has to
		// upgrade (and fail) half way.
		q.Set("_txlock", "immediate")
		// The checkpointer copies the WAL back; the writer only past
		// this bound (checkpoint.go).
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", writerAutoCheckpoint))
	}
	return "file:" + esc + "?" + q.Encode()
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.stopCreds()
	s.g.close()
	return errors.Join(s.st.close(), s.c.close(), s.r.Close(), s.w.Close())
}
