package main

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testRequestSet(t testing.TB, mode string, batchSize int) *requestSet {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pool.jsonl"), strings.Join(testPool, "\n")+"\n")
	pool, err := loadEvents(filepath.Join(dir, "pool.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	p := &plan{Path: "/api/v1/events", HostPort: "10.77.0.11:8080", Mode: mode, BatchSize: batchSize, Run: "t1"}
	return newRequestSet(p, pool, testKeys)
}

// Ids are unique over a run and say which tenant and pool line they came from; every
// tenant walks the whole pool.
func TestIDsAreUniqueAndNameTenantAndPoolLine(t *testing.T) {
	for _, batch := range []int{1, 7} {
		set := testRequestSet(t, modeBatch, batch)
		b := requestBuilder{set: set}
		seen := map[string]bool{}
		linesByTenant := map[int]map[int]bool{}
		for r := int64(0); r < 10000/int64(batch); r++ {
			b.build(r, time.Now())
			ids := strings.Fields(string(b.ids))
			if len(ids) != batch {
				t.Fatalf("request %d has %d ids, want %d", r, len(ids), batch)
			}
			for i, id := range ids {
				tenant, line := checkID(t, id)
				seq, _ := strconv.ParseInt(idPattern.FindStringSubmatch(id)[4], 10, 64)
				if seq != r*int64(batch)+int64(i) {
					t.Fatalf("id %s of request %d has sequence %d, want %d", id, r, seq, r*int64(batch)+int64(i))
				}
				if int64(tenant) != r%int64(len(testKeys)) {
					t.Fatalf("request %d went to tenant %d, want round-robin %d", r, tenant, r%int64(len(testKeys)))
				}
				if seen[id] {
					t.Fatalf("id %s built twice", id)
				}
				seen[id] = true
				if linesByTenant[tenant] == nil {
					linesByTenant[tenant] = map[int]bool{}
				}
				linesByTenant[tenant][line] = true
			}
		}
		for tenant := range testKeys {
			if n := len(linesByTenant[tenant]); n != len(poolLines) {
				t.Errorf("batch %d: tenant %d saw %d pool lines, want all %d", batch, tenant, n, len(poolLines))
			}
		}
	}
}

func TestStructuredRequestBytes(t *testing.T) {
	b := requestBuilder{set: testRequestSet(t, modeStructured, 1)}
	sent := time.Date(2026, 12, 3, 18, 0, 0, 123456789, time.UTC)
	wire := string(b.build(4, sent)) // request 4: tenant 1, its request 1: pool event 1 (line 1)
	head, body, found := strings.Cut(wire, "\r\n\r\n")
	if !found {
		t.Fatalf("no end of head in %q", wire)
	}
	wantHead := "POST /api/v1/events HTTP/1.1\r\nHost: 10.77.0.11:8080\r\nUser-Agent: sluice-loadgen\r\n" +
		"Authorization: Bearer sk_tenant_one\r\nContent-Type: application/cloudevents+json\r\nContent-Length: " + strconv.Itoa(len(body))
	if head != wantHead {
		t.Errorf("head =\n%s\nwant\n%s", head, wantHead)
	}
	wantBody := `{"specversion":"1.0","type":"page.viewed","source":"/shop/web","id":"t1-1-1-4",` +
		`"time":"2026-12-03T18:00:00.123Z","data":{"page":"/home"},"shopext":"x y"}`
	if body != wantBody {
		t.Errorf("body =\n%s\nwant\n%s", body, wantBody)
	}
}

func TestEventsWithoutIDOrTimeGetThem(t *testing.T) {
	ev, err := parsePoolEvent([]byte(`{"specversion":"1.0","source":"/s","type":"x.y","data":null}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	b := requestBuilder{set: &requestSet{mode: modeStructured, run: "r", batchSize: 1, pool: []poolEvent{ev}, heads: [][]byte{nil}}}
	b.build(0, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	_, body, _ := strings.Cut(string(b.wire), "\r\n\r\n")
	var got map[string]interface{}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if got["id"] != "r-0-0-0" || got["time"] != "2026-01-02T03:04:05.000Z" || got["data"] != nil {
		t.Errorf("event = %s", body)
	}
}

func TestBinaryRequestBytes(t *testing.T) {
	b := requestBuilder{set: testRequestSet(t, modeBinary, 1)}
	sent := time.Date(2026, 12, 3, 18, 0, 0, 5e6, time.UTC)
	wire := string(b.build(0, sent))
	want := "POST /api/v1/events HTTP/1.1\r\nHost: 10.77.0.11:8080\r\nUser-Agent: sluice-loadgen\r\n" +
		"Authorization: Bearer sk_tenant_zero\r\nce-id: t1-0-0-0\r\nce-time: 2026-12-03T18:00:00.005Z\r\n" +
		"ce-specversion: 1.0\r\nce-source: /shop/web\r\nce-type: order.created\r\nce-subject: order/1\r\n" +
		"Content-Type: application/json\r\nContent-Length: 33\r\n\r\n" + `{"amount":12.5,"items":["a","b"]}`
	if wire != want {
		t.Errorf("request =\n%q\nwant\n%q", wire, want)
	}
}

func TestHeaderValuesArePercentEncoded(t *testing.T) {
	got := string(appendHeaderValue(nil, "a b\"%\r\né"))
	if want := "a%20b%22%25%0D%0A%C3%A9"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTimeFormatterMatchesTheLayout(t *testing.T) {
	var f timeFormatter
	base := time.Date(2026, 12, 31, 23, 59, 59, 0, time.FixedZone("X", 3600))
	for _, offset := range []time.Duration{0, time.Millisecond, 999 * time.Millisecond, 1001 * time.Millisecond, 25 * time.Hour} {
		at := base.Add(offset)
		if got, want := string(f.append(nil, at)), at.UTC().Format(timeLayout); got != want {
			t.Errorf("formatted %v as %s, want %s", at, got, want)
		}
	}
}

// The per-request work of building: concatenation only, no allocation.
func BenchmarkBuildStructured(b *testing.B) {
	set := testRequestSet(b, modeStructured, 1)
	builder := requestBuilder{set: set}
	now := time.Now()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		builder.build(int64(i), now)
	}
}
