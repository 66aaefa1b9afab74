// The handler the Go library's tests configure: written with the library, it does what each
// request's data.action says (echo by default), and decides API-key logins as an auth handler.
package main

import (
	"context"
	"log"
	"os"
	"time"

	"besterd.dev/bester/handler"
)

type action struct {
	Action  string   `json:"action"`
	Ms      int      `json:"ms"`
	To      []string `json:"to"`
	Forward string   `json:"forward"`
	Text    string   `json:"text"`
}

func handle(ctx context.Context, r *handler.Request) handler.Answer {
	if r.IsLogin() {
		var d struct {
			APIKey string `json:"apiKey"`
		}
		if r.Decode(&d) == nil && d.APIKey == "k-alice" {
			return handler.LoginOK("alice", map[string]string{"plan": "pro"})
		}
		return handler.Error("auth_failed", "invalid API key")
	}
	var a action
	_ = r.Decode(&a) // data that is not an object is echoed
	switch a.Action {
	case "sleep":
		select {
		case <-time.After(time.Duration(a.Ms) * time.Millisecond):
		case <-ctx.Done():
		}
		return handler.Reply(r.Data)
	case "hang":
		<-ctx.Done()
		return nil
	case "fail":
		return handler.Error("not_in_room", "alice is not in room \"r\"")
	case "panic":
		panic("asked to")
	case "send":
		return handler.SendClients(a.To, map[string]string{"text": a.Text, "from": r.From.User})
	case "servers":
		return handler.SendServers(a.To, a.Text)
	case "push":
		return handler.Answers(handler.Reply("pushed"), handler.PushClients(a.To, "news", a.Text, "p1"))
	case "forward":
		return handler.SendHandler(a.Forward, map[string]string{"text": a.Text})
	case "whoami":
		return handler.Reply(r.From)
	case "exit":
		os.Exit(3) // a crash with the request in flight
	case "big":
		return handler.Reply(make([]byte, 2<<20)) // over the frame limit once encoded
	}
	return handler.Reply(r.Data)
}

func main() {
	serve := handler.Serve
	if len(os.Args) > 1 && os.Args[1] == "listen" { // connect = "/path": besterd dials us
		serve = handler.Listen
	}
	if err := serve(handle); err != nil {
		log.Print(err)
		os.Exit(1)
	}
}
