package elasticsearch

// Client plumbing: requests, errors with their status, retry backoff.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"
)

// backoff is the wait before retry attempt (1-based): full jitter over
// 100ms·2^attempt, at most 5s.
func backoff(attempt int) time.Duration {
	max := 100 * time.Millisecond << min(attempt, 6)
	if max > 5*time.Second {
		max = 5 * time.Second
	}
	var b [8]byte
	rand.Read(b[:])
	n := int64(0)
	for _, x := range b {
		n = n<<8 | int64(x)
	}
	if n < 0 {
		n = -n
	}
	return time.Duration(n%int64(max)) + time.Millisecond
}

// redact drops credentials from a URL for messages.
func redact(u string) string {
	if i := strings.Index(u, "@"); i >= 0 {
		if j := strings.Index(u, "://"); j >= 0 && j < i {
			return u[:j+3] + "…@" + u[i+1:]
		}
	}
	return u
}

// esError is a non-2xx answer, with the status kept for callers to branch on.
type esError struct {
	Status int
	Type   string
	Reason string
}

func (e *esError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("status %d", e.Status)
	}
	return fmt.Sprintf("%s (%d): %s", e.Type, e.Status, e.Reason)
}

func statusOf(err error) int {
	var e *esError
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// do runs req and decodes a 2xx JSON body into out (when non-nil). Non-2xx
// answers become *esError.
func (s *Store) do(ctx context.Context, req esapi.Request, out any) error {
	res, err := req.Do(ctx, s.c)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.Header.Get("X-Elastic-Product") != "Elasticsearch" {
		return fmt.Errorf("the server at that URL is not Elasticsearch (status %d, no X-Elastic-Product header)", res.StatusCode)
	}
	if res.IsError() {
		var body struct {
			Error json.RawMessage `json:"error"`
		}
		raw, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		e := &esError{Status: res.StatusCode}
		if json.Unmarshal(raw, &body) == nil && len(body.Error) > 0 {
			var detail struct{ Type, Reason string }
			if json.Unmarshal(body.Error, &detail) == nil && detail.Type != "" {
				e.Type, e.Reason = detail.Type, detail.Reason
			} else {
				e.Reason = string(body.Error)
			}
		}
		return e
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, res.Body)
		return nil
	}
	return json.NewDecoder(res.Body).Decode(out)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v) // our own maps and structs always marshal
	return bytes.NewReader(b)
}

// rawRequest is a request for a path given as text (templates carry theirs).
type rawRequest struct {
	Method, Path string
	Body         io.Reader
}

// Do implements esapi.Request.
func (r rawRequest) Do(ctx context.Context, t esapi.Transport) (*esapi.Response, error) {
	req, err := http.NewRequestWithContext(ctx, r.Method, r.Path, r.Body)
	if err != nil {
		return nil, err
	}
	if r.Body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := t.Perform(req)
	if err != nil {
		return nil, err
	}
	return &esapi.Response{StatusCode: res.StatusCode, Header: res.Header, Body: res.Body}, nil
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	var h struct {
		Status string `json:"status"`
	}
	if err := s.do(ctx, esapi.ClusterHealthRequest{Local: esapi.BoolPtr(true)}, &h); err != nil {
		return err
	}
	if h.Status == "red" {
		return errors.New("cluster health is red")
	}
	return nil
}
