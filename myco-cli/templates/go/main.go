// @NAME@: a small HTTP service made by `myco init go`.
//
// It answers GET / with a line of text and GET /healthz with "ok", on the port in the PORT
// environment variable (myco.json sets it). Only the standard library is used, so the flake's
// vendorHash is null.
package main

import (
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
)

const name = "@NAME@"

func main() {
	port := os.Getenv("PORT")
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		log.Fatalf("%s: PORT must be a port number (1 to 65535), got %q; set it in myco.json's env", name, port)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	// Bind first, then say so on stdout: whoever waits for the line can connect at once.
	listener, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatalf("%s: cannot listen on port %s: %v", name, port, err)
	}
	fmt.Printf("%s: listening on port %s\n", name, port)
	log.Fatal(http.Serve(listener, mux))
}
