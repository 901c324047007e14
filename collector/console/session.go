package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"
)

// Session lifetimes. A console session is a short-lived stand-in for the
// token it was exchanged for: it ends after IdleTimeout without a request
// and after MaxLifetime whatever happens, so a forgotten browser tab does
// not hold the kill-switch for a day.
const (
	DefaultIdleTimeout = 15 * time.Minute
	DefaultMaxLifetime = 8 * time.Hour
	// maxSessions bounds memory against a flood of sign-ins; the oldest
	// session is dropped to make room.
	maxSessions = 10000
)

// CookieName is the session cookie. The __Host- prefix makes the browser
// refuse it unless it is Secure, has Path=/ and no Domain, so no sibling
// host can plant or widen it.
const CookieName = "__Host-tillwatch-session"

// session is one signed-in browser. The token stays in the collector's
// memory only: every request authenticates it again through the store, so
// a revoked or expired token ends its sessions at once.
type session struct {
	id      string
	token   string
	role    string
	csrf    string
	created time.Time
	seen    time.Time
}

// sessions is the server-side session store: random ids, nothing in the
// cookie but the id.
type sessions struct {
	mu   sync.Mutex
	m    map[string]*session
	idle time.Duration
	max  time.Duration
	now  func() time.Time
}

func newSessions(idle, max time.Duration, now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, idle: idle, max: max, now: now}
}

// randomID returns 256 random bits, URL-safe.
func randomID() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session for a token already authenticated as role.
func (s *sessions) create(token, role string) *session {
	now := s.now()
	ss := &session{id: randomID(), token: token, role: role, csrf: randomID(), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now) // sign-ins are rare: sweeping here keeps the map small
	if len(s.m) >= maxSessions {
		if len(s.m) >= maxSessions {
			var oldest *session
			for _, o := range s.m {
				if oldest == nil || o.created.Before(oldest.created) {
					oldest = o
				}
			}
			delete(s.m, oldest.id)
		}
	}
	s.m[ss.id] = ss
	return ss
}

// get returns the live session with id and marks it used; nil when there is
// none or it has expired (which also deletes it).
func (s *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ss, ok := s.m[id]
	if !ok {
		return nil
	}
	if s.expired(ss, now) {
		delete(s.m, id)
		return nil
	}
	ss.seen = now
	cp := *ss
	return &cp
}

// delete ends a session (logout, or its token stopped working).
func (s *sessions) delete(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) >= s.idle || now.Sub(ss.created) >= s.max
}

func (s *sessions) expireLocked(now time.Time) {
	for id, ss := range s.m {
		if s.expired(ss, now) {
			delete(s.m, id)
		}
	}
}

// expiresAt is when ss ends if it stays idle.
func (s *sessions) expiresAt(ss *session) time.Time {
	idle := ss.seen.Add(s.idle)
	hard := ss.created.Add(s.max)
	if hard.Before(idle) {
		return hard
	}
	return idle
}

// csrfOK compares a presented CSRF token with the session's in constant
// time.
func csrfOK(ss *session, presented string) bool {
	if presented == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(ss.csrf), []byte(presented)) == 1
}
