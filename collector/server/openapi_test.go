package server_test

import (
	"bytes"
	"compress/gzip"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tillwatch/tillwatch/collector/api"
	"github.com/tillwatch/tillwatch/collector/command"
	"github.com/tillwatch/tillwatch/collector/server"
	"github.com/tillwatch/tillwatch/internal/killswitch"
)

// documented returns "METHOD path" -> response codes from openapi.yaml.
func documented(t *testing.T) map[string][]int {
	t.Helper()
	var doc struct {
		OpenAPI string                               `yaml:"openapi"`
		Paths   map[string]map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") {
		t.Fatalf("openapi version %q, want 3.0.x", doc.OpenAPI)
	}
	out := map[string][]int{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			resp, ok := op["responses"].(map[string]any)
			if !ok || len(resp) == 0 {
				t.Errorf("%s %s documents no responses", method, path)
				continue
			}
			key := strings.ToUpper(method) + " " + path
			for code := range resp {
				n, err := strconv.Atoi(code)
				if err != nil {
					t.Errorf("%s: response %q is not a status code", key, code)
					continue
				}
				out[key] = append(out[key], n)
			}
			sort.Ints(out[key])
		}
	}
	return out
}

// TestOpenAPIMatchesServer keeps openapi.yaml true: every route the server
// registers is documented, every documented route exists, and every
// documented response code is provoked against a real collector.
func TestOpenAPIMatchesServer(t *testing.T) {
	t.Parallel()
	docs := documented(t)

	registered := map[string]bool{}
	for _, r := range server.Routes() {
		key := r.Method + " " + r.Path
		registered[key] = true
		if _, ok := docs[key]; !ok {
			t.Errorf("route %s is served but not in openapi.yaml", key)
		}
	}
	for key := range docs {
		if !registered[key] {
			t.Errorf("openapi.yaml documents %s, which the server does not serve", key)
		}
	}

	e := newEnv(t)
	down := newEnv(t) // its store is closed: every store-backed route fails
	downAnalyst := down.token(api.RoleAnalyst)
	downAgent := down.enroll("till-down")
	downSensor := down.token(api.RoleSensor)
	downResponder := down.token(api.RoleResponder)
	down.st.Close()
	responder := e.token(api.RoleResponder)
	cmdPath := func(pattern, id string) string { return strings.Replace(pattern, "{id}", id, 1) }
	issueTo := func(action string) api.Command {
		t.Helper()
		r := e.do("POST", api.PathCommands, responder, nil, []byte(`{"action":"`+action+`","targets":{"hosts":["till-1"]}}`))
		var st api.CommandStatus
		if r.code != http.StatusCreated || json.Unmarshal(r.body, &st) != nil {
			t.Fatalf("issue %s: %d %s", action, r.code, r.body)
		}
		return st.Command
	}
	approval := func(priv ed25519.PrivateKey, payload []byte) []byte {
		b, _ := json.Marshal(api.ApproveRequest{Signature: killswitch.Sign(priv, payload)})
		return b
	}
	withRules := newEnv(t, func(o *server.Options) { o.Rules = staticRules{serial: 5, bundle: []byte(`{"manifest":"..."}`)} })
	rulesAgent := withRules.enroll("till-rules")
	brokenRules := newEnv(t, func(o *server.Options) { o.Rules = staticRules{err: errors.New("rules_bundle: file gone")} })
	brokenAgent := brokenRules.enroll("till-broken")
	issueBody := []byte(`{"action":"scan","targets":{"all":true},"reason":"sweep"}`)
	okAck := []byte(`{"status":"ok","detail":"done"}`)

	sensor := e.token(api.RoleSensor)
	analyst := e.token(api.RoleAnalyst)
	agent := e.enroll("till-1")
	hb := []byte(`{"host_id":"till-1","agent_version":"1.0.0","mode":"enforce","sent_at":"2025-05-01T10:00:00Z"}`)
	enrol := []byte(`{"host_id":"till-2","host_name":"till-2","agent_version":"1.0.0","host_key":"hk-test-0123456789abcdef0123456789abcdef"}`)
	// till-1 is bound to env.enroll's host key; another key is a claim.
	claim := []byte(`{"host_id":"till-1","host_name":"till-1","agent_version":"1.0.0","host_key":"hk-other-0123456789abcdef0123456789abcdef"}`)
	big := bytes.Repeat([]byte(" "), 70<<10)
	gz := map[string]string{"Content-Encoding": "gzip"}

	// provoke[key][code] sends a request that must answer code.
	provoke := map[string]map[int]func() reply{
		"POST " + api.PathEnroll: {
			200: func() reply { return e.do("POST", api.PathEnroll, sensor, nil, enrol) },
			400: func() reply { return e.do("POST", api.PathEnroll, sensor, nil, []byte(`{"host_id":""}`)) },
			401: func() reply { return e.do("POST", api.PathEnroll, "", nil, enrol) },
			403: func() reply { return e.do("POST", api.PathEnroll, analyst, nil, enrol) },
			409: func() reply { return e.do("POST", api.PathEnroll, sensor, nil, claim) },
			413: func() reply {
				return e.do("POST", api.PathEnroll, sensor, nil, append([]byte(`{"host_id":"x","pad":"`), big...))
			},
			503: func() reply { return down.do("POST", api.PathEnroll, downSensor, nil, enrol) },
		},
		"POST " + api.PathEvents: {
			200: func() reply {
				return e.do("POST", api.PathEvents, agent, nil, ndjson(alertLine("oa-1", "till-1", "r", time.Now())))
			},
			400: func() reply { return e.do("POST", api.PathEvents, agent, nil, []byte{}) },
			401: func() reply { return e.do("POST", api.PathEvents, "tw_unknown", nil, []byte("{}")) },
			403: func() reply { return e.do("POST", api.PathEvents, analyst, nil, []byte("{}")) },
			413: func() reply {
				return e.do("POST", api.PathEvents, agent, nil, []byte(strings.Repeat("{}\n", api.MaxBatchEvents+1)))
			},
			415: func() reply {
				return e.do("POST", api.PathEvents, agent, map[string]string{"Content-Encoding": "br"}, []byte("{}"))
			},
			429: func() reply { return busyIngest(t) },
			503: func() reply { return down.do("POST", api.PathEvents, downAgent, gz, gzipped([]byte("{}"))) },
		},
		"POST " + api.PathHeartbeat: {
			200: func() reply { return e.do("POST", api.PathHeartbeat, agent, nil, hb) },
			400: func() reply { return e.do("POST", api.PathHeartbeat, agent, nil, []byte(`{"host_id":`)) },
			401: func() reply { return e.do("POST", api.PathHeartbeat, "", nil, hb) },
			403: func() reply {
				return e.do("POST", api.PathHeartbeat, agent, nil, []byte(`{"host_id":"till-9","agent_version":"1"}`))
			},
			413: func() reply { return e.do("POST", api.PathHeartbeat, agent, nil, append([]byte(`{"mode":"`), big...)) },
			503: func() reply { return down.do("POST", api.PathHeartbeat, downAgent, nil, hb) },
		},
		"GET " + api.PathAlerts: {
			200: func() reply { return e.do("GET", api.PathAlerts+"?since=15m&limit=5", analyst, nil, nil) },
			400: func() reply { return e.do("GET", api.PathAlerts+"?since=yesterday", analyst, nil, nil) },
			401: func() reply { return e.do("GET", api.PathAlerts, "", nil, nil) },
			403: func() reply { return e.do("GET", api.PathAlerts, agent, nil, nil) },
			503: func() reply { return down.do("GET", api.PathAlerts, downAnalyst, nil, nil) },
		},
		"GET " + api.PathHosts: {
			200: func() reply { return e.do("GET", api.PathHosts, analyst, nil, nil) },
			401: func() reply { return e.do("GET", api.PathHosts, "nope", nil, nil) },
			403: func() reply { return e.do("GET", api.PathHosts, sensor, nil, nil) },
			503: func() reply { return down.do("GET", api.PathHosts, downAnalyst, nil, nil) },
		},
		"GET " + api.PathOpenAPI: {
			200: func() reply { return e.do("GET", api.PathOpenAPI, "", nil, nil) },
		},
		"GET " + api.PathHealthz: {
			200: func() reply { return e.do("GET", api.PathHealthz, "", nil, nil) },
			503: func() reply { return down.do("GET", api.PathHealthz, "", nil, nil) },
		},
		"POST " + api.PathCommands: {
			201: func() reply { return e.do("POST", api.PathCommands, responder, nil, issueBody) },
			400: func() reply {
				return e.do("POST", api.PathCommands, responder, nil, []byte(`{"action":"format-disk","targets":{"all":true}}`))
			},
			401: func() reply { return e.do("POST", api.PathCommands, "", nil, issueBody) },
			403: func() reply { return e.do("POST", api.PathCommands, analyst, nil, issueBody) },
			413: func() reply {
				return e.do("POST", api.PathCommands, responder, nil, append([]byte(`{"reason":"`), big...))
			},
			422: func() reply {
				return e.do("POST", api.PathCommands, responder, nil, []byte(`{"action":"scan","targets":{"hosts":["till-404"]}}`))
			},
			429: func() reply { return issueUntilLimited(t) },
			503: func() reply { return down.do("POST", api.PathCommands, downResponder, nil, issueBody) },
		},
		"GET " + api.PathCommands: {
			200: func() reply { return e.do("GET", api.PathCommands+"?limit=5", analyst, nil, nil) },
			400: func() reply { return e.do("GET", api.PathCommands+"?limit=0", analyst, nil, nil) },
			401: func() reply { return e.do("GET", api.PathCommands, "", nil, nil) },
			403: func() reply { return e.do("GET", api.PathCommands, agent, nil, nil) },
			503: func() reply { return down.do("GET", api.PathCommands, downAnalyst, nil, nil) },
		},
		"GET " + api.PathCommand: {
			200: func() reply { return e.do("GET", cmdPath(api.PathCommand, issueTo("scan").ID), analyst, nil, nil) },
			401: func() reply { return e.do("GET", cmdPath(api.PathCommand, "ks-1"), "", nil, nil) },
			403: func() reply { return e.do("GET", cmdPath(api.PathCommand, "ks-1"), agent, nil, nil) },
			404: func() reply { return e.do("GET", cmdPath(api.PathCommand, "ks-unknown-1"), analyst, nil, nil) },
			503: func() reply { return down.do("GET", cmdPath(api.PathCommand, "ks-1"), downAnalyst, nil, nil) },
		},
		"POST " + api.PathCommandApprove: {
			200: func() reply {
				c := issueTo("release-host")
				return e.do("POST", cmdPath(api.PathCommandApprove, c.ID), responder, nil, approval(e.alice, c.Signed.Payload))
			},
			400: func() reply {
				c := issueTo("release-host")
				return e.do("POST", cmdPath(api.PathCommandApprove, c.ID), responder, nil, approval(newPriv(t), c.Signed.Payload))
			},
			401: func() reply { return e.do("POST", cmdPath(api.PathCommandApprove, "ks-1"), "", nil, []byte("{}")) },
			403: func() reply { return e.do("POST", cmdPath(api.PathCommandApprove, "ks-1"), analyst, nil, []byte("{}")) },
			409: func() reply {
				// alice alone isolates 5 + 5 hosts (her budget is 10), then one more.
				var last reply
				for i, n := range []int{5, 5, 1} {
					var hosts []string
					for j := range n {
						h := fmt.Sprintf("till-b%d-%d", i, j)
						e.enroll(h)
						hosts = append(hosts, `"`+h+`"`)
					}
					r := e.do("POST", api.PathCommands, responder, nil, []byte(`{"action":"isolate-host","targets":{"hosts":[`+strings.Join(hosts, ",")+`]}}`))
					var st api.CommandStatus
					if r.code != http.StatusCreated || json.Unmarshal(r.body, &st) != nil {
						t.Fatalf("issue isolate-host: %d %s", r.code, r.body)
					}
					last = e.do("POST", cmdPath(api.PathCommandApprove, st.Command.ID), responder, nil, approval(e.alice, st.Command.Signed.Payload))
				}
				return last
			},
			404: func() reply {
				return e.do("POST", cmdPath(api.PathCommandApprove, "ks-unknown-1"), responder, nil, approval(e.alice, []byte("x")))
			},
			413: func() reply {
				return e.do("POST", cmdPath(api.PathCommandApprove, "ks-1"), responder, nil, append([]byte(`{"x":"`), big...))
			},
			503: func() reply {
				return down.do("POST", cmdPath(api.PathCommandApprove, "ks-1"), downResponder, nil, approval(e.alice, []byte("x")))
			},
		},
		"GET " + api.PathCommandsPending: {
			200: func() reply { return e.do("GET", api.PathCommandsPending+"?wait=0", agent, nil, nil) },
			400: func() reply { return e.do("GET", api.PathCommandsPending+"?wait=999", agent, nil, nil) },
			401: func() reply { return e.do("GET", api.PathCommandsPending, "", nil, nil) },
			403: func() reply { return e.do("GET", api.PathCommandsPending, analyst, nil, nil) },
			503: func() reply { return down.do("GET", api.PathCommandsPending+"?wait=0", downAgent, nil, nil) },
		},
		"POST " + api.PathCommandAck: {
			204: func() reply { return e.do("POST", cmdPath(api.PathCommandAck, issueTo("scan").ID), agent, nil, okAck) },
			400: func() reply {
				return e.do("POST", cmdPath(api.PathCommandAck, "ks-1"), agent, nil, []byte(`{"status":"done, trust me"}`))
			},
			401: func() reply { return e.do("POST", cmdPath(api.PathCommandAck, "ks-1"), "", nil, okAck) },
			403: func() reply { return e.do("POST", cmdPath(api.PathCommandAck, "ks-1"), analyst, nil, okAck) },
			404: func() reply { return e.do("POST", cmdPath(api.PathCommandAck, "ks-unknown-1"), agent, nil, okAck) },
			413: func() reply {
				return e.do("POST", cmdPath(api.PathCommandAck, "ks-1"), agent, nil, append([]byte(`{"detail":"`), big...))
			},
			503: func() reply { return down.do("POST", cmdPath(api.PathCommandAck, "ks-1"), downAgent, nil, okAck) },
		},
		"GET " + api.PathSensorRules: {
			200: func() reply { return withRules.do("GET", api.PathSensorRules+"?have=0", rulesAgent, nil, nil) },
			204: func() reply { return withRules.do("GET", api.PathSensorRules+"?have=5", rulesAgent, nil, nil) },
			400: func() reply { return withRules.do("GET", api.PathSensorRules+"?have=-1", rulesAgent, nil, nil) },
			401: func() reply { return withRules.do("GET", api.PathSensorRules, "", nil, nil) },
			403: func() reply {
				return withRules.do("GET", api.PathSensorRules, withRules.token(api.RoleAnalyst), nil, nil)
			},
			404: func() reply { return e.do("GET", api.PathSensorRules, agent, nil, nil) },
			503: func() reply { return brokenRules.do("GET", api.PathSensorRules, brokenAgent, nil, nil) },
		},
		"GET " + api.PathMetrics: {
			200: func() reply { return e.do("GET", api.PathMetrics, analyst, nil, nil) },
			401: func() reply { return e.do("GET", api.PathMetrics, "", nil, nil) },
			403: func() reply { return e.do("GET", api.PathMetrics, agent, nil, nil) },
		},
	}

	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		for _, code := range docs[key] {
			fn := provoke[key][code]
			if fn == nil {
				t.Errorf("%s %d is documented but this test cannot provoke it; add a case", key, code)
				continue
			}
			r := fn()
			if r.code != code {
				t.Errorf("%s: got %d (%s), want documented %d", key, r.code, r.body, code)
				continue
			}
			ct := r.hdr.Get("Content-Type")
			switch {
			case code >= 400 && (r.errMsg() == "" || strings.Contains(r.errMsg(), "\n")):
				t.Errorf("%s %d: error body %q is not a one-line api.Error", key, code, r.body)
			case code >= 400 && ct != "application/json":
				t.Errorf("%s %d: Content-Type %q", key, code, ct)
			}
		}
		for code := range provoke[key] {
			if !slices.Contains(docs[key], code) {
				t.Errorf("%s answers %d, which openapi.yaml does not document", key, code)
			}
		}
	}
	if got := e.do("GET", api.PathOpenAPI, "", nil, nil); !bytes.Equal(got.body, api.OpenAPI) {
		t.Error("served openapi.yaml differs from the embedded one")
	}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestWrongMethodAndUnknownRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, api.PathEnroll, http.StatusMethodNotAllowed},
		{http.MethodDelete, api.PathAlerts, http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v1/nope", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.method, tt.path), func(t *testing.T) {
			t.Parallel()
			r := e.do(tt.method, tt.path, "", nil, nil)
			if r.code != tt.want || r.errMsg() == "" {
				t.Fatalf("got %d %s, want %d with a JSON error", r.code, r.body, tt.want)
			}
		})
	}
}

// busyIngest fills a one-slot collector with a batch whose body never
// finishes arriving, then sends another: it must be turned away with 429.
func busyIngest(t *testing.T) reply {
	t.Helper()
	busy := newEnv(t, func(o *server.Options) { o.MaxConcurrentIngest = 1; o.IngestWait = 50 * time.Millisecond })
	agent := busy.enroll("till-busy")
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest(http.MethodPost, busy.url+api.PathEvents, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+agent)
	go func() {
		if resp, err := busy.hc.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	if _, err := pw.Write([]byte("{")); err != nil { // the handler now holds the slot, reading
		t.Fatal(err)
	}
	var r reply
	for range 100 { // bounded: the slow request reaches the handler within moments
		r = busy.do("POST", api.PathEvents, agent, nil, ndjson(alertLine("busy-1", "till-busy", "r", time.Now())))
		if r.code == http.StatusTooManyRequests {
			if r.hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
	}
	return r
}

// issueUntilLimited issues commands on a fresh collector until the
// responder's rate limit answers 429.
func issueUntilLimited(t *testing.T) reply {
	t.Helper()
	e := newEnv(t)
	e.enroll("till-rl")
	tok := e.token(api.RoleResponder)
	var r reply
	for range command.DefaultIssueBurst + 2 {
		r = e.do("POST", api.PathCommands, tok, nil, []byte(`{"action":"scan","targets":{"all":true}}`))
		if r.code == http.StatusTooManyRequests {
			if r.hdr.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			break
		}
	}
	return r
}

// staticRules serves fixed bytes (the server hands a bundle on unread;
// internal/rulebundle tests real bundles).
type staticRules struct {
	serial int64
	bundle []byte
	err    error
}

func (r staticRules) Current() (int64, []byte, error) { return r.serial, r.bundle, r.err }
