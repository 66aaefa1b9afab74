package handler

// The fast lane against the full path: on the protocol vectors, on hand-made odd frames, on
// generated frames and (go test -fuzz FuzzScanRequest) on arbitrary bytes, scanRequest either
// declines or gives exactly the Request decodeFull gives, and the hand-written answer to it is
// byte for byte what encoding/json writes.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// check compares both paths on body; it reports whether the fast lane took it.
func check(t *testing.T, body []byte) bool {
	t.Helper()
	if !utf8.Valid(body) {
		return false // Serve refuses it before either path
	}
	fast, ok := scanRequest(body)
	full, v, err := decodeFull(body, func(string, ...any) {})
	if !ok {
		return false
	}
	if v != serveIt || err != nil {
		t.Fatalf("the fast lane read %q, which the full path does not serve (%v, %v)", body, v, err)
	}
	compact := fast.compact
	if compact {
		var b bytes.Buffer
		if json.Compact(&b, fast.Data) != nil || !bytes.Equal(b.Bytes(), fast.Data) {
			t.Fatalf("%q: data %q is not compact", body, fast.Data)
		}
	}
	fast.compact = false
	if !reflect.DeepEqual(fast, full) {
		t.Fatalf("%q:\nfast %#v\nfull %#v", body, fast, full)
	}
	fast.compact = compact // as Serve has it; the answers must still be the same bytes
	answers := []Answer{
		Reply(fast.Data), ReplyType("other", fast.Data), Reply(map[string]any{"x": "<&>", "y": []int{1}}),
		Error("not_in_room", "no\u2028 \"room\""), SendClients([]string{"bob", "ca\"rol"}, fast.Data),
		SendServers(nil, 1), SendHandler("next", json.RawMessage(" [1, 2] ")), LoginOK("alice", nil),
		PushClients([]string{"bob"}, "news", fast.From, "p1"), PushServers(nil, "t\x01", nil, ""),
		Answers(Reply(fast.Data), nil, PushClients(nil, "x", json.RawMessage{}, "")), Reply(make(chan int)),
		Reply(json.RawMessage(`{"bad"`)), Answers(),
	}
	for _, a := range answers {
		got, gerr := encodeAnswer(a, fast)
		want, werr := encodeAll(a.frames(full))
		if !bytes.Equal(got, want) || fmt.Sprint(gerr) != fmt.Sprint(werr) {
			t.Fatalf("%q: answer %#v:\nfast %q %v\nfull %q %v", body, a, got, gerr, want, werr)
		}
	}
	return true
}

func vectorFrames(t testing.TB) [][]byte {
	var out [][]byte
	dir := filepath.Join("..", "..", "..", "protocol", "vectors")
	var hv struct {
		Cases []struct{ Requests []json.RawMessage }
	}
	text, err := os.ReadFile(filepath.Join(dir, "handlers.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(text, &hv); err != nil {
		t.Fatal(err)
	}
	for _, c := range hv.Cases {
		for _, r := range c.Requests {
			out = append(out, []byte(r))
		}
	}
	var av struct{ Request string }
	text, _ = os.ReadFile(filepath.Join(dir, "auth_handler.json"))
	json.Unmarshal(text, &av)
	out = append(out, []byte(av.Request))
	var mv struct{ Cases []struct{ JSON string } }
	text, _ = os.ReadFile(filepath.Join(dir, "messages.json"))
	json.Unmarshal(text, &mv)
	for _, c := range mv.Cases {
		out = append(out, []byte(c.JSON))
	}
	return out
}

const base = `{"header":{"kind":"request","request":"17","scope":"client","from":{"user":"alice","server":"node-a"}},"payload":{"type":"echo","data":{"hello":"world"}}}`

// odd frames: each either read the same by both paths or declined.
var odd = []string{
	base,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":null}}`,
	`{"header":{"kind":"login","request":"7","from":{"address":"192.0.2.10:1","listener":"main","transport":"tcp"}},"payload":{"type":"bester.login","data":{"apiKey":"k"}}}`,
	` { "header" : { "kind" : "request" , "request" : "2" , "via" : [ ] } , "payload" : { "data" : [ 1 , { "a" : "b" } ] , "type" : "t" } } `,
	`{"header":{"kind":"request","request":"2","via":["a","b"],"from":{"info":{"plan":"pro"},"user":"u"}},"payload":{"type":"t","data":-0.5e+10}}`,
	`{"header":{"kind":"request","request":"2","from":{"info":null}},"payload":{"type":"t","data":1}}`,
	`{"header":{"kind":"request","request":null},"payload":{"type":"t","data":1}}`,
	`{"header":{"kind":"report","status":"ok","id":"p1"}}`,
	`{"header":{"kind":"request","request":"1","Kind":"report"},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1","kind":"login"},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t"},"payload":{"data":2}}`,
	`{"header":{"kind":"request","request":"1"},"PAYLOAD":{"type":"t","data":3}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":3,"ſype":"u"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":3,"Ωmega":"u"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":"\u00e9\n\"\\\/"}}`,
	`{"header":{"kind":"request","request":"a\"b"},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"x\u2028y"},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1","future":{"x":[1,2,{"y":null}]}},"payload":{"type":"t"},"extra":true}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":01}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":1.}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":[1,]}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":"\x"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":"\u12"}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":tru}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":1}}x`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":1}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":5}}`,
	`{"header":{"kind":"request","request":"1","scope":"server","from":{"server":"b","handler":"chat"}},"payload":{"type":"t","data":{"a":1,"a":2}}}`,
	`{"header":{"kind":"request","request":"1","via":null},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1","from":{"user":"a","user":"b"}},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":"1","from":{"User":"a"}},"payload":{"type":"t"}}`,
	`{"header":{"kind":"request","request":""},"payload":{"type":""}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":{"deep":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":{"a":"\t"}}}`,
	`{"header":{"kind":"request","request":"1"},"payload":{"type":"t","data":{"a":"` + "\t" + `"}}}`,
	`[]`, `null`, `{}`, ``, `"x"`, `{"header":null}`, `{"header":{"kind":"request","request":"1"},"payload":null}`,
}

func TestScanMatchesEncodingJSONOnTheVectorsAndOddFrames(t *testing.T) {
	took := 0
	for _, b := range vectorFrames(t) {
		if check(t, b) {
			took++
		}
	}
	for _, s := range odd {
		check(t, []byte(s))
	}
	if took < 10 || !check(t, []byte(base)) || !check(t, []byte(odd[4])) {
		t.Fatalf("the fast lane took only %d vector frames", took)
	}
}

// gen writes a random frame near the envelope's shape: keys in any order, repeated or in other
// letter case now and then, random values and whitespace, now and then a broken byte.
type gen struct{ r *rand.Rand }

func (g gen) ws() string { return []string{"", "", "", " ", "\n ", "\t"}[g.r.Intn(6)] }

func (g gen) str() string {
	parts := []string{"a", "é", "17", "", `\"`, `\n`, `\u00e9`, "\u2028", "x y", `\/`, "ß"}
	var b strings.Builder
	b.WriteByte('"')
	for i := g.r.Intn(3); i > 0; i-- {
		b.WriteString(parts[g.r.Intn(len(parts))])
	}
	b.WriteByte('"')
	return b.String()
}

func (g gen) value(depth int) string {
	switch n := g.r.Intn(10); {
	case n < 3 || depth > 3:
		return []string{"null", "true", "false", "0", "-1.5", "1e3", "12", g.str(), g.str()}[g.r.Intn(9)]
	case n < 6:
		var parts []string
		for i := g.r.Intn(4); i > 0; i-- {
			parts = append(parts, g.ws()+g.value(depth+1)+g.ws())
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		var parts []string
		for i := g.r.Intn(4); i > 0; i-- {
			parts = append(parts, g.ws()+g.str()+g.ws()+":"+g.ws()+g.value(depth+1))
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
}

func (g gen) key(k string) string {
	switch g.r.Intn(30) {
	case 0:
		return `"` + strings.ToUpper(k) + `"`
	case 1:
		return `"` + k + `x"`
	}
	return `"` + k + `"`
}

func (g gen) object(fields map[string]func() string) string {
	var parts []string
	for k, v := range fields {
		if g.r.Intn(30) == 0 {
			continue
		}
		parts = append(parts, g.ws()+g.key(k)+g.ws()+":"+g.ws()+v()+g.ws())
		if g.r.Intn(25) == 0 {
			parts = append(parts, g.key(k)+":"+v())
		}
	}
	if g.r.Intn(10) == 0 {
		parts = append(parts, g.str()+":"+g.value(0))
	}
	g.r.Shuffle(len(parts), func(i, j int) { parts[i], parts[j] = parts[j], parts[i] })
	return "{" + strings.Join(parts, ",") + "}"
}

func (g gen) frame() string {
	plainOr := func(s string) func() string {
		return func() string {
			if g.r.Intn(25) == 0 {
				return g.value(0)
			}
			return s
		}
	}
	f := g.object(map[string]func() string{
		"header": func() string {
			return g.object(map[string]func() string{
				"kind": plainOr([]string{`"request"`, `"request"`, `"login"`, `"report"`, `"x"`}[g.r.Intn(5)]), "request": plainOr([]string{`"17"`, `"a-1"`, `"é"`, g.str()}[g.r.Intn(4)]),
				"scope": plainOr(`"client"`), "via": plainOr(`["a",` + g.str() + `]`),
				"from": func() string {
					return g.object(map[string]func() string{"user": plainOr(`"alice"`), "server": plainOr(`"s"`),
						"info": func() string { return g.value(0) }, "handler": plainOr(`"h"`)})
				},
			})
		},
		"payload": func() string {
			return g.object(map[string]func() string{"type": plainOr(`"echo"`), "data": func() string { return g.value(0) }})
		},
		"data": func() string { return g.value(0) },
	})
	if g.r.Intn(10) == 0 {
		i := g.r.Intn(len(f))
		const breakers = "{}[],:\"\\ 0ex"
		f = f[:i] + string(breakers[g.r.Intn(len(breakers))]) + f[i+1:]
	}
	return f
}

func TestScanMatchesEncodingJSONOnGeneratedFrames(t *testing.T) {
	g := gen{rand.New(rand.NewSource(17))}
	took := 0
	for i := 0; i < 20000; i++ {
		if check(t, []byte(g.frame())) {
			took++
		}
	}
	if took < 1000 {
		t.Fatalf("the fast lane took only %d of 20000 generated frames (want 1000)", took)
	}
}

func FuzzScanRequest(f *testing.F) {
	for _, b := range vectorFrames(f) {
		f.Add(b)
	}
	for _, s := range odd {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { check(t, body) })
}

var benchBody = []byte(`{"header":{"kind":"request","request":"123456","scope":"client","from":{"user":"bench","server":"bench"}},"payload":{"type":"bench","data":{"n":12345,"pad":"` + strings.Repeat("x", 80) + `"}}}`)

// go test -run - -bench Lane ./handler: a request read and its echo written, by the fast lane
// and by encoding/json.
func BenchmarkLaneFast(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r, ok := scanRequest(benchBody)
		if !ok {
			b.Fatal("declined")
		}
		if _, err := encodeAnswer(Reply(r.Data), r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLaneFull(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r, _, _ := decodeFull(benchBody, nil)
		if _, err := encodeAll(Reply(r.Data).frames(r)); err != nil {
			b.Fatal(err)
		}
	}
}
