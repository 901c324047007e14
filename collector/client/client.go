// Package client is the Go client of the collector API, used by the sensor's
// shipper and by the tillwatch CLI. It pins the collector's CA: system roots
// are never consulted, so only the fleet's own collector is ever trusted.
package client

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/internal/killswitch"
	"github.com/tillwatch/tillwatch/internal/rulebundle"
)

// DefaultTimeout bounds one request when Config.Timeout is 0.
const DefaultTimeout = 30 * time.Second

// Bounds on the answers the client reads, each what that answer may be:
// a sensor never reads more than its long-poll, acknowledgement or rule
// bundle can hold, so a compromised or broken collector cannot make a
// till buffer hundreds of MiB before a later size check.
const (
	// maxSmall: enrolment, heartbeat, ingest and acknowledgement answers.
	maxSmall = 1 << 20
	// maxRules: a rule bundle is served as its signed JSON file.
	maxRules = rulebundle.MaxBundle + 4<<10
	// maxCommand: one command's status, with up to killswitch.MaxTargets
	// hosts.
	maxCommand = 16 << 20
	// maxListing: the analysts' listings (alerts, hosts, commands). A full
	// alerts page (10000 alerts of up to 256 KiB) would be larger, but
	// real alerts are a few KiB each.
	maxListing = 256 << 20
)

// ErrTooLarge is an answer over the bound for its kind.
var ErrTooLarge = errors.New("collector answer too large")

// Config configures a Client.
type Config struct {
	URL       string        // https://host:port of the collector
	CAFile    string        // the collector's ca.pem; ignored when CAPEM is set
	CAPEM     []byte        // the collector's CA certificate in PEM
	Token     string        // bearer token (enrolment token, agent credential, analyst or responder token)
	Timeout   time.Duration // per request; 0 means DefaultTimeout
	UserAgent string        // e.g. "tillwatch-sensor/1.2.3"
}

// Client talks to one collector. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	hc    *http.Client
	token string
	ua    string
}

// New validates cfg and builds a Client that trusts only the pinned CA.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("collector URL %q is not a URL like https://collector:8443", cfg.URL)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("collector URL %q must start with https:// (the collector only speaks TLS)", cfg.URL)
	}
	pemBytes := cfg.CAPEM
	if len(pemBytes) == 0 {
		if cfg.CAFile == "" {
			return nil, errors.New("no collector CA given: pass the collector's ca.pem (--ca)")
		}
		pemBytes, err = os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read collector CA (--ca): %w", err)
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		name := cfg.CAFile
		if len(cfg.CAPEM) > 0 || name == "" {
			name = "CA PEM"
		}
		return nil, fmt.Errorf("collector CA %s holds no PEM certificate (--ca should be the collector's ca.pem)", name)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "tillwatch-client"
	}
	return &Client{base: u, hc: &http.Client{Transport: tr, Timeout: timeout}, token: cfg.Token, ua: ua}, nil
}

// WithToken returns a copy of c presenting tok; the copy shares c's
// connections.
func (c *Client) WithToken(tok string) *Client {
	cp := *c
	cp.token = tok
	return &cp
}

// Enroll registers the host with an enrolment token (role sensor) and
// returns its own credential.
func (c *Client) Enroll(ctx context.Context, req api.EnrollRequest) (api.EnrollResponse, error) {
	var resp api.EnrollResponse
	err := c.doJSON(ctx, http.MethodPost, api.PathEnroll, nil, req, &resp, maxSmall)
	return resp, err
}

// SendEvents posts one NDJSON batch (at most api.MaxBatchEvents lines and
// api.MaxBatchBytes bytes), gzip-compressed.
func (c *Client) SendEvents(ctx context.Context, ndjson []byte) (api.IngestResponse, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(ndjson); err != nil {
		return api.IngestResponse{}, fmt.Errorf("compress batch: %w", err)
	}
	if err := zw.Close(); err != nil {
		return api.IngestResponse{}, fmt.Errorf("compress batch: %w", err)
	}
	hdr := http.Header{
		"Content-Type":     {"application/x-ndjson"},
		"Content-Encoding": {"gzip"},
	}
	var resp api.IngestResponse
	err := c.do(ctx, http.MethodPost, api.PathEvents, nil, hdr, buf.Bytes(), &resp, maxSmall)
	return resp, err
}

// Heartbeat reports the sensor's state and returns when to report next.
func (c *Client) Heartbeat(ctx context.Context, hb api.Heartbeat) (api.HeartbeatResponse, error) {
	var resp api.HeartbeatResponse
	err := c.doJSON(ctx, http.MethodPost, api.PathHeartbeat, nil, hb, &resp, maxSmall)
	return resp, err
}

// AlertQuery selects alerts; zero fields do not filter. Limit 0 means the
// collector's default (100); the maximum is 10000.
type AlertQuery struct {
	Since  time.Time
	HostID string
	RuleID string
	Limit  int
}

// Alerts returns matching alerts newest first, each the ECS document as
// stored.
func (c *Client) Alerts(ctx context.Context, q AlertQuery) ([]map[string]any, error) {
	v := url.Values{}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.HostID != "" {
		v.Set("host", q.HostID)
	}
	if q.RuleID != "" {
		v.Set("rule", q.RuleID)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var resp api.AlertsResponse
	if err := c.do(ctx, http.MethodGet, api.PathAlerts, v, nil, nil, &resp, maxListing); err != nil {
		return nil, err
	}
	if resp.Alerts == nil {
		resp.Alerts = []map[string]any{}
	}
	return resp.Alerts, nil
}

// Hosts lists the enrolled hosts.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var resp api.HostsResponse
	if err := c.do(ctx, http.MethodGet, api.PathHosts, nil, nil, nil, &resp, maxListing); err != nil {
		return nil, err
	}
	return resp.Hosts, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any, limit int64) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode request: %w", err)
	}
	return c.do(ctx, method, path, q, http.Header{"Content-Type": {"application/json"}}, body, out, limit)
}

// do sends one request and decodes a 2xx answer into out, reading at most
// limit bytes of it.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, hdr http.Header, body []byte, out any, limit int64) error {
	u := *c.base
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawQuery = q.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.ua)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.netError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readHTTPError(resp.StatusCode, resp.Body)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	tooLarge := fmt.Errorf("collector %s: answer to %s %s is over %d bytes; not read: %w", c.origin(), method, path, limit, ErrTooLarge)
	if resp.ContentLength > limit {
		return tooLarge
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return c.netError(err)
	}
	if int64(len(raw)) > limit {
		return tooLarge
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("collector %s: unreadable answer to %s %s: %w", c.origin(), method, path, err)
	}
	return nil
}

func (c *Client) origin() string { return c.base.Scheme + "://" + c.base.Host }

// netError rewrites a transport failure as one line naming the collector,
// and turns certificate failures into a hint about the pinned CA.
func (c *Client) netError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		verifyErr *tls.CertificateVerificationError
		hostErr   x509.HostnameError
	)
	switch {
	case errors.As(err, &hostErr):
		return &NetError{URL: c.origin(), Err: err,
			msg: fmt.Sprintf("collector %s presented a certificate for other names: %v (use the host name or address the collector's certificate was issued for, or add it to the collector's tls.extra_sans)", c.origin(), oneLine(err))}
	case errors.As(err, &unknownCA), errors.As(err, &verifyErr):
		return &NetError{URL: c.origin(), Err: err,
			msg: fmt.Sprintf("collector %s certificate does not match the pinned CA (--ca must be that collector's ca.pem): %v", c.origin(), oneLine(err))}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &NetError{URL: c.origin(), Err: err,
			msg: fmt.Sprintf("collector %s did not answer in time: %v", c.origin(), oneLine(err))}
	}
	return &NetError{URL: c.origin(), Err: err,
		msg: fmt.Sprintf("collector %s unreachable: %v", c.origin(), oneLine(err))}
}

// NetError is a failure to get any answer from the collector.
type NetError struct {
	URL string
	Err error
	msg string
}

func (e *NetError) Error() string { return e.msg }
func (e *NetError) Unwrap() error { return e.Err }

// HTTPError is a non-2xx answer from the collector.
type HTTPError struct {
	StatusCode int
	Message    string // the collector's api.Error message, or the status text
}

// Error reads as one line, e.g. "collector refused the token (401): unknown token".
func (e *HTTPError) Error() string {
	var what string
	switch e.StatusCode {
	case http.StatusUnauthorized:
		what = "collector refused the token"
	case http.StatusForbidden:
		what = "collector denied the request"
	case http.StatusRequestEntityTooLarge:
		what = "collector refused the batch as too large"
	case http.StatusTooManyRequests:
		what = "collector is rate limiting"
	default:
		if e.StatusCode >= 500 {
			what = "collector failed"
		} else {
			what = "collector rejected the request"
		}
	}
	return fmt.Sprintf("%s (%d): %s", what, e.StatusCode, e.Message)
}

func readHTTPError(code int, body io.Reader) error {
	raw, _ := io.ReadAll(io.LimitReader(body, 64<<10))
	var ae api.Error
	msg := ""
	if json.Unmarshal(raw, &ae) == nil && ae.Error != "" {
		msg = ae.Error
	} else if s := strings.TrimSpace(string(raw)); s != "" && len(s) < 200 {
		msg = s
	} else {
		msg = http.StatusText(code)
	}
	return &HTTPError{StatusCode: code, Message: oneLine(msg)}
}

// IsPermanent reports whether retrying the same request cannot succeed: a
// 4xx answer other than 408 and 429. Everything else (network failures,
// timeouts, 5xx, 408, 429) is worth retrying. A certificate that does not
// match the pinned CA counts as retryable too: it is fixed by configuration,
// and a shipper must keep its spooled events until then.
func IsPermanent(err error) bool {
	var he *HTTPError
	if !errors.As(err, &he) {
		return false
	}
	if he.StatusCode == http.StatusRequestTimeout || he.StatusCode == http.StatusTooManyRequests {
		return false
	}
	return he.StatusCode >= 400 && he.StatusCode < 500
}

func oneLine(v any) string {
	s := fmt.Sprint(v)
	return strings.Join(strings.Fields(s), " ")
}

// IssueCommand issues a kill-switch command (responder token).
func (c *Client) IssueCommand(ctx context.Context, req api.IssueRequest) (api.CommandStatus, error) {
	var resp api.CommandStatus
	err := c.doJSON(ctx, http.MethodPost, api.PathCommands, nil, req, &resp, maxCommand)
	return resp, err
}

// ApproveCommand adds a responder's signature to a command.
func (c *Client) ApproveCommand(ctx context.Context, id string, sig killswitch.Signature) (api.CommandStatus, error) {
	var resp api.CommandStatus
	err := c.doJSON(ctx, http.MethodPost, commandPath(api.PathCommandApprove, id), nil, api.ApproveRequest{Signature: sig}, &resp, maxCommand)
	return resp, err
}

// Command returns one command and its hosts' states.
func (c *Client) Command(ctx context.Context, id string) (api.CommandStatus, error) {
	var resp api.CommandStatus
	err := c.do(ctx, http.MethodGet, commandPath(api.PathCommand, id), nil, nil, nil, &resp, maxCommand)
	return resp, err
}

// Commands lists the newest commands (limit 0: the collector's default).
func (c *Client) Commands(ctx context.Context, limit int) ([]api.Command, error) {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var resp api.CommandsResponse
	err := c.do(ctx, http.MethodGet, api.PathCommands, v, nil, nil, &resp, maxListing)
	return resp.Commands, err
}

// PendingCommands long-polls for commands addressed to this sensor, for at
// most wait (the request timeout must exceed it).
func (c *Client) PendingCommands(ctx context.Context, wait time.Duration) ([]killswitch.Signed, error) {
	v := url.Values{"wait": {strconv.Itoa(int(wait / time.Second))}}
	var resp api.PendingCommandsResponse
	err := c.do(ctx, http.MethodGet, api.PathCommandsPending, v, nil, nil, &resp, api.MaxPendingResponse)
	return resp.Commands, err
}

// AckCommand reports a sensor's result for a command.
func (c *Client) AckCommand(ctx context.Context, id string, r killswitch.Result) error {
	return c.doJSON(ctx, http.MethodPost, commandPath(api.PathCommandAck, id), nil, r, nil, maxSmall)
}

// commandPath fills {id}; ids are escaped, so an id can never leave its
// path segment.
func commandPath(pattern, id string) string {
	return strings.Replace(pattern, "{id}", url.PathEscape(id), 1)
}

// SensorRules fetches the rule bundle the collector serves when it is not
// the serial have; nil bytes mean the sensor runs it already.
func (c *Client) SensorRules(ctx context.Context, have int64) ([]byte, error) {
	var raw json.RawMessage
	err := c.do(ctx, http.MethodGet, api.PathSensorRules, url.Values{"have": {strconv.FormatInt(have, 10)}}, nil, nil, &raw, maxRules)
	if err != nil {
		return nil, err
	}
	if len(raw) == 0 {
		return nil, nil
	}
	return raw, nil
}
