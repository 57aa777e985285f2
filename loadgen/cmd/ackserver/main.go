// Command ackserver is a stand-in target for measuring the driver: a raw-TCP HTTP/1.1
// server that reads each request and answers a fixed 202, spending as little CPU as
// it can so that the driver's own CPU use is what a measurement shows.
//
// Usage: ackserver [-addr 127.0.0.1:18080]
package main

import (
	"bufio"
	"bytes"
	"flag"
	"log"
	"net"
	"strconv"
)

const response = "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 33\r\n\r\n" +
	`{"status":"accepted","ids":["x"]}`

func main() {
	addr := flag.String("addr", "127.0.0.1:18080", "address to listen on")
	flag.Parse()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("ackserver listening on %s", ln.Addr())
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 64*1024)
	for {
		length, err := readHead(r)
		if err != nil {
			return
		}
		if _, err := r.Discard(length); err != nil {
			return
		}
		if _, err := conn.Write([]byte(response)); err != nil {
			return
		}
	}
}

// readHead reads a request's head and returns its Content-Length.
func readHead(r *bufio.Reader) (int, error) {
	length := 0
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return length, nil
		}
		if len(line) > 15 && bytes.EqualFold(line[:15], []byte("content-length:")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(line[15:])))
		}
	}
}
