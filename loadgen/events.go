package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

// poolEvent is one line of the events file, pre-split so that building a request is
// only concatenation: the structured JSON is literal segments with holes for id and
// time, and the binary form is a pre-built header block and a fixed body.
type poolEvent struct {
	line int // 0-based line number in the events file: the id's pool index

	// Structured: literals[0] hole[0] literals[1] hole[1] literals[2].
	literals [3][]byte
	holes    [2]hole

	// Binary: header lines other than ce-id and ce-time, ending with Content-Length.
	binaryHeaders []byte
	binaryBody    []byte
}

type hole uint8

const (
	holeID hole = iota
	holeTime
)

// Attributes sent as ce-* headers in binary mode (besides id and time, set per request).
var binaryAttributes = []string{"specversion", "source", "type", "subject"}

// loadEvents parses the JSON Lines pool. Blank lines are skipped but still counted, so
// that an event's pool index is its line number in the file.
func loadEvents(path string) ([]poolEvent, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, badPlan("plan: \"events\": cannot open %s: %v", path, bareError(err))
	}
	defer f.Close()
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 64*1024), 4*1024*1024)
	var pool []poolEvent
	for line := 0; scanner.Scan(); line++ {
		text := bytes.TrimSpace(scanner.Bytes())
		if len(text) == 0 {
			continue
		}
		ev, err := parsePoolEvent(text, line)
		if err != nil {
			return nil, badPlan("plan: \"events\": %s line %d: %v", path, line+1, err)
		}
		pool = append(pool, ev)
	}
	if err := scanner.Err(); err != nil {
		return nil, badPlan("plan: \"events\": cannot read %s: %v", path, err)
	}
	if len(pool) == 0 {
		return nil, badPlan("plan: \"events\": %s holds no events; give one CloudEvent JSON object per line", path)
	}
	return pool, nil
}

type attribute struct {
	name  string
	value json.RawMessage // compact JSON
}

func parsePoolEvent(text []byte, line int) (poolEvent, error) {
	attrs, err := parseObject(text)
	if err != nil {
		return poolEvent{}, err
	}
	for _, required := range []string{"specversion", "source", "type"} {
		if _, err := stringAttribute(attrs, required); err != nil {
			return poolEvent{}, err
		}
	}
	ev := poolEvent{line: line}
	ev.literals, ev.holes = structuredTemplate(attrs)
	if ev.binaryHeaders, ev.binaryBody, err = binaryParts(attrs); err != nil {
		return poolEvent{}, err
	}
	return ev, nil
}

// parseObject reads one JSON object, keeping its members in order.
func parseObject(text []byte) ([]attribute, error) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object; each line must be one CloudEvent object")
	}
	var attrs []attribute
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %v", err)
		}
		name := tok.(string)
		if seen[name] {
			return nil, fmt.Errorf("attribute %q appears twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON in %q: %v", name, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return nil, fmt.Errorf("invalid JSON in %q: %v", name, err)
		}
		attrs = append(attrs, attribute{name: name, value: compact.Bytes()})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("text after the JSON object; one event per line")
	}
	return attrs, nil
}

func findAttribute(attrs []attribute, name string) (json.RawMessage, bool) {
	for _, a := range attrs {
		if a.name == name {
			return a.value, true
		}
	}
	return nil, false
}

func stringAttribute(attrs []attribute, name string) (string, error) {
	raw, ok := findAttribute(attrs, name)
	if !ok {
		return "", fmt.Errorf("the required attribute %q is missing", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("attribute %q must be a JSON string", name)
	}
	return s, nil
}

// structuredTemplate lays the event out as JSON with holes where the id's and time's
// string contents go; attributes missing from the line are added at the end.
func structuredTemplate(attrs []attribute) ([3][]byte, [2]hole) {
	var lits [3][]byte
	var holes [2]hole
	var cur []byte
	n := 0
	addHole := func(name string, h hole) {
		cur = append(cur, '"')
		cur = append(cur, name...)
		cur = append(cur, `":"`...)
		lits[n], holes[n] = cur, h
		n++
		cur = []byte{'"'}
	}
	cur = append(cur, '{')
	hasID, hasTime := false, false
	for i, a := range attrs {
		if i > 0 {
			cur = append(cur, ',')
		}
		switch a.name {
		case "id":
			addHole("id", holeID)
			hasID = true
		case "time":
			addHole("time", holeTime)
			hasTime = true
		default:
			key, _ := json.Marshal(a.name)
			cur = append(cur, key...)
			cur = append(cur, ':')
			cur = append(cur, a.value...)
		}
	}
	if !hasID {
		cur = append(cur, ',')
		addHole("id", holeID)
	}
	if !hasTime {
		cur = append(cur, ',')
		addHole("time", holeTime)
	}
	lits[2] = append(cur, '}')
	return lits, holes
}

// binaryParts pre-builds the binary-mode header lines and body: the data as JSON (or
// data_base64 decoded), with the event's datacontenttype as Content-Type.
func binaryParts(attrs []attribute) (headers, body []byte, err error) {
	for _, name := range binaryAttributes {
		if _, present := findAttribute(attrs, name); !present {
			continue
		}
		value, err := stringAttribute(attrs, name)
		if err != nil {
			return nil, nil, err
		}
		headers = append(headers, "ce-"+name+": "...)
		headers = appendHeaderValue(headers, value)
		headers = append(headers, "\r\n"...)
	}
	contentType := "application/json"
	if _, present := findAttribute(attrs, "datacontenttype"); present {
		if contentType, err = stringAttribute(attrs, "datacontenttype"); err != nil {
			return nil, nil, err
		}
	}
	if data, ok := findAttribute(attrs, "data"); ok {
		body = data
	} else if _, ok := findAttribute(attrs, "data_base64"); ok {
		encoded, err := stringAttribute(attrs, "data_base64")
		if err != nil {
			return nil, nil, err
		}
		if body, err = base64.StdEncoding.DecodeString(encoded); err != nil {
			return nil, nil, fmt.Errorf("attribute \"data_base64\" is not valid base64: %v", err)
		}
	}
	headers = append(headers, "Content-Type: "...)
	headers = appendHeaderValue(headers, contentType)
	headers = append(headers, "\r\nContent-Length: "...)
	headers = strconv.AppendInt(headers, int64(len(body)), 10)
	headers = append(headers, "\r\n"...)
	return headers, body, nil
}

// appendHeaderValue percent-encodes what the CloudEvents HTTP binding says must be:
// anything outside printable ASCII, space, double quote and percent. It also keeps
// CR and LF out of the request head.
func appendHeaderValue(dst []byte, value string) []byte {
	const hexDigits = "0123456789ABCDEF"
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c <= ' ' || c > '~' || c == '"' || c == '%' {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// loadKeys reads one API key per line; blank lines and lines starting with # are skipped.
func loadKeys(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, badPlan("plan: \"keys\": cannot read %s: %v", path, bareError(err))
	}
	var keys []string
	for i, line := range bytes.Split(raw, []byte{'\n'}) {
		key := string(bytes.TrimSpace(line))
		if key == "" || key[0] == '#' {
			continue
		}
		for j := 0; j < len(key); j++ {
			if key[j] <= ' ' || key[j] > '~' {
				return nil, badPlan("plan: \"keys\": %s line %d: an API key must be printable ASCII without spaces", path, i+1)
			}
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, badPlan("plan: \"keys\": %s holds no API keys; give one key (sk_...) per line", path)
	}
	return keys, nil
}

// bareError drops the operation and path that an *os.PathError repeats.
func bareError(err error) error {
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		return pathErr.Err
	}
	return err
}
