package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

// httpConn is a minimal HTTP/1.1 keep-alive client for one connection and one request
// at a time. net/http's client costs several times more CPU per request; this one
// writes pre-built bytes and parses only the status line and the headers that frame
// the body.
type httpConn struct {
	addr   string
	conn   net.Conn
	reader *bufio.Reader
	served int // responses read on the current connection
}

var errMalformed = errors.New("malformed HTTP response")

func newHTTPConn(addr string) *httpConn {
	return &httpConn{addr: addr}
}

func (c *httpConn) dial(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return err
	}
	c.conn = conn
	if c.reader == nil {
		c.reader = bufio.NewReaderSize(conn, 4096)
	} else {
		c.reader.Reset(conn)
	}
	c.served = 0
	return nil
}

func (c *httpConn) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// roundTrip writes the request and reads the whole response, returning its status
// code. The deadline bounds dialing, writing and reading. A request that fails on a
// reused connection before any byte of a response arrived is sent once more on a new
// connection: the server most likely closed the idle connection (HAProxy does after its
// keep-alive timeout), which says nothing about the target.
func (c *httpConn) roundTrip(request []byte, deadline time.Time) (int, error) {
	for attempt := 0; ; attempt++ {
		if c.conn == nil {
			if err := c.dial(deadline); err != nil {
				return 0, err
			}
		}
		reused := c.served > 0
		status, gotResponse, err := c.exchange(request, deadline)
		if err == nil {
			return status, nil
		}
		c.close()
		if attempt == 0 && reused && !gotResponse && !isTimeout(err) {
			continue
		}
		return 0, err
	}
}

func (c *httpConn) exchange(request []byte, deadline time.Time) (status int, gotResponse bool, err error) {
	if err := c.conn.SetDeadline(deadline); err != nil {
		return 0, false, err
	}
	if _, err := c.conn.Write(request); err != nil {
		return 0, false, err
	}
	status, mustClose, gotResponse, err := readResponse(c.reader)
	if err != nil {
		return 0, gotResponse, err
	}
	c.served++
	if mustClose {
		c.close()
	}
	return status, true, nil
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr) && netErr.Timeout()
}

// readResponse reads one response, skipping 1xx interim responses, and discards its
// body. mustClose tells that the connection cannot carry another request.
func readResponse(r *bufio.Reader) (status int, mustClose, gotResponse bool, err error) {
	for {
		line, err := readLine(r)
		if err != nil {
			return 0, true, len(line) > 0, err
		}
		gotResponse = true
		status, http10, ok := parseStatusLine(line)
		if !ok {
			return 0, true, true, errMalformed
		}
		framing, err := readHeaders(r)
		if err != nil {
			return 0, true, true, err
		}
		if status >= 100 && status < 200 {
			continue
		}
		mustClose = framing.close || (http10 && !framing.keepAlive)
		switch {
		case status == 204 || status == 304:
		case framing.chunked:
			err = discardChunked(r)
		case framing.contentLength >= 0:
			_, err = r.Discard(int(framing.contentLength))
		default:
			// No length: the body runs to the end of the connection.
			_, err = io.Copy(io.Discard, r)
			mustClose = true
		}
		if err != nil {
			return 0, true, true, err
		}
		return status, mustClose, true, nil
	}
}

// parseStatusLine reads "HTTP/1.x SSS reason".
func parseStatusLine(line []byte) (status int, http10, ok bool) {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, false
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return 0, false, false
		}
		status = status*10 + int(c-'0')
	}
	if len(line) > 12 && line[12] != ' ' && line[12] != '\r' && line[12] != '\n' {
		return 0, false, false
	}
	return status, line[7] == '0', true
}

type bodyFraming struct {
	contentLength int64 // -1 when absent
	chunked       bool
	close         bool // Connection: close
	keepAlive     bool // Connection: keep-alive (matters for HTTP/1.0)
}

func readHeaders(r *bufio.Reader) (bodyFraming, error) {
	f := bodyFraming{contentLength: -1}
	for {
		line, err := readLine(r)
		if err != nil {
			return f, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return f, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return f, errMalformed
		}
		name := line[:colon]
		value := bytes.TrimSpace(line[colon+1:])
		switch {
		case equalFoldASCII(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 {
				return f, errMalformed
			}
			f.contentLength = n
		case equalFoldASCII(name, "transfer-encoding"):
			f.chunked = hasToken(value, "chunked")
		case equalFoldASCII(name, "connection"):
			f.close = f.close || hasToken(value, "close")
			f.keepAlive = f.keepAlive || hasToken(value, "keep-alive")
		}
	}
}

// discardChunked reads a chunked body and its trailers.
func discardChunked(r *bufio.Reader) error {
	for {
		line, err := readLine(r)
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if semi := bytes.IndexByte(line, ';'); semi >= 0 {
			line = line[:semi]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return errMalformed
		}
		if size == 0 {
			_, err := readHeaders(r) // trailers, up to the empty line
			return err
		}
		if _, err := r.Discard(int(size)); err != nil {
			return err
		}
		if crlf, err := readLine(r); err != nil {
			return err
		} else if len(bytes.TrimRight(crlf, "\r\n")) != 0 {
			return errMalformed
		}
	}
}

// readLine returns the next line including its \n. A line longer than the buffer is
// consumed whole but only its first buffer-full is returned: the driver reads nothing
// that long (a long Set-Cookie, say, is skipped).
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return line, err
	}
	head := append([]byte(nil), line...)
	for err == bufio.ErrBufferFull {
		_, err = r.ReadSlice('\n')
	}
	return head, err
}

func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasToken tells whether a comma-separated header value holds token (any case).
func hasToken(value []byte, token string) bool {
	for len(value) > 0 {
		var part []byte
		if comma := bytes.IndexByte(value, ','); comma >= 0 {
			part, value = value[:comma], value[comma+1:]
		} else {
			part, value = value, nil
		}
		if equalFoldASCII(bytes.TrimSpace(part), token) {
			return true
		}
	}
	return false
}
