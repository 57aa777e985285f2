package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Modes of the CloudEvents HTTP binding the driver can send.
const (
	modeStructured = "structured"
	modeBinary     = "binary"
	modeBatch      = "batch"
)

// Progress output formats on stderr.
const (
	progressText = "text"
	progressJSON = "json"
	progressNone = "none"
)

const (
	defaultPath        = "/api/v1/events"
	defaultBatchSize   = 100
	defaultConnections = 64
	defaultQueue       = 100000
	defaultTimeout     = 10.0
	maxConnections     = 10000
	maxQueue           = 10000000
	maxTimeoutSeconds  = 3600
)

// planFile is the JSON plan as written by the caller. Optional numbers are pointers so
// that an absent field (take the default) differs from an explicit zero (an error).
type planFile struct {
	Target         string        `json:"target"`
	Path           string        `json:"path"`
	Mode           string        `json:"mode"`
	BatchSize      *int          `json:"batch_size"`
	Connections    *int          `json:"connections"`
	Queue          *int          `json:"queue"`
	TimeoutSeconds *float64      `json:"timeout_seconds"`
	Profile        []profilePart `json:"profile"`
	Run            string        `json:"run"`
	Events         string        `json:"events"`
	Keys           string        `json:"keys"`
	Acks           string        `json:"acks"`
	Series         string        `json:"series"`
	Progress       string        `json:"progress"`
}

// profilePart is one phase of the rate profile: events/s going linearly from RateStart
// to RateEnd over Seconds.
type profilePart struct {
	Seconds   float64 `json:"seconds"`
	RateStart float64 `json:"rate_start"`
	RateEnd   float64 `json:"rate_end"`
}

// plan is a validated plan with defaults applied and file paths resolved.
type plan struct {
	Target      string // as given, for messages
	HostPort    string // what to dial and send as Host
	Path        string
	Mode        string
	BatchSize   int // 1 outside batch mode
	Connections int
	Queue       int
	Timeout     time.Duration
	Profile     []profilePart
	Run         string
	Events      string
	Keys        string
	Acks        string // "" = do not write
	Series      string // "" = do not write
	Progress    string
}

// planError is a plan the driver refuses to run (exit code 2).
type planError struct{ msg string }

func (e *planError) Error() string { return e.msg }

func badPlan(format string, args ...interface{}) error {
	return &planError{msg: fmt.Sprintf(format, args...)}
}

var runPattern = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

// loadPlan reads and validates the plan at path. Relative file names in the plan are
// resolved against the plan file's directory.
func loadPlan(path string) (*plan, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, badPlan("plan: cannot read %s: %v", path, bareError(err))
	}
	var pf planFile
	if err := decodePlan(raw, &pf); err != nil {
		return nil, err
	}
	return validatePlan(&pf, filepath.Dir(path))
}

func decodePlan(raw []byte, pf *planFile) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(pf); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return badPlan("plan: field %q must be a JSON %s, got %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()), typeErr.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.TrimPrefix(err.Error(), "json: unknown field ")
			return badPlan("plan: unknown field %s; known fields: target, path, mode, batch_size, connections, queue, timeout_seconds, profile (seconds, rate_start, rate_end), run, events, keys, acks, series, progress", field)
		case errors.Is(err, io.EOF):
			return badPlan("plan: the file is empty; it must hold one JSON object")
		default:
			return badPlan("plan: not a valid JSON object: %v", err)
		}
	}
	if dec.More() {
		return badPlan("plan: text after the JSON object; the file must hold exactly one object")
	}
	return nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int", "float64":
		return "number"
	case "slice":
		return "array"
	case "struct":
		return "object"
	}
	return goKind
}

func validatePlan(pf *planFile, baseDir string) (*plan, error) {
	p := &plan{
		Path:        pf.Path,
		Mode:        pf.Mode,
		BatchSize:   1,
		Connections: defaultConnections,
		Queue:       defaultQueue,
		Timeout:     time.Duration(defaultTimeout * float64(time.Second)),
		Profile:     pf.Profile,
		Run:         pf.Run,
		Progress:    pf.Progress,
	}
	var err error
	if p.Target, p.HostPort, err = parseTarget(pf.Target); err != nil {
		return nil, err
	}
	if p.Path == "" {
		p.Path = defaultPath
	}
	if !strings.HasPrefix(p.Path, "/") || strings.ContainsAny(p.Path, " \r\n\t") {
		return nil, badPlan("plan: \"path\" must start with / and hold no spaces (e.g. %q), got %q", defaultPath, p.Path)
	}
	if err := validateMode(pf, p); err != nil {
		return nil, err
	}
	if err := validateSizes(pf, p); err != nil {
		return nil, err
	}
	if err := validateProfile(p.Profile); err != nil {
		return nil, err
	}
	if !runPattern.MatchString(p.Run) {
		return nil, badPlan("plan: \"run\" must be 1 to 32 letters, digits or _ (it starts every event id and '-' separates the id's parts), got %q", p.Run)
	}
	switch p.Progress {
	case "":
		p.Progress = progressText
	case progressText, progressJSON, progressNone:
	default:
		return nil, badPlan("plan: \"progress\" must be %q, %q or %q, got %q", progressText, progressJSON, progressNone, p.Progress)
	}
	if pf.Events == "" {
		return nil, badPlan("plan: \"events\" is missing: give a JSON Lines file of CloudEvents")
	}
	if pf.Keys == "" {
		return nil, badPlan("plan: \"keys\" is missing: give a file with one API key per line")
	}
	p.Events = resolvePath(baseDir, pf.Events)
	p.Keys = resolvePath(baseDir, pf.Keys)
	p.Acks = resolvePath(baseDir, pf.Acks)
	p.Series = resolvePath(baseDir, pf.Series)
	return p, nil
}

func resolvePath(baseDir, name string) string {
	if name == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(baseDir, name)
}

// parseTarget accepts exactly http://host:port (an optional trailing / is allowed).
func parseTarget(target string) (string, string, error) {
	const want = "\"target\" must be http://host:port, e.g. http://10.77.0.11:8080"
	if target == "" {
		return "", "", badPlan("plan: \"target\" is missing; it must be http://host:port, e.g. http://10.77.0.11:8080")
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", "", badPlan("plan: %s, got %q (%v)", want, target, err)
	}
	if u.Scheme != "http" {
		return "", "", badPlan("plan: %s (plain http only), got %q", want, target)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || (u.Path != "" && u.Path != "/") {
		return "", "", badPlan("plan: %s with nothing after the port (put the URL path in \"path\"), got %q", want, target)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", "", badPlan("plan: %s with an explicit port, got %q", want, target)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", badPlan("plan: %s with a port from 1 to 65535, got %q", want, target)
	}
	return target, u.Host, nil
}

func validateMode(pf *planFile, p *plan) error {
	switch p.Mode {
	case "":
		p.Mode = modeStructured
	case modeStructured, modeBinary:
	case modeBatch:
		p.BatchSize = defaultBatchSize
		if pf.BatchSize != nil {
			p.BatchSize = *pf.BatchSize
		}
		if p.BatchSize < 1 {
			return badPlan("plan: \"batch_size\" must be at least 1 event per request, got %d", p.BatchSize)
		}
	default:
		return badPlan("plan: \"mode\" must be %q, %q or %q, got %q", modeStructured, modeBinary, modeBatch, p.Mode)
	}
	return nil
}

func validateSizes(pf *planFile, p *plan) error {
	if pf.Connections != nil {
		p.Connections = *pf.Connections
	}
	if p.Connections < 1 || p.Connections > maxConnections {
		return badPlan("plan: \"connections\" must be from 1 to %d, got %d", maxConnections, p.Connections)
	}
	if pf.Queue != nil {
		p.Queue = *pf.Queue
	}
	if p.Queue < 0 || p.Queue > maxQueue {
		return badPlan("plan: \"queue\" must be from 0 to %d requests, got %d", maxQueue, p.Queue)
	}
	if pf.TimeoutSeconds != nil {
		t := *pf.TimeoutSeconds
		if !(t > 0) || t > maxTimeoutSeconds {
			return badPlan("plan: \"timeout_seconds\" must be > 0 and at most %d, got %v", maxTimeoutSeconds, t)
		}
		p.Timeout = time.Duration(t * float64(time.Second))
	}
	return nil
}

func validateProfile(profile []profilePart) error {
	if len(profile) == 0 {
		return badPlan("plan: \"profile\" is missing or empty; give phases like [{\"seconds\": 30, \"rate_start\": 1000, \"rate_end\": 1000}]")
	}
	for i, ph := range profile {
		if !(ph.Seconds > 0) {
			return badPlan("plan: \"profile[%d].seconds\" must be > 0, got %v", i, ph.Seconds)
		}
		if !(ph.RateStart > 0) {
			return badPlan("plan: \"profile[%d].rate_start\" must be > 0 events/s, got %v", i, ph.RateStart)
		}
		if !(ph.RateEnd > 0) {
			return badPlan("plan: \"profile[%d].rate_end\" must be > 0 events/s, got %v", i, ph.RateEnd)
		}
	}
	return nil
}
