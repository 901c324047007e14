package collectortest

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tillwatch/tillwatch/collector/campaign"
	"github.com/tillwatch/tillwatch/collector/client"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/console"
	"github.com/tillwatch/tillwatch/collector/pki"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/collector/store"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// serving is the real server running on a store, whichever the backend:
// PKI in dir, a loopback listener on addr, stopped when the test ends.
type serving struct {
	URL    string
	CAFile string
	Addr   string
	Dir    string
	t      testing.TB
	st     store.Store
	stop   context.CancelFunc
	done   chan error
}

// serve starts the server on st. On failure it closes st and fails t.
func serve(t testing.TB, st store.Store, dir, addr string, reg *prometheus.Registry, policy *campaign.Policy) *serving {
	t.Helper()
	fail := func(what string, err error) {
		st.Close()
		t.Fatalf("collectortest: %s: %v", what, err)
	}
	bundle, err := pki.Ensure(dir, pki.Options{})
	if err != nil {
		fail("pki", err)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	var srv *server.Server
	cmds, err := commandService(dir, st, func() { srv.NotifyCommands() })
	if err != nil {
		fail("kill-switch", err)
	}
	con, err := console.New(console.Options{Store: st, Roles: server.RoleTable()})
	if err != nil {
		fail("console", err)
	}
	observers := server.Observers{con}
	if policy != nil {
		observers = append(observers, campaign.New(campaign.Options{Policy: *policy, Store: st, Issuer: cmds}))
	}
	opts := server.Options{Store: st, Registry: reg, Logger: slog.New(slog.DiscardHandler), Commands: cmds, Console: con.Handler,
		Observer: observers}
	srv, err = server.New(opts)
	if err != nil {
		fail("server", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fail("listen", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{
		URL: "https://" + ln.Addr().String(), Addr: ln.Addr().String(), CAFile: filepath.Join(dir, "ca.pem"), Dir: dir,
		t: t, st: st, stop: cancel, done: make(chan error, 1),
	}
	go func() { s.done <- srv.Serve(ctx, ln, bundle.TLSConfig()) }()
	return s
}

// shutdown stops the server and closes the store (idempotent); the data
// stays.
func (s *serving) shutdown() {
	if s.stop == nil {
		return
	}
	s.stop()
	s.stop = nil
	select {
	case err := <-s.done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, context.Canceled) {
			s.t.Errorf("collectortest: serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		s.t.Errorf("collectortest: server did not stop within 20s")
	}
	_ = s.st.Close()
}

// TokenExpiring creates a token of role that stops working at expires
// (the zero time: never).
func (s *serving) TokenExpiring(role string, expires time.Time) string {
	s.t.Helper()
	tok, err := s.st.CreateToken(context.Background(), role, "", expires, 0)
	if err != nil {
		s.t.Fatalf("collectortest: token: %v", err)
	}
	return tok
}

// Token creates a token of role that never expires.
func (s *serving) Token(role string) string {
	s.t.Helper()
	return s.TokenExpiring(role, time.Time{})
}

// Client returns a client pinned to the collector's CA holding tok.
func (s *serving) Client(tok string) *client.Client {
	s.t.Helper()
	cl, err := client.New(client.Config{URL: s.URL, CAFile: s.CAFile, Token: tok, Timeout: 10 * time.Second})
	if err != nil {
		s.t.Fatalf("collectortest: client: %v", err)
	}
	return cl
}

// Responders are the names of the responder keys every test collector
// accepts approvals from; their key files live in the data dir.
var Responders = []string{"alice", "bob"}

// commandService builds the kill-switch with keys kept in dir, so a
// restarted collector signs with the same key its sensors pinned.
func commandService(dir string, st store.Store, notify func()) (*command.Service, error) {
	if err := ensureKey(dir, "killswitch-signing"); err != nil {
		return nil, err
	}
	priv, err := killswitch.LoadPrivateKey(filepath.Join(dir, "killswitch-signing.key"))
	if err != nil {
		return nil, err
	}
	var responders []killswitch.PublicKey
	for _, name := range Responders {
		if err := ensureKey(dir, name); err != nil {
			return nil, err
		}
		pub, err := killswitch.LoadPublicKey(filepath.Join(dir, name+".pub"))
		if err != nil {
			return nil, err
		}
		responders = append(responders, killswitch.PublicKey{Role: killswitch.RoleResponder, Key: pub, Name: name})
	}
	return command.New(command.Options{Store: st, Key: priv, Responders: responders, Notify: notify, IssueRate: 1000})
}

func ensureKey(dir, name string) error {
	if _, err := os.Stat(filepath.Join(dir, name+".key")); err == nil {
		return nil
	}
	_, err := killswitch.GenerateKey(dir, name)
	return err
}

// ResponderKeyFile is the private key of a responder in Responders.
func (s *serving) ResponderKeyFile(name string) string { return filepath.Join(s.Dir, name+".key") }

// ResponderPubFile is the public key of a responder in Responders (what a
// sensor pins with --killswitch-key).
func (s *serving) ResponderPubFile(name string) string { return filepath.Join(s.Dir, name+".pub") }
