package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var testKeys = []string{"sk_tenant_zero", "sk_tenant_one", "sk_tenant_two"}

// testPool is the events file: a blank line sits between lines 2 and 4, so pool
// indexes (line numbers) are 0, 1, 2 and 4.
var testPool = []string{
	`{"specversion":"1.0","id":"old-0","source":"/shop/web","type":"order.created","subject":"order/1","time":"2020-01-01T00:00:00Z","datacontenttype":"application/json","data":{"amount":12.5,"items":["a","b"]}}`,
	`{"specversion": "1.0", "type": "page.viewed", "source": "/shop/web", "id": "old-1", "time": "2020-01-01T00:00:00Z", "data": {"page": "/home"}, "shopext": "x y"}`,
	`{"specversion":"1.0","id":"old-2","source":"/pos","type":"payment.settled","datacontenttype":"application/json","data":{"ok":true}}`,
	``,
	`{"specversion":"1.0","id":"old-4","source":"/pos","type":"refund.issued","subject":"r/9","time":"2020-01-01T00:00:00Z","data":[1,2,3]}`,
}

var poolLines = []int{0, 1, 2, 4}

var idPattern = regexp.MustCompile(`^([A-Za-z0-9_]+)-(\d+)-(\d+)-(\d+)$`)

// ingestServer stands in for Sluice: it answers 202 with the ids it read, or what
// answer says, and remembers every request and every id it acknowledged.
type ingestServer struct {
	*httptest.Server
	answer func(n int) (status int, delay time.Duration)

	mu       sync.Mutex
	requests []receivedRequest
	accepted []string
}

type receivedRequest struct {
	header http.Header
	path   string
	body   []byte
	ids    []string
	at     time.Time
}

func newIngestServer(t *testing.T, answer func(n int) (int, time.Duration)) *ingestServer {
	s := &ingestServer{answer: answer}
	s.Server = httptest.NewServer(http.HandlerFunc(s.handle))
	t.Cleanup(s.Close)
	return s
}

func (s *ingestServer) handle(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := receivedRequest{header: r.Header, path: r.URL.Path, body: body, ids: requestIDs(r, body), at: time.Now()}
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, req)
	s.mu.Unlock()

	status, delay := 202, time.Duration(0)
	if s.answer != nil {
		status, delay = s.answer(n)
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	w.Header().Set("Content-Type", "application/json")
	if status != 202 {
		if status == 503 {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		w.Write([]byte(`{"error":"unavailable"}`))
		return
	}
	s.mu.Lock()
	s.accepted = append(s.accepted, req.ids...)
	s.mu.Unlock()
	encoded, _ := json.Marshal(map[string]interface{}{"status": "accepted", "ids": req.ids})
	w.WriteHeader(202)
	w.Write(encoded)
}

func requestIDs(r *http.Request, body []byte) []string {
	switch r.Header.Get("Content-Type") {
	case structuredContentType:
		var ev struct{ ID string }
		json.Unmarshal(body, &ev)
		return []string{ev.ID}
	case batchContentType:
		var evs []struct{ ID string }
		json.Unmarshal(body, &evs)
		ids := make([]string, len(evs))
		for i, ev := range evs {
			ids[i] = ev.ID
		}
		return ids
	}
	return []string{r.Header.Get("ce-id")}
}

func (s *ingestServer) received() ([]receivedRequest, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]receivedRequest(nil), s.requests...), append([]string(nil), s.accepted...)
}

// writePlan writes the pool, the keys and a plan (defaults overridden by fields) into
// a new directory and returns the plan's path.
func writePlan(t *testing.T, fields map[string]interface{}) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pool.jsonl"), strings.Join(testPool, "\n")+"\n")
	writeFile(t, filepath.Join(dir, "keys.txt"), strings.Join(testKeys, "\n")+"\n")
	plan := map[string]interface{}{
		"target":      "http://127.0.0.1:1",
		"mode":        "structured",
		"connections": 4,
		"profile":     []map[string]float64{{"seconds": 1, "rate_start": 100, "rate_end": 100}},
		"run":         "t1",
		"events":      "pool.jsonl",
		"keys":        "keys.txt",
		"acks":        "acks.txt",
		"series":      "series.jsonl",
		"progress":    "none",
	}
	for name, value := range fields {
		if value == nil {
			delete(plan, name)
		} else {
			plan[name] = value
		}
	}
	encoded, _ := json.Marshal(plan)
	path := filepath.Join(dir, "plan.json")
	writeFile(t, path, string(encoded))
	return path
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

type driverResult struct {
	code    int
	summary map[string]interface{}
	stderr  string
	dir     string
}

func runDriver(t *testing.T, ctx context.Context, planPath string) driverResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	res := driverResult{dir: filepath.Dir(planPath)}
	res.code = run(ctx, []string{"--plan", planPath}, &stdout, &stderr)
	res.stderr = stderr.String()
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &res.summary); err != nil {
			t.Fatalf("the summary is not JSON: %v\n%s", err, stdout.String())
		}
	}
	return res
}

func (r driverResult) number(name string) float64 {
	v, _ := r.summary[name].(float64)
	return v
}

func (r driverResult) errorsByClass() map[string]float64 {
	out := map[string]float64{}
	for class, n := range r.summary["errors"].(map[string]interface{}) {
		out[class] = n.(float64)
	}
	return out
}

func (r driverResult) ackedIDs(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(r.dir, "acks.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(raw))
}

func sameIDs(t *testing.T, acked, accepted []string) {
	t.Helper()
	a := append([]string(nil), acked...)
	b := append([]string(nil), accepted...)
	sort.Strings(a)
	sort.Strings(b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the acks file holds %d ids, the server acknowledged %d; they differ", len(a), len(b))
	}
}

// checkID checks an id's format and that its tenant and pool parts name real entries.
func checkID(t *testing.T, id string) (tenant, line int) {
	t.Helper()
	m := idPattern.FindStringSubmatch(id)
	if m == nil || m[1] != "t1" {
		t.Fatalf("id %q is not t1-<tenant>-<pool line>-<sequence>", id)
	}
	tenant, _ = strconv.Atoi(m[2])
	line, _ = strconv.Atoi(m[3])
	if tenant >= len(testKeys) {
		t.Errorf("id %q names tenant %d of %d", id, tenant, len(testKeys))
	}
	if line >= len(testPool) || testPool[line] == "" {
		t.Errorf("id %q names pool line %d, which holds no event", id, line)
	}
	return tenant, line
}

// checkEvent compares a received structured event with its pool line: id and time
// replaced, everything else as in the file.
func checkEvent(t *testing.T, got map[string]interface{}, sentAfter time.Time) string {
	t.Helper()
	id, _ := got["id"].(string)
	_, line := checkID(t, id)
	var want map[string]interface{}
	json.Unmarshal([]byte(testPool[line]), &want)
	checkTime(t, got["time"], sentAfter)
	delete(got, "id")
	delete(got, "time")
	delete(want, "id")
	delete(want, "time")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event %s = %v, want the pool line %d %v (id and time aside)", id, got, line, want)
	}
	return id
}

func checkTime(t *testing.T, value interface{}, sentAfter time.Time) {
	t.Helper()
	s, _ := value.(string)
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(s) {
		t.Fatalf("time %q is not RFC 3339 UTC with milliseconds", s)
	}
	sent, _ := time.Parse(time.RFC3339Nano, s)
	if sent.Before(sentAfter.Truncate(time.Millisecond)) || sent.After(time.Now()) {
		t.Errorf("time %s is not the send time (run began %s)", s, sentAfter.UTC().Format(timeLayout))
	}
}

func checkCleanSummary(t *testing.T, r driverResult, requests, events float64) {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d, stderr: %s", r.code, r.stderr)
	}
	for name, want := range map[string]float64{
		"requests": requests, "requests_sent": requests, "events_offered": events,
		"events_sent": events, "acked_events": events, "dropped": 0,
	} {
		if got := r.number(name); got != want {
			t.Errorf("summary %s = %v, want %v", name, got, want)
		}
	}
	if len(r.errorsByClass()) != 0 {
		t.Errorf("errors = %v, want none", r.summary["errors"])
	}
	if r.summary["first_send"] == nil || r.summary["last_ack"] == nil || r.summary["interrupted"] != false {
		t.Errorf("summary = %v", r.summary)
	}
}

func TestStructuredRequestsCarryPoolEventsWithFreshIDsAndTimes(t *testing.T) {
	server := newIngestServer(t, nil)
	began := time.Now()
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{"target": server.URL}))
	checkCleanSummary(t, res, 100, 100)

	requests, accepted := server.received()
	seen := map[string]bool{}
	for _, req := range requests {
		if req.path != "/api/v1/events" || req.header.Get("Content-Type") != structuredContentType {
			t.Fatalf("request to %s with Content-Type %q", req.path, req.header.Get("Content-Type"))
		}
		var ev map[string]interface{}
		if err := json.Unmarshal(req.body, &ev); err != nil {
			t.Fatalf("body is not JSON: %v: %s", err, req.body)
		}
		id := checkEvent(t, ev, began)
		tenant, _ := checkID(t, id)
		if got := req.header.Get("Authorization"); got != "Bearer "+testKeys[tenant] {
			t.Errorf("id %s names tenant %d but came with %q", id, tenant, got)
		}
		if seen[id] {
			t.Errorf("id %s sent twice", id)
		}
		seen[id] = true
	}
	sameIDs(t, res.ackedIDs(t), accepted)
	checkSeries(t, res)
}

func checkSeries(t *testing.T, res driverResult) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(res.dir, "series.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) < 1 {
		t.Fatal("the series file is empty")
	}
	var first map[string]interface{}
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("series line is not JSON: %v", err)
	}
	for _, field := range []string{"t", "offered_rate", "achieved_rate", "sent", "errors", "p50_ms", "p95_ms", "p99_ms", "in_flight", "queued", "dropped", "cpu_cores"} {
		if _, ok := first[field]; !ok {
			t.Errorf("series line lacks %q: %s", field, lines[0])
		}
	}
	// A 1 s profile ends just before 1 s: its one line may be the last, partial one.
	if rate, _ := first["offered_rate"].(float64); first["t"].(float64) > 1 || rate < 99 || rate > 102 {
		t.Errorf("first series line = %s, want t <= 1 and offered_rate about 100", lines[0])
	}
	var acked float64
	for _, line := range lines {
		var l map[string]float64
		json.Unmarshal([]byte(strings.Replace(line, `"errors":{}`, `"errors":0`, 1)), &l)
		acked += l["achieved_rate"] * l["window_s"]
	}
	if acked < res.number("acked_events")-0.5 || acked > res.number("acked_events")+0.5 {
		t.Errorf("the series acknowledges %v events, the summary %v", acked, res.number("acked_events"))
	}
}

func TestBinaryRequestsCarryAttributesAsHeaders(t *testing.T) {
	server := newIngestServer(t, nil)
	began := time.Now()
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{"target": server.URL, "mode": "binary"}))
	checkCleanSummary(t, res, 100, 100)

	requests, accepted := server.received()
	for _, req := range requests {
		id := req.header.Get("ce-id")
		_, line := checkID(t, id)
		var want map[string]interface{}
		json.Unmarshal([]byte(testPool[line]), &want)
		for _, attr := range []string{"specversion", "source", "type", "subject"} {
			if value, present := want[attr]; present && req.header.Get("ce-"+attr) != value {
				t.Errorf("%s: ce-%s = %q, want %q", id, attr, req.header.Get("ce-"+attr), value)
			} else if !present && len(req.header.Values("ce-"+attr)) > 0 {
				t.Errorf("%s: ce-%s sent for an event without %s", id, attr, attr)
			}
		}
		checkTime(t, req.header.Get("ce-time"), began)
		if got := req.header.Get("Content-Type"); got != "application/json" {
			t.Errorf("%s: Content-Type %q, want application/json", id, got)
		}
		var data interface{}
		if err := json.Unmarshal(req.body, &data); err != nil || !reflect.DeepEqual(data, want["data"]) {
			t.Errorf("%s: body %s, want the event's data %v", id, req.body, want["data"])
		}
	}
	sameIDs(t, res.ackedIDs(t), accepted)
}

func TestBatchRequestsCarryBatchSizeEvents(t *testing.T) {
	server := newIngestServer(t, nil)
	began := time.Now()
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{
		"target": server.URL, "mode": "batch", "batch_size": 10,
		"profile": []map[string]float64{{"seconds": 1, "rate_start": 1000, "rate_end": 1000}},
	}))
	checkCleanSummary(t, res, 100, 1000)

	requests, accepted := server.received()
	seen := map[string]bool{}
	for _, req := range requests {
		var events []map[string]interface{}
		if err := json.Unmarshal(req.body, &events); err != nil || len(events) != 10 {
			t.Fatalf("batch body is not an array of 10 events (%v): %s", err, req.body)
		}
		tenants := map[int]bool{}
		for _, ev := range events {
			id := checkEvent(t, ev, began)
			tenant, _ := checkID(t, id)
			tenants[tenant] = true
			if seen[id] {
				t.Errorf("id %s sent twice", id)
			}
			seen[id] = true
		}
		if len(tenants) != 1 {
			t.Errorf("one batch holds ids of tenants %v; a request has one key", tenants)
		}
	}
	if len(seen) != 1000 || len(accepted) != 1000 {
		t.Errorf("%d distinct ids sent, %d acknowledged, want 1000", len(seen), len(accepted))
	}
	sameIDs(t, res.ackedIDs(t), accepted)
}

func TestUnavailableAnswersAreCountedAndNotAcked(t *testing.T) {
	server := newIngestServer(t, func(n int) (int, time.Duration) {
		if n%3 == 0 {
			return 503, 0
		}
		if n%7 == 0 {
			return 429, 0
		}
		return 202, 0
	})
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{"target": server.URL}))
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	requests, accepted := server.received()
	errs := res.errorsByClass()
	if errs["503"] != 34 || errs["429"] != 10 || len(errs) != 2 {
		t.Errorf("errors = %v, want 503: 34 and 429: 10", errs)
	}
	if got := res.number("acked_events"); got != float64(len(accepted)) || got != 56 || len(requests) != 100 {
		t.Errorf("acked_events = %v, server acknowledged %d of %d", got, len(accepted), len(requests))
	}
	sameIDs(t, res.ackedIDs(t), accepted)
}

// Every request takes the server 300 ms, one connection, 100 requests/s: the requests
// queue up, and their latency from the intended time grows far beyond 300 ms. A driver
// that timed from the actual send (coordinated omission) would report 300 ms.
func TestLatencyCountsFromTheIntendedSendTime(t *testing.T) {
	server := newIngestServer(t, func(int) (int, time.Duration) { return 202, 300 * time.Millisecond })
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{
		"target": server.URL, "connections": 1, "timeout_seconds": 2,
	}))
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	t.Logf("p50 %v p99 %v max %v errors %v", res.number("p50_ms"), res.number("p99_ms"), res.number("max_ms"), res.summary["errors"])
	if p99 := res.number("p99_ms"); p99 < 1000 {
		t.Errorf("p99 = %v ms, want well beyond the server's 300 ms", p99)
	}
	if p50 := res.number("p50_ms"); p50 < 500 {
		t.Errorf("p50 = %v ms, want beyond 300 ms: most requests waited", p50)
	}
	errs := res.errorsByClass()
	if errs["timeout"] < 80 {
		t.Errorf("errors = %v, want most of the 100 requests timed out", errs)
	}
	if got := res.number("acked_events") + errs["timeout"]; got != 100 {
		t.Errorf("acked + timeouts = %v, want 100", got)
	}
	if dur := res.number("duration_seconds"); dur > 4 {
		t.Errorf("the run took %v s, want the profile plus at most the timeout", dur)
	}
	_, accepted := server.received()
	acked := res.ackedIDs(t)
	for _, id := range acked {
		found := false
		for _, a := range accepted {
			found = found || a == id
		}
		if !found {
			t.Errorf("id %s is in the acks file but the server did not answer 202", id)
		}
	}
}

func TestInterruptStopsTheScheduleAndReports(t *testing.T) {
	server := newIngestServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	res := runDriver(t, ctx, writePlan(t, map[string]interface{}{
		"target": server.URL, "profile": []map[string]float64{{"seconds": 60, "rate_start": 200, "rate_end": 200}},
	}))
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	if res.summary["interrupted"] != true {
		t.Errorf("interrupted = %v, want true", res.summary["interrupted"])
	}
	if dur := res.number("duration_seconds"); dur > 2 {
		t.Errorf("duration %v s after an interrupt at 0.5 s", dur)
	}
	if req := res.number("requests"); req < 50 || req > 200 {
		t.Errorf("requests = %v, want about 100 in 0.5 s", req)
	}
	_, accepted := server.received()
	sameIDs(t, res.ackedIDs(t), accepted)
}

func TestAnUnreachableTargetIsFatal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := "http://" + ln.Addr().String()
	ln.Close()
	res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{"target": target}))
	if res.code != 1 {
		t.Fatalf("exit %d, want 1", res.code)
	}
	if !strings.Contains(res.stderr, target) {
		t.Errorf("stderr %q does not name the target %s", res.stderr, target)
	}
}

func TestProgressLinesGoToStderr(t *testing.T) {
	server := newIngestServer(t, nil)
	for _, mode := range []string{"text", "json"} {
		res := runDriver(t, context.Background(), writePlan(t, map[string]interface{}{
			"target": server.URL, "progress": mode,
			"profile": []map[string]float64{{"seconds": 1.5, "rate_start": 100, "rate_end": 100}},
		}))
		first := strings.SplitN(res.stderr, "\n", 2)[0]
		switch mode {
		case "text":
			if !strings.Contains(first, "1s offered 100/s achieved") || !strings.Contains(first, "core") {
				t.Errorf("text progress line %q", first)
			}
		case "json":
			var line map[string]interface{}
			if err := json.Unmarshal([]byte(first), &line); err != nil || line["t"] != 1.0 {
				t.Errorf("json progress line %q (%v)", first, err)
			}
		}
	}
}

func TestBadPlansExitWithCode2NamingTheField(t *testing.T) {
	phase := func(seconds, a, b float64) []map[string]float64 {
		return []map[string]float64{{"seconds": seconds, "rate_start": a, "rate_end": b}}
	}
	cases := []struct {
		name   string
		fields map[string]interface{}
		want   string
	}{
		{"no target", map[string]interface{}{"target": nil}, `"target"`},
		{"https target", map[string]interface{}{"target": "https://10.77.0.11:8080"}, `"target"`},
		{"target without port", map[string]interface{}{"target": "http://10.77.0.11"}, `"target"`},
		{"target with path", map[string]interface{}{"target": "http://10.77.0.11:8080/api/v1/events"}, `"path"`},
		{"unknown mode", map[string]interface{}{"mode": "streaming"}, `"mode"`},
		{"batch size 0", map[string]interface{}{"mode": "batch", "batch_size": 0}, `"batch_size"`},
		{"zero rate", map[string]interface{}{"profile": phase(10, 0, 100)}, `"profile[0].rate_start"`},
		{"negative end rate", map[string]interface{}{"profile": phase(10, 100, -1)}, `"profile[0].rate_end"`},
		{"zero seconds", map[string]interface{}{"profile": phase(0, 100, 100)}, `"profile[0].seconds"`},
		{"empty profile", map[string]interface{}{"profile": []int{}}, `"profile"`},
		{"no connections", map[string]interface{}{"connections": 0}, `"connections"`},
		{"negative queue", map[string]interface{}{"queue": -1}, `"queue"`},
		{"zero timeout", map[string]interface{}{"timeout_seconds": 0}, `"timeout_seconds"`},
		{"run with dash", map[string]interface{}{"run": "a-b"}, `"run"`},
		{"no run", map[string]interface{}{"run": nil}, `"run"`},
		{"bad progress", map[string]interface{}{"progress": "loud"}, `"progress"`},
		{"unknown field", map[string]interface{}{"rate": 5}, `"rate"`},
		{"wrong type", map[string]interface{}{"connections": "many"}, `"connections"`},
		{"missing events file", map[string]interface{}{"events": "nowhere.jsonl"}, `"events"`},
		{"no events field", map[string]interface{}{"events": nil}, `"events"`},
		{"missing keys file", map[string]interface{}{"keys": "nowhere.txt"}, `"keys"`},
		{"empty keys", map[string]interface{}{"keys": "empty.txt"}, `"keys"`},
		{"events not JSON", map[string]interface{}{"events": "bad.jsonl"}, `"events"`},
		{"event without type", map[string]interface{}{"events": "notype.jsonl"}, `"type"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writePlan(t, tc.fields)
			dir := filepath.Dir(path)
			writeFile(t, filepath.Join(dir, "empty.txt"), "\n# no keys here\n")
			writeFile(t, filepath.Join(dir, "bad.jsonl"), "{\"specversion\":\"1.0\",\n")
			writeFile(t, filepath.Join(dir, "notype.jsonl"), `{"specversion":"1.0","id":"x","source":"/s"}`+"\n")
			res := runDriver(t, context.Background(), path)
			if res.code != 2 {
				t.Fatalf("exit %d, want 2; stderr: %s", res.code, res.stderr)
			}
			if !strings.Contains(res.stderr, tc.want) {
				t.Errorf("stderr %q does not name %s", res.stderr, tc.want)
			}
			if res.summary != nil {
				t.Errorf("a bad plan printed a summary: %v", res.summary)
			}
		})
	}
}

func TestPlanDefaults(t *testing.T) {
	p, err := loadPlan(writePlan(t, map[string]interface{}{
		"target": "http://10.77.0.11:8080/", "mode": "batch",
		"connections": nil, "progress": nil, "acks": nil, "series": nil,
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := plan{
		Target: "http://10.77.0.11:8080/", HostPort: "10.77.0.11:8080", Path: "/api/v1/events",
		Mode: "batch", BatchSize: 100, Connections: 64, Queue: 100000, Timeout: 10 * time.Second,
		Run: "t1", Progress: "text",
	}
	got := *p
	got.Profile, got.Events, got.Keys = nil, "", ""
	if !reflect.DeepEqual(got, want) {
		t.Errorf("plan = %+v\nwant %+v", got, want)
	}
	if !filepath.IsAbs(p.Events) || filepath.Base(p.Events) != "pool.jsonl" {
		t.Errorf("events = %q, want resolved against the plan's directory", p.Events)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"--plan"}, {"--plan", "a.json", "extra"}, {"--nope"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("run(%q) = %d, want 2", args, code)
		}
	}
}

func ExampleformatErrors() {
	fmt.Println(formatErrors(map[string]int64{"503": 3, "timeout": 1}))
	// Output: {503: 3, timeout: 1}
}
