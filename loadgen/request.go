package main

import (
	"strconv"
	"time"
)

const (
	structuredContentType = "application/cloudevents+json"
	batchContentType      = "application/cloudevents-batch+json"
	timeLayout            = "2006-01-02T15:04:05.000Z" // RFC 3339, UTC, milliseconds
)

// requestSet holds what all requests of a run share: the pool, the per-tenant request
// heads and the id prefix. It is read-only once built, so workers share it.
type requestSet struct {
	mode      string
	batchSize int
	run       string
	pool      []poolEvent
	heads     [][]byte // per key: request line, Host, Authorization (+ Content-Type)
}

func newRequestSet(p *plan, pool []poolEvent, keys []string) *requestSet {
	rs := &requestSet{mode: p.Mode, batchSize: p.BatchSize, run: p.Run, pool: pool}
	for _, key := range keys {
		head := []byte("POST " + p.Path + " HTTP/1.1\r\nHost: " + p.HostPort +
			"\r\nUser-Agent: sluice-loadgen\r\nAuthorization: Bearer " + key + "\r\n")
		switch p.Mode {
		case modeStructured:
			head = append(head, "Content-Type: "+structuredContentType+"\r\n"...)
		case modeBatch:
			head = append(head, "Content-Type: "+batchContentType+"\r\n"...)
		}
		rs.heads = append(rs.heads, head)
	}
	return rs
}

// requestBuilder builds one worker's requests into buffers it reuses.
type requestBuilder struct {
	set   *requestSet
	wire  []byte // the whole request as written to the connection
	body  []byte // scratch for structured and batch bodies
	ids   []byte // the request's ids, one per line, for the acks file
	id    []byte // scratch for one id
	now   []byte // the send time, formatted
	clock timeFormatter
}

// Request r goes to tenant r mod K, and each tenant walks the pool on its own: its
// j-th request (j = r div K) uses pool events j*B .. j*B+B-1 (mod pool size). So every
// tenant sees every pool event, however the key and pool counts relate. Event e of the
// run (e = r*B + i) gets sequence number e, which makes ids unique.
func (b *requestBuilder) build(r int64, sendTime time.Time) []byte {
	set := b.set
	keys := int64(len(set.heads))
	tenant := r % keys
	batch := int64(set.batchSize)
	firstPool := (r / keys) * batch
	b.now = b.clock.append(b.now[:0], sendTime)
	b.ids = b.ids[:0]

	if set.mode == modeBinary {
		ev := &set.pool[firstPool%int64(len(set.pool))]
		b.setID(tenant, ev.line, r)
		b.wire = append(b.wire[:0], set.heads[tenant]...)
		b.wire = appendHeader(b.wire, "ce-id: ", b.id)
		b.wire = appendHeader(b.wire, "ce-time: ", b.now)
		b.wire = append(b.wire, ev.binaryHeaders...)
		b.wire = append(b.wire, "\r\n"...)
		b.wire = append(b.wire, ev.binaryBody...)
		return b.wire
	}

	b.body = b.body[:0]
	if set.mode == modeBatch {
		b.body = append(b.body, '[')
	}
	for i := int64(0); i < batch; i++ {
		if i > 0 {
			b.body = append(b.body, ',')
		}
		ev := &set.pool[(firstPool+i)%int64(len(set.pool))]
		b.setID(tenant, ev.line, r*batch+i)
		b.body = b.appendStructured(b.body, ev)
	}
	if set.mode == modeBatch {
		b.body = append(b.body, ']')
	}
	b.wire = append(b.wire[:0], set.heads[tenant]...)
	b.wire = append(b.wire, "Content-Length: "...)
	b.wire = strconv.AppendInt(b.wire, int64(len(b.body)), 10)
	b.wire = append(b.wire, "\r\n\r\n"...)
	b.wire = append(b.wire, b.body...)
	return b.wire
}

// setID formats <run>-<tenant>-<pool line>-<sequence> into b.id and records it in b.ids.
func (b *requestBuilder) setID(tenant int64, line int, seq int64) {
	b.id = append(b.id[:0], b.set.run...)
	b.id = append(b.id, '-')
	b.id = strconv.AppendInt(b.id, tenant, 10)
	b.id = append(b.id, '-')
	b.id = strconv.AppendInt(b.id, int64(line), 10)
	b.id = append(b.id, '-')
	b.id = strconv.AppendInt(b.id, seq, 10)
	b.ids = append(b.ids, b.id...)
	b.ids = append(b.ids, '\n')
}

func (b *requestBuilder) appendStructured(dst []byte, ev *poolEvent) []byte {
	for i, h := range ev.holes {
		dst = append(dst, ev.literals[i]...)
		if h == holeID {
			dst = append(dst, b.id...)
		} else {
			dst = append(dst, b.now...)
		}
	}
	return append(dst, ev.literals[2]...)
}

func appendHeader(dst []byte, name string, value []byte) []byte {
	dst = append(dst, name...)
	dst = append(dst, value...)
	return append(dst, "\r\n"...)
}

// timeFormatter formats times as timeLayout, formatting the date and seconds only
// when the second changes: at thousands of requests a second, that is most of the cost.
type timeFormatter struct {
	second int64
	prefix []byte // "2006-01-02T15:04:05." of second
}

func (f *timeFormatter) append(dst []byte, t time.Time) []byte {
	t = t.UTC()
	if s := t.Unix(); s != f.second || f.prefix == nil {
		f.second = s
		f.prefix = t.AppendFormat(f.prefix[:0], "2006-01-02T15:04:05.")
	}
	ms := t.Nanosecond() / int(time.Millisecond)
	dst = append(dst, f.prefix...)
	return append(dst, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}
