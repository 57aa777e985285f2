// Command sluice-loadgen-driver offers a rate profile of CloudEvents to Sluice's
// ingest API as an open model: requests go out at their scheduled times whether or
// not earlier ones have been answered, and latency counts from the scheduled time.
//
// Usage: sluice-loadgen-driver --plan plan.json
//
// It prints one JSON summary on stdout and exits 0 when the run completed (HTTP errors
// included), 1 on a fatal error (the target unreachable at the start, the acks file
// unwritable) and 2 on a bad plan. README.md describes the plan and the outputs.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

const (
	exitOK      = 0
	exitFatal   = 1
	exitBadPlan = 2
)

func main() {
	// One P is plenty for the rates asked of the driver and costs about a quarter less
	// CPU per request than two: no handing goroutines between threads. GOMAXPROCS in
	// the environment still wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the run drains; a second one kills at once.
		<-ctx.Done()
		stop()
		fmt.Fprintln(os.Stderr, "sluice-loadgen-driver: interrupted: no new requests; waiting for those in flight (a second signal kills at once)")
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; cancelling ctx interrupts the run as a signal does.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("sluice-loadgen-driver", flag.ContinueOnError)
	flags.SetOutput(stderr)
	planPath := flags.String("plan", "", "the run's JSON plan (see README.md)")
	if err := flags.Parse(args); err != nil {
		return exitBadPlan
	}
	if *planPath == "" || flags.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: sluice-loadgen-driver --plan plan.json")
		return exitBadPlan
	}

	p, requests, err := prepare(*planPath)
	if err != nil {
		fmt.Fprintln(stderr, "sluice-loadgen-driver:", err)
		return exitBadPlan
	}
	outputs, err := openOutputs(p)
	if err != nil {
		fmt.Fprintln(stderr, "sluice-loadgen-driver:", err)
		return exitBadPlan
	}
	defer outputs.close()

	if err := probe(p); err != nil {
		fmt.Fprintln(stderr, "sluice-loadgen-driver:", err)
		return exitFatal
	}

	rec := newRecorder(outputs.acks)
	d := newDriver(p, requests, rec)
	conns := d.connect()

	startCPU := cpuTime()
	rp := newReporter(d, outputs.seriesWriter(), p.Progress, stderr, startCPU)
	stopReporting, reported := make(chan struct{}), make(chan struct{})
	d.run(ctx, conns, func() { go rp.loop(stopReporting, reported) })
	duration := time.Since(d.start)
	close(stopReporting)
	<-reported
	cpu := cpuTime() - startCPU

	encoded, _ := json.Marshal(d.summarize(duration, cpu))
	fmt.Fprintf(stdout, "%s\n", encoded)

	status := exitOK
	if rp.err != nil {
		fmt.Fprintf(stderr, "sluice-loadgen-driver: writing the series file %s: %v\n", p.Series, rp.err)
		status = exitFatal
	}
	if err := outputs.flushAcks(); err != nil {
		fmt.Fprintf(stderr, "sluice-loadgen-driver: writing the acks file %s: %v\n", p.Acks, err)
		status = exitFatal
	}
	return status
}

// prepare loads and checks everything the plan names.
func prepare(planPath string) (*plan, *requestSet, error) {
	p, err := loadPlan(planPath)
	if err != nil {
		return nil, nil, err
	}
	pool, err := loadEvents(p.Events)
	if err != nil {
		return nil, nil, err
	}
	keys, err := loadKeys(p.Keys)
	if err != nil {
		return nil, nil, err
	}
	return p, newRequestSet(p, pool, keys), nil
}

// outputs are the files the run appends to.
type outputs struct {
	acksFile   *os.File
	acks       *bufio.Writer
	seriesFile *os.File
}

func openOutputs(p *plan) (*outputs, error) {
	o := &outputs{}
	open := func(field, path string) (*os.File, error) {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, badPlan("plan: %q: cannot open %s for appending: %v", field, path, bareError(err))
		}
		return f, nil
	}
	var err error
	if p.Acks != "" {
		if o.acksFile, err = open("acks", p.Acks); err != nil {
			return nil, err
		}
		o.acks = bufio.NewWriterSize(o.acksFile, 256*1024)
	}
	if p.Series != "" {
		if o.seriesFile, err = open("series", p.Series); err != nil {
			o.close()
			return nil, err
		}
	}
	return o, nil
}

// seriesWriter is the series file as an io.Writer, nil (not a nil *os.File) without one.
func (o *outputs) seriesWriter() io.Writer {
	if o.seriesFile == nil {
		return nil
	}
	return o.seriesFile
}

func (o *outputs) flushAcks() error {
	if o.acks == nil {
		return nil
	}
	if err := o.acks.Flush(); err != nil {
		return err
	}
	return o.acksFile.Sync()
}

func (o *outputs) close() {
	if o.acksFile != nil {
		o.acksFile.Close()
	}
	if o.seriesFile != nil {
		o.seriesFile.Close()
	}
}

// probe opens one connection to the target, so that an unreachable target fails the
// run at once with a clear message instead of a run full of connection errors.
func probe(p *plan) error {
	timeout := p.Timeout
	if timeout > 5*time.Second {
		timeout = 5 * time.Second
	}
	conn, err := net.DialTimeout("tcp", p.HostPort, timeout)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Err != nil {
			err = opErr.Err
		}
		return fmt.Errorf("cannot reach the target %s: %v", p.Target, err)
	}
	return conn.Close()
}
