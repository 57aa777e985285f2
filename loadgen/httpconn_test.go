package main

import (
	"bufio"
	"bytes"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// rawServer accepts connections on loopback and lets answer write whatever bytes it
// likes for each request; answer returns false to close the connection. It counts the
// connections it accepted.
func rawServer(t *testing.T, answer func(conn net.Conn, n int) bool) (addr string, accepted *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int64{}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer conn.Close()
				r := bufio.NewReader(conn)
				for n := 0; ; n++ {
					if !readRequest(r) || !answer(conn, n) {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), accepted
}

// readRequest reads one request head and its Content-Length body.
func readRequest(r *bufio.Reader) bool {
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return false
		}
		if line == "\r\n" {
			break
		}
		if name, value, ok := cutHeader(line); ok && name == "content-length" {
			length, _ = strconv.Atoi(value)
		}
	}
	_, err := r.Discard(length)
	return err == nil
}

func cutHeader(line string) (name, value string, ok bool) {
	colon := bytes.IndexByte([]byte(line), ':')
	if colon < 0 {
		return "", "", false
	}
	return string(bytes.ToLower([]byte(line[:colon]))), string(bytes.TrimSpace([]byte(line[colon+1:]))), true
}

var testRequest = []byte("POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")

func roundTrips(t *testing.T, c *httpConn, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		status, err := c.roundTrip(testRequest, time.Now().Add(2*time.Second))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if status != 202 {
			t.Fatalf("request %d: status %d, want 202", i, status)
		}
	}
}

func TestChunkedResponsesKeepTheConnection(t *testing.T) {
	addr, accepted := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" +
			"a;ext=1\r\n{\"status\":\r\n" + "14\r\n\"accepted\",\"ids\":[]}\r\n" + "0\r\nX-Trailer: yes\r\n\r\n"))
		return true
	})
	c := newHTTPConn(addr)
	defer c.close()
	roundTrips(t, c, 3)
	if got := accepted.Load(); got != 1 {
		t.Errorf("%d connections for 3 keep-alive requests, want 1", got)
	}
}

func TestConnectionCloseMakesTheNextRequestReconnect(t *testing.T) {
	addr, accepted := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.1 202 Accepted\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"))
		return false
	})
	c := newHTTPConn(addr)
	defer c.close()
	roundTrips(t, c, 3)
	if got := accepted.Load(); got != 3 {
		t.Errorf("%d connections, want 3 (one per Connection: close)", got)
	}
}

func TestHTTP10BodyRunsToTheEndOfTheConnection(t *testing.T) {
	addr, accepted := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.0 202 Accepted\r\n\r\n{\"status\":\"accepted\"}"))
		return false
	})
	c := newHTTPConn(addr)
	defer c.close()
	roundTrips(t, c, 2)
	if got := accepted.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

func TestInterimResponsesAreSkipped(t *testing.T) {
	addr, _ := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
		return true
	})
	c := newHTTPConn(addr)
	defer c.close()
	roundTrips(t, c, 2)
}

// A server that closes an idle keep-alive connection (HAProxy after its keep-alive
// timeout) must not turn the next request into an error.
func TestIdleConnectionClosedByTheServerIsRetriedOnce(t *testing.T) {
	addr, accepted := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
		return false // closes without saying so
	})
	c := newHTTPConn(addr)
	defer c.close()
	roundTrips(t, c, 1)
	time.Sleep(50 * time.Millisecond) // let the FIN arrive
	roundTrips(t, c, 1)
	if got := accepted.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
}

func TestStatusCodesOtherThan202AreReturned(t *testing.T) {
	addr, _ := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 21\r\n\r\n{\"error\":\"no_kafka\"}\n"))
		return true
	})
	c := newHTTPConn(addr)
	defer c.close()
	for i := 0; i < 2; i++ {
		status, err := c.roundTrip(testRequest, time.Now().Add(time.Second))
		if err != nil || status != 503 {
			t.Fatalf("got %d, %v; want 503", status, err)
		}
	}
}

func TestASilentServerTimesOut(t *testing.T) {
	addr, _ := rawServer(t, func(conn net.Conn, n int) bool {
		time.Sleep(2 * time.Second)
		return false
	})
	c := newHTTPConn(addr)
	defer c.close()
	began := time.Now()
	_, err := c.roundTrip(testRequest, began.Add(200*time.Millisecond))
	if err == nil || !isTimeout(err) {
		t.Fatalf("err = %v, want a timeout", err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("the timeout took %v, want about 200ms", took)
	}
}

func TestMalformedResponsesAreErrors(t *testing.T) {
	addr, _ := rawServer(t, func(conn net.Conn, n int) bool {
		conn.Write([]byte("SMTP ready\r\n\r\n"))
		return true
	})
	c := newHTTPConn(addr)
	defer c.close()
	if _, err := c.roundTrip(testRequest, time.Now().Add(time.Second)); err == nil {
		t.Fatal("a non-HTTP answer gave no error")
	}
}

func TestParseStatusLine(t *testing.T) {
	cases := []struct {
		line   string
		status int
		http10 bool
		ok     bool
	}{
		{"HTTP/1.1 202 Accepted\r\n", 202, false, true},
		{"HTTP/1.0 503 Service Unavailable\r\n", 503, true, true},
		{"HTTP/1.1 204\r\n", 204, false, true},
		{"HTTP/1.1 20x Nope\r\n", 0, false, false},
		{"HTTP/2 200 OK\r\n", 0, false, false},
		{"HTTP/1.1 2021 Odd\r\n", 0, false, false},
	}
	for _, tc := range cases {
		status, http10, ok := parseStatusLine([]byte(tc.line))
		if status != tc.status || http10 != tc.http10 || ok != tc.ok {
			t.Errorf("parseStatusLine(%q) = %d, %v, %v; want %d, %v, %v", tc.line, status, http10, ok, tc.status, tc.http10, tc.ok)
		}
	}
}
