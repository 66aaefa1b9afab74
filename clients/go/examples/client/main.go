// A client: log in, send one echo request, print the reply.
// Usage: client bester://alice:secret@127.0.0.1:2222
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"besterd.dev/bester"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := bester.Dial(ctx, os.Args[1], bester.Auth{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	reply, err := c.Request(ctx, "echo", map[string]string{"hello": "world"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(reply.Data))
}
