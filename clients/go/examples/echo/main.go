// An echo handler: replies with the request's own type and data.
package main

import (
	"context"
	"log"

	"besterd.dev/bester/handler"
)

func main() {
	err := handler.Serve(func(ctx context.Context, r *handler.Request) handler.Answer {
		return handler.Reply(r.Data)
	})
	if err != nil {
		log.Fatal(err)
	}
}
